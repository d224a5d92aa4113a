#!/usr/bin/env bash
# The spread of the arm dynamics over training seeds (reports/learning-signal.md, "An ensemble of
# arm dynamics, twice the rollouts, and the grasp the closed loop loses"). Resumable: each stage
# leaves its output and is skipped when run again; named stages in the order given, all without a
# name. About 2 h on 2 cores (two chains side by side, each training on one thread).
#
# 1. own: the shipped SFT policy's real rollouts, sampled as RL explores (b = 0.02), 60 per task on
#    sampled init states 3000-3059 (the same episodes as scripts/policy_units.sh); own2: 60 more per
#    task on new init states 3060-3119 at sampling seed 1;
# 2. align_shipped: the SFT policy's alignment (its mean, the grasp gate at 1.75 cm) on held-out
#    sampled init states 8000+, 20 per task, in the shipped models;
# 3. ens0, ens1, ens2: the shipped frames with a fresh ensemble of 4 proprio dynamics
#    (`--proprio-members 4`, the step their mean), each member by the shipped recipe (8000 steps,
#    unrolled 8 chunks) on own, at training seeds 0-2; single dynamics on the same data moved the
#    closed loop 63-83 % over four seeds (scripts/policy_units.sh);
# 4. more0, more1, more2: a single dynamics on own and own2 (twice the rollouts), seeds 0-2;
#    one0, one1, one2: a single dynamics on own, seeds 0-2 (scripts/policy_units.sh's plain ones, again
#    on this machine: the shipped closed loop moved with the machine too);
# 5. errors: every dynamics replayed open loop on the held-out episodes (scripts/proprio_errors.py);
# 6. align_ens0, ..., align_more0, ...: alignment again on the same real episodes (no new simulator step);
# 7. draws_shipped, draws_ens0, ...: the same with 8 more closed loops from first frames jittered by
#    at most one grey level (`align --draws 8`): how many verdicts the scene does not decide;
# 8. libero_shipped, libero_one0, ..., libero_ens0, ...: alignment again with each closed loop's own actions
#    executed open loop in LIBERO from the same init state (`align --in-libero`): does the imagined verdict
#    (RL's reward) hold on the actions it was given for? Those simulator steps are counted in the output;
# 9. calib_shipped, rules_shipped (calib_one0, rules_one0, ...): every done rule's imagined verdict against
#    LIBERO on the rollout's own actions (scripts/reward_rules.py), on own's first 20 init states per task
#    (calib_: where a rule may be chosen) and on the held-out episodes (rules_: where it is measured).
set -uo pipefail
cd "${ROOT:-$(dirname "${BASH_SOURCE[0]}")/..}"
export MUJOCO_GL=${MUJOCO_GL:-egl}
HOME_DIR=${WORLDENV_HOME:-$HOME/.worldenv}
R=${R:-$HOME_DIR/runs/ensemble}
W=$PWD/.venv/bin/worldenv
PY=$PWD/.venv/bin/python
SHIPPED=$PWD/worldenv/checkpoints
GATE=0.0175
MEMBERS=4
mkdir -p "$R"
source scripts/held_out.sh   # stage, own, dynamics, errors, align

rules() {   # rules_NAME: held-out episodes; calib_NAME: own's first 20 per task (init states 3000-3019), for choosing
            # a rule; fresh_NAME: LIBERO's first frames at init states 8500-8539 per task, where the choice is tested;
            # groups_NAME: 8 rollouts sampled as RL samples them (b = 0.02) from each of init states 8600-8604 per task
            # (groups2_NAME: 8605-8609);
            # NAME shipped or a dynamics: scripts/reward_rules.py, the runs kept in $R/NAME.npz
  local name=$1 wm=${1#*_} data=$R/align_shipped/real per=0
  [ -f $R/$name.md ] && return
  local from="--data $data --per-task $per"
  [ "${name%%_*}" = calib ] && from="--data $R/own --per-task 20"
  [ "${name%%_*}" = fresh ] && from="--inits 8500:40"
  [ "${name%%_*}" = groups ] && from="--inits 8600:5 --samples 8"
  [ "${name%%_*}" = groups2 ] && from="--inits 8605:5 --samples 8"
  [ "$wm" != shipped ] && wm=$R/dyn_$wm/model
  stage $name
  $PY scripts/reward_rules.py $from --world-model $wm --save $R/$name.npz \
      --json $R/$name.json > $R/$name.md.part && mv $R/$name.md.part $R/$name.md
}

NAMES="ens0 ens1 ens2 more0 more1 more2 one0 one1 one2"
run() {
  case $1 in
    own) own ;;
    own2) own own2 3060 1 ;;
    align_shipped) align shipped shipped ;;
    ens[0-9]) dynamics $1 $R/own --seed ${1#ens} --proprio-members $MEMBERS ;;
    more[0-9]) dynamics $1 $R/own,$R/own2 --seed ${1#more} ;;
    one[0-9]) dynamics $1 $R/own --seed ${1#one} ;;
    errors) errors $NAMES ;;
    align_ens[0-9]|align_more[0-9]|align_one[0-9]) align ${1#align_} $R/dyn_${1#align_}/model ;;
    draws_shipped) DRAWS=8 align shipped_draws shipped ;;
    rules_*|calib_*|fresh_*|groups_*|groups2_*) rules $1 ;;
    libero_shipped) IN_LIBERO=1 align libero_shipped shipped ;;
    libero_*) IN_LIBERO=1 align libero_${1#libero_} $R/dyn_${1#libero_}/model ;;
    draws_*) DRAWS=8 align ${1#draws_}_draws $R/dyn_${1#draws_}/model ;;
    *) echo "unknown stage $1"; return 1 ;;
  esac
}

if [ $# -gt 0 ]; then
  for s in "$@"; do run $s || exit 1; done
  exit
fi
for s in own own2 align_shipped ens0 ens1 ens2 more0 more1 more2 one0 one1 one2 errors align_ens0 align_ens1 \
         align_ens2 align_more0 align_more1 align_more2 align_one0 align_one1 align_one2 draws_shipped; do
  run $s || exit 1
done
