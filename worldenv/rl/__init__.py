"""RL in imagination, in one room: the Redis queue and its jobs (`queue`), the rollout worker
and its metrics (`worker`, `worker_metrics`), rollouts through the queue (`rollout`), the LOOP
trainer (`trainer`) with its pure functions (`loop_ppo`), its settings (`settings`) and its
curves (`curves`). The imagined-episode loop itself is `worldenv.models.imagination`, shared
with the measurement and the gym envs."""
