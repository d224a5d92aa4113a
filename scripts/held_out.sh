# Shared by scripts/own_history.sh and scripts/policy_units.sh (sourced, with R, W, GATE set): the
# shipped SFT policy's own rollouts, and its alignment on held-out episodes recorded once and
# judged again by each world model.
stage() { echo "=== $(date +%T) $1"; }

own() {   # the SFT policy's real rollouts, sampled as RL explores (b = 0.02), 60 per task at 3000-3059
  [ -f $R/own/done ] && return
  stage own
  $W explore --policy shipped --tasks 0,1,2 --episodes-per-task 60 --init-offset 3000 --noise laplace \
      --exploration-scale 0.02 --env-processes 1 --out $R/own && touch $R/own/done
}

align() {   # NAME WORLD_MODEL [REFLECTOR] [GATE]: the SFT policy's mean, the real episodes of align_shipped
  local out=$R/align_$1
  [ -f $out/alignment.json ] && return
  stage align_$1
  mkdir -p $out
  [ "$1" != shipped ] && [ ! -d $out/real ] && cp -r $R/align_shipped/real $out/
  $W align --world-model $2 --reflector ${3:-shipped} --tasks 0,1,2 --episodes-per-task 20 --init-offset 8000 \
      --grasp-gate ${4-$GATE} --env-processes 1 --out $out
}
