"""Training: supervised fine-tuning of the policy, the world model and the reflector on recorded
LIBERO episodes (`chunks` cuts them at the action-chunk time step; `loop` is the shared loop)."""
