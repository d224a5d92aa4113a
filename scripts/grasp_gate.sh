#!/usr/bin/env bash
# The grasp gate, measured (reports/learning-signal.md, "A reward that reads the imagined gripper
# too"). Resumable: each stage leaves its output and is skipped when run again; one stage per
# call with a name, all in order without. About 3 h on 2 cores in order; here, with the two RL
# runs side by side and the evaluations in parallel, about 1 h 50 min.
#
# 1. calib: the SFT policy's real rollouts, sampled as RL explores (b = 0.02), on sampled init
#    states 9000+ that nothing else uses; their replays in the shipped world model choose the gate's
#    width (`grasp_gate.calibrate`: whether each closed gripper run held something in LIBERO,
#    predicted from the imagined gap; no outcome read) -> calib/width; then the same episodes judged
#    with the gate (calib_gate: the sampled closed loop, as RL explores);
# 2. align_sft, align_rl: alignment of the shipped SFT and RL policies on held-out sampled init
#    states 8000+ (20 per task), without the gate and with it (the same real episodes);
# 3. rl_gate, rl_gate_shuffled: RL from the SFT policy in the shipped models with the gate, and
#    its shuffled-rewards control (the settings of the ungated run that lost task 1 in LIBERO);
#    run the two side by side: `bash scripts/grasp_gate.sh rl_gate & bash scripts/grasp_gate.sh rl_gate_shuffled`;
#    SEED=k runs the pair (and evaluates it) at training seed k, named rl_gate_sk and rl_gate_shuffled_sk;
#    CONFIRM=K rewards a done verdict only after K chunks in a row (`train rl --confirm`), named
#    rl_gate_cK[_sk] and rl_gate_shuffled_cK[_sk]; `compare` then compares those runs only;
#    likewise SCALE=b (`--exploration-scale`, suffix _b<b>), REWARD=done (`--reward`, _done) and
#    NGROUPS=G (`--groups`, _g<G>) and NOISE=chunk (the policy explores one offset per chunk: a copy
#    of the shipped checkpoint with that noise, served and trained; _chunk), chosen with `worldenv signal` (reports/learning-signal.md);
# 4. eval_*: SFT and both runs in LIBERO, the experiment's 150 paired episodes;
# 5. align_rlgate: the gated RL policy's own alignment, without and with the gate; objective: RL's
#    own objective (288 starts, gated) of SFT and both runs;
# 6. compare: every evaluated seed's RL and control against SFT, and RL's seeds against the controls'
#    (`worldenv compare`) -> compare_sft.md, compare_controls.md.
set -uo pipefail
cd "${ROOT:-$(dirname "${BASH_SOURCE[0]}")/..}"
export MUJOCO_GL=${MUJOCO_GL:-egl}
HOME_DIR=${WORLDENV_HOME:-$HOME/.worldenv}
R=${R:-$HOME_DIR/runs/grasp_gate}
W=$PWD/.venv/bin/worldenv
PY=$PWD/.venv/bin/python
SHIPPED=$PWD/worldenv/checkpoints
ITERS=${ITERS:-16}
SEED=${SEED:-0}
CONFIRM=${CONFIRM:-1}
SCALE=${SCALE:-0.02}
REWARD=${REWARD:-p_done}
NGROUPS=${NGROUPS:-32}
NOISE=${NOISE:-independent}
# settings other than the first runs' name their runs (confirm 1, b = 0.02, p(done), 32 groups keep the first names)
CSFX=$([ "$CONFIRM" = 1 ] || echo _c$CONFIRM)$([ "$SCALE" = 0.02 ] || echo _b$SCALE)$([ "$REWARD" = p_done ] || echo _$REWARD)$([ "$NGROUPS" = 32 ] || echo _g$NGROUPS)$([ "$NOISE" = independent ] || echo _$NOISE)
SFX=$CSFX$([ "$SEED" = 0 ] || echo _s$SEED)   # seed 0 keeps the first run's names
RL_FLAGS=(--groups $NGROUPS --group-size 8 --minibatch 256 --exploration-scale $SCALE --lr 2e-5 --ratio dimension
          --reward $REWARD --snapshot-every 8)
mkdir -p "$R"
stage() { echo "=== $(date +%T) $1"; }
# WIDTH=<metres> takes a width calibrated before (0.0175 in the report) instead of the calib stage
width() { if [ -n "${WIDTH:-}" ]; then echo $WIDTH; else cat $R/calib/width; fi; }
calibrated() { [ -n "${WIDTH:-}" ] || calib; }

calib() {
  [ -f $R/calib/width ] && return
  stage calib
  $W align --tasks 0,1,2 --episodes-per-task 20 --init-offset 9000 --noise laplace --exploration-scale 0.02 \
      --env-processes 1 --out $R/calib || return 1
  $PY -c "import json, sys; print(json.load(open(sys.argv[1]))['grasp']['width'])" $R/calib/alignment.json \
      > $R/calib/width.tmp && mv $R/calib/width.tmp $R/calib/width
}

calib_gate() {   # the calibration episodes judged with the gate (sampled actions, as RL explores)
  [ -f $R/calib_gate/alignment.json ] && return
  stage calib_gate
  mkdir -p $R/calib_gate && cp -r $R/calib/real $R/calib_gate/
  $W align --tasks 0,1,2 --episodes-per-task 20 --init-offset 9000 --noise laplace --exploration-scale 0.02 \
      --grasp-gate $(width) --out $R/calib_gate
}

align() {   # NAME POLICY: alignment without and with the gate, on the same real episodes
  [ -f $R/align_$1_gate/alignment.json ] && return
  stage align_$1
  $W align --policy $2 --tasks 0,1,2 --episodes-per-task 20 --env-processes 1 --out $R/align_$1 || return 1
  mkdir -p $R/align_$1_gate && cp -r $R/align_$1/real $R/align_$1_gate/
  $W align --policy $2 --tasks 0,1,2 --episodes-per-task 20 --grasp-gate $(width) --out $R/align_$1_gate
}

start_policy() {   # the checkpoint RL starts from: the shipped SFT policy, with NOISE's exploration
  [ "$NOISE" = independent ] && { echo $SHIPPED/policy; return; }
  local dir=$R/policy_$NOISE
  [ -f $dir/config.json ] || { rm -rf $dir && cp -r $SHIPPED/policy $dir &&
    $PY -c "import json, sys; p = sys.argv[1] + '/config.json'; c = json.load(open(p)); c['noise'] = sys.argv[2]; json.dump(c, open(p, 'w'), indent=2)" $dir $NOISE; }
  echo $dir
}

rl() {   # NAME [train rl flags...]: a stack on the shipped models, one gated RL run
  local name=$1; shift
  local out=$R/$name
  [ -f $out/done ] && return
  stage $name
  local policy=$(start_policy)
  local home=$R/home_$name
  rm -rf $home; mkdir -p $home
  # float32 world model, as every run of the report was made (up's default is now bfloat16 autocast where native)
  WORLDENV_HOME=$home $W up --free-ports --home $home --world-model-checkpoint $SHIPPED/world_model \
      --reflector-checkpoint $SHIPPED/reflector --policy-checkpoint $policy --world-model-autocast none > $home/up.out 2>&1 &
  local up=$!
  for _ in $(seq 150); do grep -q debug-api $home/up.json 2> /dev/null && break; sleep 2; done
  WORLDENV_HOME=$home $W train rl --policy $policy --starts shipped --seed $SEED --out $out --iterations $ITERS "${RL_FLAGS[@]}" \
      --grasp-gate $(width) --confirm $CONFIRM "$@" && touch $out/done
  kill -INT $up; wait $up
}

evaluate() {   # NAME POLICY: LIBERO's fixed init states 0-49 of tasks 0-2, the policy's mean
  [ -f $R/eval_$1/done ] && return
  stage eval_$1
  $W eval --policy $2 --suite libero_object --tasks 0,1,2 --episodes-per-task 50 --init-offset 0 --seed 0 \
      --env-processes 1 --out $R/eval_$1 && touch $R/eval_$1/done
}

compare() {   # every evaluated seed: RL and its control against SFT, and RL's seeds against the controls'
  local rl=() ctl=()
  for d in $R/eval_rl_gate$CSFX $R/eval_rl_gate${CSFX}_s[0-9]*; do [ -f $d/done ] && rl+=($d); done
  for d in $R/eval_rl_gate_shuffled$CSFX $R/eval_rl_gate_shuffled${CSFX}_s[0-9]*; do [ -f $d/done ] && ctl+=($d); done
  [ ${#rl[@]} -gt 0 ] && [ ${#ctl[@]} -gt 0 ] || { echo "compare: no evaluated pair yet"; return 1; }
  stage compare
  local all=$(IFS=,; echo "${rl[*]},${ctl[*]}") rls=$(IFS=,; echo "${rl[*]}") ctls=$(IFS=,; echo "${ctl[*]}")
  $W compare $R/eval_sft "$all" --out $R/compare_sft$CSFX.json > $R/compare_sft$CSFX.md &&
  $W compare "$ctls" "$rls" --out $R/compare_controls$CSFX.json > $R/compare_controls$CSFX.md &&
    cat $R/compare_sft$CSFX.md $R/compare_controls$CSFX.md
}

run() {
  case $1 in
    calib) calib ;;
    calib_gate) calib && calib_gate ;;
    align_sft) calib && align sft shipped ;;
    align_rl) calib && align rl shipped-rl ;;
    rl_gate) calibrated && rl rl_gate$SFX ;;
    rl_gate_shuffled) calibrated && rl rl_gate_shuffled$SFX --shuffle-rewards ;;
    eval_sft) evaluate sft shipped ;;
    eval_rl_gate) evaluate rl_gate$SFX $R/rl_gate$SFX/policy ;;
    eval_rl_gate_shuffled) evaluate rl_gate_shuffled$SFX $R/rl_gate_shuffled$SFX/policy ;;
    align_rlgate) calib && align rlgate $R/rl_gate/policy ;;
    objective) [ -f $R/objective_gate.json ] || { stage objective; calib && $W objective --policies \
        shipped,$R/rl_gate/policy,$R/rl_gate_shuffled/policy --per-task 96 --samples 1 --exploration-scales 0.02 \
        --grasp-gate $(width) --out $R/objective_gate.json; } ;;
    compare) compare ;;
    *) echo "unknown stage $1"; return 1 ;;
  esac
}

if [ $# -gt 0 ]; then run $1; exit; fi
for s in calib calib_gate align_sft align_rl rl_gate rl_gate_shuffled eval_sft eval_rl_gate eval_rl_gate_shuffled align_rlgate objective; do
  run $s || exit 1
done
