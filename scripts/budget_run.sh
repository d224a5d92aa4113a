#!/usr/bin/env bash
# Ten times the groups per run (issue 25): LOOP at 128 groups x 8 for 140 iterations (17,920
# groups), beside its shuffled-reward control, on two stacks of the shipped models, one core
# each; from iteration 85 on, a second control forked from the first on a third stack (`fork`).
# About 200 s per iteration each on 2 cores, so about 8 hours: more than a session. The run is
# carried across machines in the repository: `save` copies each arm's run state (policy,
# trainer state with the optimiser and the RNG, metrics, groups, settings) to reports/signal/budget/ARM/, and
# `start` on a fresh machine copies it back into the worldenv home, where `train rl` resumes it
# at the next iteration. Results: reports/learning-signal.md ("Ten times the groups").
#
# BUDGET_SEED=S runs another RL seed and its own shuffled control (`rl`, `ctl`; no fork) at the same
# settings, carried in reports/signal/budget-seedS/ (RUN_DIR default $WORLDENV_HOME/runs/budget-seedS):
# RL runs and controls read as the unit. Seed 31 (the default) is the first run, with three arms.
#
# Usage: bash scripts/budget_run.sh start [RUN_DIR]   # a stack and a trainer per arm not training yet, in the background
#        bash scripts/budget_run.sh save  [RUN_DIR]   # each arm's run state (and snapshots not yet measured) into the repository
#        bash scripts/budget_run.sh stop  [RUN_DIR]   # every trainer (an iteration in flight is lost) and stack
#        bash scripts/budget_run.sh objective K [RUN_DIR]   # SFT, the controls and RL at snapshot K on the fixed
#                                                           # 288-start draw, into reports/signal/SET/objective_itK.json
#        bash scripts/budget_run.sh libero K [RUN_DIR]      # SFT, RL and the controls after K iterations in LIBERO,
#                                                           # into reports/signal/SET/eval_itK_ARM/
#        (RUN_DIR default: $WORLDENV_HOME/runs/budget)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=1
HOME_DIR=${WORLDENV_HOME:-$HOME/.worldenv}
SEED=${BUDGET_SEED:-31}
case $SEED in
  31) SET=budget; ARMS="rl ctl ctl2" ;;   # RL, its shuffled control, and a second control forked from it (`fork`)
  *[!0-9]*|"") echo "BUDGET_SEED: a non-negative integer, not '$SEED'" >&2; exit 2 ;;
  *) SET=budget-seed$SEED; ARMS="rl ctl" ;;   # another seed: RL and its own shuffled control
esac
if [ "${1:-}" = objective ] || [ "${1:-}" = libero ]; then R=${3:-$HOME_DIR/runs/$SET}; else R=${2:-$HOME_DIR/runs/$SET}; fi
W=$PWD/.venv/bin/worldenv
CARRY=$PWD/reports/signal/$SET
# The settings of the 128-group run at lr 1e-6, chosen from one probe iteration's KL and clip
# fraction (reports/learning-signal.md, "Four times the groups per update"); a new seed.
ARGS="--iterations 140 --groups 128 --minibatch 1024 --lr 1e-6 --exploration-scale 0.02 --seed $SEED --snapshot-every 14"
KEPT="policy trainer_state.pt metrics.jsonl run.json groups.jsonl"   # what a run needs to resume, and its record
mkdir -p "$R"

field() { grep -m1 "^$2 " "$1" | awk '{print $2}'; }   # a line of `worldenv up`'s banner

running() { pgrep -f "train rl .*--out $R/$1/run" > /dev/null; }

# The second control (ctl2) is forked from the control's run state, once, where the control then
# stands, and goes on with other reward permutations (--shuffle-seed 32): from the fork on, it and
# the control draw the same starts and sampling seeds and part by chance alone, so their paired gap
# is the null for RL's against the control, and their objectives the null for the objective's.
# (`start` has brought the control's carried state into RUN_DIR before it comes to ctl2; with no
# state anywhere, both controls start from the policy.)
fork() {
  local from=$R/ctl/run to=$R/ctl2/run
  [ -f "$from/trainer_state.pt" ] || return 0
  until consistent "$from"; do sleep 5; done
  copy_state "$from" "$to"
  echo "ctl2: forked from the control after iteration $(last_iteration "$to")"
}

copy_state() { mkdir -p "$2"; for f in $KEPT; do [ -e "$1/$f" ] && cp -r "$1/$f" "$2/"; done; }   # FROM TO

arm_args() {
  case $1 in
    ctl) echo "--shuffle-rewards" ;;
    ctl2) echo "--shuffle-rewards --shuffle-seed 32" ;;
  esac
}

start() {
  local arm h
  for arm in $ARMS; do
    h=$R/$arm
    running "$arm" && { echo "$arm: already training"; continue; }
    mkdir -p "$h/run"
    if [ ! -f "$h/run/trainer_state.pt" ] && [ -f "$CARRY/$arm/trainer_state.pt" ]; then
      copy_state "$CARRY/$arm" "$h/run"
      [ -d "$CARRY/$arm/snapshots" ] && cp -r "$CARRY/$arm/snapshots" "$h/run/"
      echo "$arm: resuming the carried run after iteration $(last_iteration "$h/run")"
    elif [ "$arm" = ctl2 ] && [ ! -f "$h/run/trainer_state.pt" ]; then
      fork
    fi
    # --world-model-channels-last: 1.16-1.29x where the CPU has no native bfloat16 (there `auto` runs
    # float32); where it has, the bfloat16 path runs channels-last anyway. The world model ran
    # under `auto` for the first 35 / 38 iterations (RL / control; their machines were not recorded,
    # and at about 160 s an iteration, six times this AVX2 one's float32, likely bfloat16), and
    # channels-last after them.
    # --max-episodes: two iterations' episodes (0.6 GB of Redis a stack instead of 3 GB at 10,000).
    nohup "$W" up --home "$h" --free-ports --no-exit --threads 1 --world-model-threads 1 --world-model-channels-last \
      --max-episodes 2048 \
      > "$R/up_$arm.log" 2>&1 &
  done
  for arm in $ARMS; do
    running "$arm" && continue
    until grep -q "^serving" "$R/up_$arm.log"; do sleep 2; done
    # shellcheck disable=SC2046
    nohup "$W" train rl $ARGS $(arm_args "$arm") --redis-url "$(field "$R/up_$arm.log" redis)" \
      --policy-addr "$(field "$R/up_$arm.log" policy)" --out "$R/$arm/run" > "$R/train_$arm.log" 2>&1 &
    echo "$arm: training, log $R/train_$arm.log"
  done
}

last_iteration() { tail -n1 "$1/metrics.jsonl" | sed 's/.*"iteration": \([0-9]*\).*/\1/'; }

# A consistent copy while the trainer runs: it writes metrics.jsonl, then policy/, then
# trainer_state.pt at the end of each iteration (a few seconds of ~200); a copy taken inside
# that window has a policy newer than its state, and is taken again.
consistent() {
  local run=$1
  [ "$(stat -c %Y "$run/policy/model.safetensors")" -le "$(stat -c %Y "$run/trainer_state.pt")" ] &&
    [ "$(find "$run/trainer_state.pt" -mmin -0.2 | wc -l)" = 0 ]
}

# The snapshots whose objective is not yet in the repository go with the run state (2 MB each), so
# `objective K` can be measured on the next machine; a measured one stays in git's history only.
carry_snapshots() {
  local run=$1 to=$2 snap k
  rm -rf "$to/snapshots"
  for snap in "$run"/snapshots/iteration*; do
    [ -f "$snap/model.safetensors" ] || continue
    k=$((10#${snap##*iteration}))
    [ "$k" -gt 0 ] && [ ! -f "$CARRY/objective_it$k.json" ] || continue
    mkdir -p "$to/snapshots" && cp -r "$snap" "$to/snapshots/"
  done
}

save() {
  for arm in $ARMS; do
    local run=$R/$arm/run
    [ -f "$run/trainer_state.pt" ] || { echo "$arm: no run state in $run"; continue; }
    until consistent "$run"; do sleep 5; done
    rm -rf "$CARRY/$arm/policy"
    copy_state "$run" "$CARRY/$arm"
    carry_snapshots "$run" "$CARRY/$arm"
    consistent "$run" || { echo "$arm: the trainer wrote during the copy; run save again"; continue; }
    echo "$arm: saved after iteration $(last_iteration "$CARRY/$arm")"
  done
}

stop() {
  pkill -f "train rl .*--out $R/" && sleep 2
  pkill -INT -f "worldenv up --home $R/"
  while pgrep -f "worldenv up --home $R/" > /dev/null; do sleep 1; done
  echo "stopped"
}

# RL's own objective at snapshot K (imagination only; the protocol of the report's table): SFT,
# then RL, the control and the second control (where it has snapshot K) after K iterations, each
# sampled once at the run's scale, into one file where every row is held against the control. SFT
# is measured again on each machine (its CPU kernels move it by a start or two). Each part is
# measured alone as soon as its snapshot exists (an arm still training is waited for), kept in
# RUN_DIR/obj, and skipped when run again; then the parts are joined (`objective --results`).
objective() {
  local k=$1 snap parts="" arm
  snap=snapshots/iteration$(printf %04d "$k")
  part() {   # NAME POLICY: one row of the objective, measured once
    local out=$R/obj/part_it${k}_$1.json
    [ -f "$out" ] || "$W" objective --policies "$2" --per-task 96 --samples 1 --exploration-scales 0.02 \
      --batch 32 --out "$out" || return 1
    parts="$parts${parts:+,}$out"
  }
  mkdir -p "$R/obj"
  part sft shipped || return 1
  for arm in $ARMS; do
    while [ ! -f "$R/$arm/run/$snap/model.safetensors" ] && running "$arm" &&
          [ "$(last_iteration "$R/$arm/run")" -lt "$k" ]; do sleep 30; done
    if [ ! -f "$R/$arm/run/$snap/model.safetensors" ]; then
      [ "$arm" = ctl2 ] && continue   # forked after K
      echo "$arm: no snapshot $R/$arm/run/$snap" >&2; return 1
    fi
    rm -rf "$R/obj/${arm}_it$k" && cp -r "$R/$arm/run/$snap" "$R/obj/${arm}_it$k"
    part "$arm" "$R/obj/${arm}_it$k" || return 1
  done
  # every row against the control, and (where the second control has K) each row's lead over both
  # controls against the controls' own gap: the rule for LIBERO (see `libero` below)
  local controls=""
  [ -d "$R/obj/ctl2_it$k" ] && controls="--controls ctl_it$k,ctl2_it$k"
  # shellcheck disable=SC2086
  "$W" objective --results "$parts" --against "ctl_it$k" $controls --out "$CARRY/objective_it$k.json"
}

# LIBERO at snapshot K, read as declared in reports/learning-signal.md before it runs ("Ten times
# the groups"): SFT, RL and the controls on the experiment's 150 paired episodes (LIBERO's fixed
# init states 0-49 of tasks 0-2), mean actions, each into reports/signal/SET/eval_itK_ARM/ (eval.json,
# eval.md; skipped when its eval.json is there, so a cut run goes on); every simulator step is
# counted in those files. The policy after K iterations is the run's snapshot K, or the run's
# policy when K is where it stopped (a measured snapshot is not carried to the next machine).
libero() {
  local k=$1 arm pol out policies=""
  for arm in $ARMS; do   # every policy found before the first episode
    pol=$R/$arm/run/snapshots/iteration$(printf %04d "$k")
    if [ ! -f "$pol/model.safetensors" ]; then
      pol=$R/$arm/run/policy
      [ -f "$R/$arm/run/metrics.jsonl" ] && [ "$(last_iteration "$R/$arm/run")" = $((k - 1)) ] ||
        { echo "$arm: neither snapshot $k nor a run that stopped after $k iterations in $R/$arm/run" >&2; return 1; }
    fi
    policies="$policies $arm=$pol"
  done
  for arm in sft=shipped $policies; do
    out=$CARRY/eval_it${k}_${arm%%=*}
    [ -f "$out/eval.json" ] && { echo "${arm%%=*}: $out already measured"; continue; }
    "$W" eval --policy "${arm#*=}" --suite libero_object --tasks 0,1,2 --episodes-per-task 50 --init-offset 0 \
      --out "$out" || return 1
  done
  local controls="$CARRY/eval_it${k}_ctl"
  [ -f "$CARRY/eval_it${k}_ctl2/eval.json" ] && controls="$controls,$CARRY/eval_it${k}_ctl2"
  "$W" compare "$controls" "$CARRY/eval_it${k}_rl" &&
    "$W" compare "$CARRY/eval_it${k}_sft" "$CARRY/eval_it${k}_rl"
}

case "${1:-}" in
  start) start ;;
  save) save ;;
  stop) stop ;;
  objective) [ -n "${2:-}" ] || { echo "usage: $0 objective K [RUN_DIR]" >&2; exit 2; }
             objective "$2" ;;
  libero) [ -n "${2:-}" ] || { echo "usage: $0 libero K [RUN_DIR]" >&2; exit 2; }
          libero "$2" ;;
  *) echo "usage: $0 start|save|stop|objective K|libero K [RUN_DIR]" >&2; exit 2 ;;
esac
