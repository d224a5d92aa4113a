"""Client side: typed service clients, the Redis rollout queue, rollout workers, gym wrapper."""
