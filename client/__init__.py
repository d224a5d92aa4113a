"""The light client (no torch): typed service clients (`clients`, `errors`), the role interfaces
over gRPC (`remote`), the gym envs (`gym_env`, `vector_env`, `lerobot_env`; their gymnasium ids
in `registration`, registered here) and the compliance suite."""
from worldenv.client import registration as _registration

_registration.register()
