#!/usr/bin/env bash
# The learning signal on the SFT policy's own real rollouts (issue 25, items 3, 4, 6 and 7),
# measured link by link: imagined-vs-real alignment before and after fine-tuning the world model
# and the reflector on those rollouts, then plain LOOP vs starts where the outcome is open vs a
# learned value at a 4-chunk cut, at the same iterations x groups. Resumable: a stage whose output
# exists is skipped. About 7 hours on 2 cores (section 9, the start replay, about 1.5). Results: reports/learning-signal.md.
#
# Usage: bash scripts/learning-signal.sh [RUN_DIR]   (default: $WORLDENV_HOME/runs/learning-signal)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl}
HOME_DIR=${WORLDENV_HOME:-$HOME/.worldenv}
R=${1:-$HOME_DIR/runs/learning-signal}
W=$PWD/.venv/bin/worldenv
SHIPPED=$PWD/worldenv/checkpoints
ITERS=${ITERS:-8}
mkdir -p "$R"
stage() { echo "=== $(date +%T) $1"; }

# 1. The policy's own real rollouts, sampled as RL explores (b = 0.02), at init states no other stage uses.
[ -f $R/own/done ] || { stage own; $W explore --tasks 0,1,2 --policy shipped --noise laplace --exploration-scale 0.02 \
    --episodes-per-task 20 --init-offset 3000 --out $R/own && touch $R/own/done; }
[ -f $R/own2/done ] || { stage own2; $W explore --tasks 0,1,2 --policy shipped --noise laplace --exploration-scale 0.02 \
    --episodes-per-task 40 --init-offset 3020 --out $R/own2 && touch $R/own2/done; }
DATA=$R/own,$R/own2
# The world model as it was before its proprio dynamics (the shipped one without it: the same frames).
[ -f $R/integrated/config.json ] || { stage integrated; $PWD/.venv/bin/python -c "
from worldenv import models
m = models.load('$SHIPPED/world_model', role='world_model')
m.drop_proprio_dynamics()
m.save_pretrained('$R/integrated')"; }
BEFORE=$R/integrated
# 2. Alignment before: the shipped models, the policy's mean, 20 episodes per task at init states 8000..
[ -f $R/align_before/alignment.json ] || { stage align_before; $W align --episodes-per-task 20 --world-model $BEFORE --out $R/align_before; }
# 3. World model and reflector fine-tuned on the own rollouts (the reflector also on the new world model's replays).
[ -f $R/wm_ft/model/config.json ] || { stage wm_ft; $W train world-model --init $BEFORE --data $DATA \
    --out $R/wm_ft --steps 600 --lr 1e-4 --warmup 0 --eval-every 100; }
[ -f $R/refl_ft/model/config.json ] || { stage refl_ft; $W train reflector --init $SHIPPED/reflector --data $DATA \
    --replays $R/wm_ft/model --out $R/refl_ft --steps 400 --lr 1e-4 --warmup 0 --eval-every 100; }
# 3b. The shipped world model with a proprio reader (only the reader trains: the frames stay as they were).
[ -f $R/reader/model/config.json ] || { stage reader; $W train world-model --init $BEFORE --add-proprio-reader \
    --reader-only --data $DATA --out $R/reader --steps 800 --lr 1e-3 --warmup 50 --eval-every 200; }
# 3c. The shipped world model with a learned proprio dynamics (only it trains, unrolled 8 chunks on its own predictions).
[ -f $R/dyn/model/config.json ] || { stage dyn; $W train world-model --init $BEFORE --proprio-dynamics \
    --data $DATA --out $R/dyn --steps 2000 --eval-every 250 --lr 1e-3 --batch-size 64 --warmup 50; }
# 4. Alignment after, on the same real episodes: each change alone, then both; then the reader; then the dynamics.
for v in wm:$R/wm_ft/model:shipped refl:shipped:$R/refl_ft/model both:$R/wm_ft/model:$R/refl_ft/model \
         reader:$R/reader/model:shipped dyn:$R/dyn/model:shipped; do
  IFS=: read -r name wm refl <<< "$v"
  out=$R/align_$name
  [ -f $out/alignment.json ] && continue
  stage align_$name; mkdir -p $out; cp -r $R/align_before/real $out/
  $W align --episodes-per-task 20 --world-model $wm --reflector $refl --out $out
done
# 5. A value P(success | video so far) and starts where the outcome is open.
[ -f $R/value/model/config.json ] || { stage value; $W train reflector --target outcome --init $SHIPPED/reflector \
    --data $DATA --replays $R/wm_ft/model --out $R/value --steps 400 --lr 1e-4 --warmup 0 --eval-every 100; }
[ -f $R/open.npz ] || { stage keyframes; $W starts keyframes --data $DATA --before-success 3 --out $R/open.npz; }
# 6. RL: plain LOOP (shipped starts) vs open starts vs open starts + value at a 4-chunk cut, on the
#    shipped models (step 4: no fine-tuned pair moved the closed loop; set WM / REFL to change), same
#    iterations x 8 groups x 8.
WM=${WM:-$BEFORE} REFL=${REFL:-$SHIPPED/reflector}
for v in plain:shipped:: open:$R/open.npz:: value:$R/open.npz:$R/value/model:4; do
  IFS=: read -r name starts val hz <<< "$v"
  out=$R/rl_$name
  [ -f $out/done ] && continue
  stage rl_$name
  export WORLDENV_HOME=$R/home_$name; rm -rf $WORLDENV_HOME; mkdir -p $WORLDENV_HOME
  $W up --free-ports --world-model-autocast none --world-model-checkpoint $WM --reflector-checkpoint $REFL > $WORLDENV_HOME/up.out 2>&1 &
  UP=$!
  for _ in $(seq 150); do grep -q debug-api $WORLDENV_HOME/up.json 2> /dev/null && break; sleep 2; done
  extra=()
  [ -n "$val" ] && extra=(--value $val --horizon $hz)
  $W train rl --starts $starts --out $out --iterations $ITERS --groups 8 --group-size 8 "${extra[@]}" && touch $out/done
  kill -INT $UP; wait $UP
done
# 7. The value variant at 60 iterations (about the imagined steps of 10 plain ones), then one real
#    evaluation of it and of the SFT policy on LIBERO's fixed init states 0-49 (paired).
if [ ! -f $R/rl_value60/done ]; then
  stage rl_value60
  export WORLDENV_HOME=$R/home_value60; rm -rf $WORLDENV_HOME; mkdir -p $WORLDENV_HOME
  $W up --free-ports --world-model-autocast none --world-model-checkpoint $WM --reflector-checkpoint $REFL > $WORLDENV_HOME/up.out 2>&1 &
  UP=$!
  for _ in $(seq 150); do grep -q debug-api $WORLDENV_HOME/up.json 2> /dev/null && break; sleep 2; done
  $W train rl --starts $R/open.npz --value $R/value/model --horizon 4 --out $R/rl_value60 --iterations 60 \
      --groups 8 --group-size 8 && touch $R/rl_value60/done
  kill -INT $UP; wait $UP
fi
[ -f $R/eval_value60/eval.json ] || { stage eval_value60; $W eval --policy $R/rl_value60/policy --suite libero_object --tasks 0,1,2 --out $R/eval_value60; }
[ -f $R/eval_sft/eval.json ] || { stage eval_sft; $W eval --policy shipped --suite libero_object --tasks 0,1,2 --out $R/eval_sft; }
# 8. The same RL in the world model with its proprio dynamics: plain LOOP with the experiment's
#    settings (30 iterations, seeds 0, 1 and 2), and the value variant at a 10-chunk cut (the action
#    gap stays <= 0.18 through 11 chunks), each evaluated once after its run.
[ -f $R/value_dyn/model/config.json ] || { stage value_dyn; $W train reflector --target outcome --init $SHIPPED/reflector \
    --data $DATA --replays $R/dyn/model --out $R/value_dyn --steps 400 --lr 1e-4 --warmup 0 --eval-every 100; }
for v in dyn_plain:30:0:: dyn_plain_s1:30:1:: dyn_plain_s2:30:2:: dyn_value10:60:0:$R/value_dyn/model:10; do
  IFS=: read -r name iters seed val hz <<< "$v"
  out=$R/rl_$name
  if [ ! -f $out/done ]; then
    stage rl_$name
    export WORLDENV_HOME=$R/home_$name; rm -rf $WORLDENV_HOME; mkdir -p $WORLDENV_HOME
    $W up --free-ports --world-model-autocast none --world-model-checkpoint $R/dyn/model --reflector-checkpoint $SHIPPED/reflector > $WORLDENV_HOME/up.out 2>&1 &
    UP=$!
    for _ in $(seq 150); do grep -q debug-api $WORLDENV_HOME/up.json 2> /dev/null && break; sleep 2; done
    extra=(--starts shipped)
    [ -n "$val" ] && extra=(--starts $R/open.npz --value $val --horizon $hz)
    $W train rl "${extra[@]}" --seed $seed --out $out --iterations $iters --groups 8 --group-size 8 && touch $out/done
    kill -INT $UP; wait $UP
  fi
  [ -f $R/eval_$name/eval.json ] || { stage eval_$name; $W eval --policy $out/policy --suite libero_object --tasks 0,1,2 --out $R/eval_$name; }
done
# 9. Prioritised replay of open start states (train rl --replay-open) in the shipped models: plain vs
#    shares 0.5 and 0.75 at 8 iterations (the share with the larger informative-group fraction, the
#    smaller one within 5 points), then the chosen share at the experiment's settings, seeds 0-2,
#    each evaluated once after its run.
rl_shipped() {   # NAME ITERS SEED [train rl flags...]: a stack on the shipped models, one RL run
  local name=$1 iters=$2 seed=$3; shift 3
  local out=$R/rl_$name
  [ -f $out/done ] && return
  stage rl_$name
  export WORLDENV_HOME=$R/home_$name; rm -rf $WORLDENV_HOME; mkdir -p $WORLDENV_HOME
  $W up --free-ports --world-model-autocast none > $WORLDENV_HOME/up.out 2>&1 &
  local up=$!
  for _ in $(seq 150); do grep -q debug-api $WORLDENV_HOME/up.json 2> /dev/null && break; sleep 2; done
  $W train rl --starts shipped --seed $seed --out $out --iterations $iters --groups 8 --group-size 8 "$@" && touch $out/done
  kill -INT $up; wait $up
}
rl_shipped shipped_plain8 8 0
rl_shipped replay50_8 8 0 --replay-open 0.5
rl_shipped replay75_8 8 0 --replay-open 0.75
SHARE=${SHARE:-0.75}
for seed in 0 1 2; do
  rl_shipped replay_s$seed 30 $seed --replay-open $SHARE
  [ -f $R/eval_replay_s$seed/eval.json ] || { stage eval_replay_s$seed; $W eval --policy $R/rl_replay_s$seed/policy \
      --suite libero_object --tasks 0,1,2 --out $R/eval_replay_s$seed; }
done
stage done
