#!/usr/bin/env bash
# The arm dynamics trained in the policy's units (reports/learning-signal.md, "The arm dynamics in
# the policy's units"). Resumable: each stage leaves its output and is skipped when run again; one
# stage per call with a name, all in order without. About 2 h on 2 cores (run the rollouts and
# align_shipped side by side, then the trainings two at a time).
#
# 1. own: the shipped SFT policy's real rollouts, sampled as RL explores (b = 0.02), 60 per task on
#    sampled init states 3000-3059 (with one env process the same seed samples the same episodes
#    again: a second collection needs another --seed);
# 2. align_shipped: the SFT policy's alignment (its mean, the grasp gate at 1.75 cm) on held-out
#    sampled init states 8000+, 20 per task, in the shipped models;
# 3. dyn_plain, dyn_units: the shipped frames given a fresh proprio dynamics, trained by the shipped
#    recipe (8000 steps, unrolled 8 chunks) on those rollouts (half the shipped dynamics' data, so a
#    like-for-like control is trained here), and the same with the error of the
#    SFT policy's own proprio input added to the loss (`--policy-units shipped`); each at training
#    seeds 0-3 (dyn_plain1, dyn_units2, ...), since the closed loop moves with the dynamics' seed;
# 4. errors: the three dynamics replayed open loop on the held-out episodes of align_shipped, in the
#    policy's units by part and the rotation in degrees (scripts/proprio_errors.py);
# 5. align_plain, align_units, align_plain1, ...: alignment again on the same real episodes (no new
#    simulator step); align_plain_nogate: the first without the grasp gate.
set -uo pipefail
cd "${ROOT:-$(dirname "${BASH_SOURCE[0]}")/..}"
export MUJOCO_GL=${MUJOCO_GL:-egl}
HOME_DIR=${WORLDENV_HOME:-$HOME/.worldenv}
R=${R:-$HOME_DIR/runs/rotation}
W=$PWD/.venv/bin/worldenv
PY=$PWD/.venv/bin/python
SHIPPED=$PWD/worldenv/checkpoints
GATE=0.0175
mkdir -p "$R"
source scripts/held_out.sh   # stage, own, dynamics, errors, align

run() {
  case $1 in
    own) own ;;
    align_shipped) align shipped shipped ;;
    dyn_plain) dynamics plain $R/own ;;
    dyn_units) dynamics units $R/own --policy-units shipped ;;
    dyn_plain[123]) dynamics ${1#dyn_} $R/own --seed ${1#dyn_plain} ;;
    dyn_units[123]) dynamics ${1#dyn_} $R/own --seed ${1#dyn_units} --policy-units shipped ;;
    errors) errors plain units plain1 units1 plain2 units2 plain3 units3 ;;
    align_plain|align_units|align_plain[123]|align_units[123]) align ${1#align_} $R/dyn_${1#align_}/model ;;
    align_plain_nogate) align plain_nogate $R/dyn_plain/model shipped 0 ;;
    *) echo "unknown stage $1"; return 1 ;;
  esac
}

if [ $# -gt 0 ]; then run $1; exit; fi
for s in own align_shipped dyn_plain dyn_units dyn_plain1 dyn_units1 dyn_plain2 dyn_units2 dyn_plain3 dyn_units3 \
         errors align_plain align_units align_plain1 align_units1 align_plain2 align_units2 align_plain3 align_units3 \
         align_plain_nogate; do
  run $s || exit 1
done
