"""The gymnasium ids of worldenv's envs, registered when `worldenv.client` is imported (as
LeRobot's gym_* packages register theirs), so `gymnasium.make` finds them; importing this pulls
in gymnasium only, the envs load when made."""
from __future__ import annotations

import gymnasium as gym

LIBERO_ENV_ID = "worldenv/ImaginedLibero-v0"   # `worldenv.client.lerobot_env.make`


def register() -> None:
    """Register the ids with gymnasium (idempotent)."""
    if LIBERO_ENV_ID not in gym.registry:
        gym.register(LIBERO_ENV_ID, entry_point="worldenv.client.lerobot_env:make")
