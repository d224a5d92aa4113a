#!/usr/bin/env bash
# The world model's frames trained on their own predicted history (reports/learning-signal.md,
# "Frames trained on their own history"). Resumable: each stage leaves its output and is skipped
# when run again; one stage per call with a name, all in order without. About 2 h on 2 cores with
# the two trainings side by side.
#
# 1. own: the shipped SFT policy's real rollouts, sampled as RL explores (b = 0.02), 60 per task on
#    sampled init states 3000+ (every simulator step recorded in their HDF5 files);
# 2. align_shipped: the SFT policy's alignment (its mean, the grasp gate at 1.75 cm) on held-out
#    sampled init states 8000+, 20 per task, in the shipped models;
# 3. wm_tf, wm_own: the shipped world model's frames fine-tuned on those rollouts, every history
#    real (the refresh's recipe: 600 steps, lr 1e-4), and the same with the history rolled on the
#    model's own frames, d = 0..DEPTH chunks (`train world-model --own-history`); run the two side
#    by side: `bash scripts/own_history.sh wm_tf & bash scripts/own_history.sh wm_own`;
# 4. align_tf, align_own: alignment again on the same real episodes (no new simulator step);
#    align_tf_refl, align_own_refl: the same with the reflector fine-tuned for each one's frames
#    (the refresh's recipe: on the own rollouts and their replays, 400 steps);
# 5. drift: open-loop drift of the three world models over the held-out episodes, and their frame
#    L1 on their own history (bench/world_model_quality.py --own-history 10); slow (over 16 min a
#    model here), so only when named: `bash scripts/own_history.sh drift`;
# 6. probe: the grasp read off the closed loop's frames of the three, each with its reflector
#    (scripts/grasp_probe.py, trained on the real frames of stage 1).
set -uo pipefail
cd "${ROOT:-$(dirname "${BASH_SOURCE[0]}")/..}"
export MUJOCO_GL=${MUJOCO_GL:-egl}
HOME_DIR=${WORLDENV_HOME:-$HOME/.worldenv}
R=${R:-$HOME_DIR/runs/own_history}
W=$PWD/.venv/bin/worldenv
PY=$PWD/.venv/bin/python
SHIPPED=$PWD/worldenv/checkpoints
DEPTH=${DEPTH:-6}
GATE=0.0175
mkdir -p "$R"
source scripts/held_out.sh   # stage, own, align

frames() {   # NAME OWN_HISTORY: the shipped world model's frames fine-tuned on the own rollouts
  [ -f $R/wm_$1/model/config.json ] && [ -f $R/wm_$1/done ] && return
  stage wm_$1
  $W train world-model --init $SHIPPED/world_model --data $R/own --out $R/wm_$1 --steps 600 --lr 1e-4 --warmup 0 \
      --eval-every 100 --patience 0 --own-history $2 --threads 1 > $R/wm_$1.log 2>&1 && touch $R/wm_$1/done
}

reflector() {   # NAME: the shipped reflector fine-tuned for wm_NAME's frames (the refresh's recipe)
  [ -f $R/refl_$1/done ] && return
  stage refl_$1
  $W train reflector --init $SHIPPED/reflector --data $R/own --replays $R/wm_$1/model --out $R/refl_$1 --steps 400 \
      --lr 1e-4 --warmup 0 --eval-every 100 --threads 1 > $R/refl_$1.log 2>&1 && touch $R/refl_$1/done
}

run() {
  case $1 in
    own) own ;;
    align_shipped) align shipped shipped ;;
    wm_tf) own && frames tf 0 ;;
    wm_own) own && frames own $DEPTH ;;
    align_tf) align tf $R/wm_tf/model ;;
    align_own) align own $R/wm_own/model ;;
    align_tf_refl) reflector tf && align tf_refl $R/wm_tf/model $R/refl_tf/model ;;
    align_own_refl) reflector own && align own_refl $R/wm_own/model $R/refl_own/model ;;
    drift) [ -f $R/drift.md ] || { stage drift; $PY bench/world_model_quality.py \
        --models shipped,tf=$R/wm_tf/model,own=$R/wm_own/model --heldout $R/align_shipped/real --own-history 10 > $R/drift.md; } ;;
    probe)
      [ -f $R/probe.pt ] || { stage probe_train; $PY scripts/grasp_probe.py train --data $R/own --out $R/probe.pt; }
      for m in shipped:shipped:shipped tf:$R/wm_tf/model:$R/refl_tf/model own:$R/wm_own/model:$R/refl_own/model; do
        IFS=: read -r name wm refl <<< "$m"
        [ $name = shipped ] || [ -f $R/wm_$name/done ] || { echo "probe: wm_$name not trained yet"; return 1; }
        [ -f $R/probe_$name.json ] || { stage probe_$name; $PY scripts/grasp_probe.py measure --probe $R/probe.pt \
            --real $R/align_shipped/real --world-model $wm --reflector $refl --out $R/probe_$name.json; }
      done ;;
    *) echo "unknown stage $1"; return 1 ;;
  esac
}

if [ $# -gt 0 ]; then run $1; exit; fi
for s in own align_shipped wm_tf wm_own align_tf align_own align_tf_refl align_own_refl probe; do
  run $s || exit 1
done
