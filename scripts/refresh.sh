#!/usr/bin/env bash
# A refresh round: make imagination right where RL goes, then measure it (reports/learning-signal.md,
# "A refresh on the policies' own rollouts after RL"). Resumable: each stage leaves its output and is
# skipped when run again. About 2 h 10 min on 2 cores (RL 40 min, the real episodes 30, training 40).
#
# 1. RL from the shipped SFT policy in the shipped models (32 groups x 8, 16 iterations, b = 0.02),
#    the run that moved task 1 up in imagination and down in LIBERO;
# 2. the real rollouts of both policies, sampled as RL explores (every simulator step recorded in
#    their HDF5 files), on sampled init states no other stage uses;
# 3. alignment of both policies on held-out sampled init states (8000 and up) in the shipped models;
# 4. the world model's frames, then its proprio dynamics, then the reflector fine-tuned on those
#    rollouts (the refreshed models);
# 5. alignment again on the same real episodes (no new simulator step): in the refreshed pair, and
#    with one part refreshed at a time (frames; frames and dynamics; reflector), to say which part
#    moved what, and with the frames trained 4x longer (and their own reflector).
# RL again in the refreshed models is left out: the refresh did not raise the alignment.
# Stages that need no RL policy can run beside the first: STAGE=own_sft bash scripts/refresh.sh.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl}
HOME_DIR=${WORLDENV_HOME:-$HOME/.worldenv}
R=${1:-$HOME_DIR/runs/refresh}
W=$PWD/.venv/bin/worldenv
SHIPPED=$PWD/worldenv/checkpoints
ITERS=${ITERS:-16}
PER_TASK=${PER_TASK:-30}
RL_FLAGS=(--groups 32 --group-size 8 --minibatch 256 --exploration-scale 0.02 --lr 2e-5 --ratio dimension
          --snapshot-every 8)
mkdir -p "$R"
stage() { echo "=== $(date +%T) $1"; }

rl() {   # NAME SEED WORLD_MODEL REFLECTOR [train rl flags...]: a stack on these models, one RL run
  local name=$1 seed=$2 wm=$3 refl=$4; shift 4
  local out=$R/rl_$name
  [ -f $out/done ] && return
  stage rl_$name
  local home=$R/home_$name
  rm -rf $home; mkdir -p $home
  WORLDENV_HOME=$home $W up --free-ports --world-model-autocast none --home $home --world-model-checkpoint $wm --reflector-checkpoint $refl \
      > $home/up.out 2>&1 &
  local up=$!
  for _ in $(seq 150); do grep -q debug-api $home/up.json 2> /dev/null && break; sleep 2; done
  WORLDENV_HOME=$home $W train rl --starts shipped --seed $seed --out $out --iterations $ITERS "${RL_FLAGS[@]}" "$@" \
      && touch $out/done
  kill -INT $up; wait $up
}

own() {   # NAME POLICY OFFSET: the policy's real rollouts, sampled at b = 0.02
  [ -f $R/own_$1/done ] && return
  stage own_$1
  $W explore --tasks 0,1,2 --policy $2 --noise laplace --exploration-scale 0.02 --episodes-per-task $PER_TASK \
      --init-offset $3 --env-processes 1 --out $R/own_$1 && touch $R/own_$1/done
}

align() {   # NAME POLICY WORLD_MODEL REFLECTOR [REAL_FROM]: alignment on tasks 0-2, 20 held-out episodes each
  local out=$R/align_$1
  [ -f $out/alignment.json ] && return
  stage align_$1
  mkdir -p $out
  [ -n "${5:-}" ] && [ ! -d $out/real ] && cp -r $R/align_$5/real $out/
  $W align --policy $2 --world-model $3 --reflector $4 --tasks 0,1,2 --episodes-per-task 20 --env-processes 1 \
      --out $out
}

case "${STAGE:-all}" in
  own_sft) own sft shipped 3000; exit ;;
esac

rl before 0 $SHIPPED/world_model $SHIPPED/reflector
own sft shipped 3000
own rl $R/rl_before/policy 6000      # 6000+: also the pipeline's held-out range; no refreshed model is measured there
DATA=$R/own_sft,$R/own_rl
align rl_shipped $R/rl_before/policy shipped shipped
align sft_shipped shipped shipped shipped

[ -f $R/wm_frames/model/config.json ] || { stage wm_frames; $W train world-model --init $SHIPPED/world_model \
    --data $DATA --out $R/wm_frames --steps 600 --lr 1e-4 --warmup 0 --eval-every 100; }
[ -f $R/wm_dyn/model/config.json ] || { stage wm_dyn; $W train world-model --init $R/wm_frames/model \
    --proprio-dynamics --data $DATA --out $R/wm_dyn --steps 8000 --eval-every 1000 --lr 1e-3 --batch-size 64 \
    --warmup 50; }
[ -f $R/refl/model/config.json ] || { stage refl; $W train reflector --init $SHIPPED/reflector --data $DATA \
    --replays $R/wm_dyn/model --out $R/refl --steps 400 --lr 1e-4 --warmup 0 --eval-every 100; }
WM=$R/wm_dyn/model REFL=$R/refl/model
[ -f $R/wm_frames4x/model/config.json ] || { stage wm_frames4x; $W train world-model --init $SHIPPED/world_model \
    --data $DATA --out $R/wm_frames4x --steps 2400 --lr 1e-4 --warmup 0 --eval-every 300 --patience 0; }
[ -f $R/refl4x/model/config.json ] || { stage refl4x; $W train reflector --init $SHIPPED/reflector --data $DATA \
    --replays $R/wm_frames4x/model --out $R/refl4x --steps 400 --lr 1e-4 --warmup 0 --eval-every 100; }
for p in sft:shipped rl:$R/rl_before/policy; do
  IFS=: read -r name policy <<< "$p"
  align ${name}_refreshed $policy $WM $REFL ${name}_shipped
  align ${name}_frames $policy $R/wm_frames/model shipped ${name}_shipped
  align ${name}_wmdyn $policy $WM shipped ${name}_shipped
  align ${name}_refl $policy shipped $REFL ${name}_shipped
  align ${name}_frames4x $policy $R/wm_frames4x/model $R/refl4x/model ${name}_shipped
done
stage done
