"""Training: supervised fine-tuning of the policy, the world model and the reflector on recorded
LIBERO episodes (`worldenv.data.chunks` cuts them at the action-chunk time step; `supervised` is
the shared loop). RL in imagination is `worldenv.rl`."""
