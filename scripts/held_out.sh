# Shared by scripts/own_history.sh, scripts/policy_units.sh and scripts/ensemble.sh (sourced, with
# R, W, PY, SHIPPED, GATE set): the shipped SFT policy's own rollouts, a fresh proprio dynamics
# trained on them, its open-loop errors, and the policy's alignment on held-out episodes recorded
# once and judged again by each world model.
stage() { echo "=== $(date +%T) $1"; }

own() {   # [NAME OFFSET SEED]: the SFT policy's real rollouts, sampled as RL explores (b = 0.02), 60 per
          # task at init states OFFSET.. (default own, 3000-3059, sampling seed 0)
  local name=${1:-own} offset=${2:-3000} seed=${3:-0}
  [ -f $R/$name/done ] && return
  stage $name
  $W explore --policy shipped --tasks 0,1,2 --episodes-per-task 60 --init-offset $offset --noise laplace \
      --exploration-scale 0.02 --seed $seed --env-processes 1 --out $R/$name && touch $R/$name/done
}

align() {   # NAME WORLD_MODEL [REFLECTOR] [GATE]: the SFT policy's mean, the real episodes of align_shipped
            # (DRAWS=K: K more closed loops from jittered first frames, `align --draws`; IN_LIBERO=1: the
            # closed loops' actions executed in LIBERO too, `align --in-libero`)
  local out=$R/align_$1
  [ -f $out/alignment.json ] && return
  stage align_$1
  mkdir -p $out
  [ "$1" != shipped ] && [ ! -d $out/real ] && cp -r $R/align_shipped/real $out/
  $W align --world-model $2 --reflector ${3:-shipped} --tasks 0,1,2 --episodes-per-task 20 --init-offset 8000 \
      --grasp-gate ${4-$GATE} ${DRAWS:+--draws $DRAWS} ${IN_LIBERO:+--in-libero} --env-processes 1 --out $out
}

dynamics() {   # NAME DATA [FLAGS]: the shipped frames with a fresh proprio dynamics, the shipped recipe
  local name=$1 data=$2; shift 2
  [ -f $R/dyn_$name/done ] && return
  for d in ${data//,/ }; do [ -f $d/done ] || { echo "dyn_$name: $d is not collected yet"; return 1; }; done
  [ -f $R/integrated/config.json ] || $PY -c "
from worldenv import models
m = models.load('$SHIPPED/world_model', role='world_model')
m.drop_proprio_dynamics()
m.save_pretrained('$R/integrated')"
  stage dyn_$name
  $W train world-model --init $R/integrated --proprio-dynamics --data $data --out $R/dyn_$name --steps 8000 \
      --eval-every 1000 --lr 1e-3 --batch-size 64 --warmup 50 --patience 0 --threads 1 "$@" > $R/dyn_$name.log 2>&1 \
      && touch $R/dyn_$name/done
}

errors() {   # NAME...: the dynamics dyn_NAME and the shipped one replayed open loop on align_shipped's episodes
  [ -f $R/errors.md ] && return
  stage errors
  $PY scripts/proprio_errors.py --data $R/align_shipped/real \
      --models shipped$(for d in "$@"; do echo -n ",$d=$R/dyn_$d/model"; done) > $R/errors.md
}
