"""The light client (no torch): typed service clients (`clients`, `errors`), the role interfaces
over gRPC (`remote`), the gym envs (`gym_env`, `vector_env`) and the compliance suite."""
