"""Action chunks executed open loop in LIBERO from an episode's own init state: what a sequence of
chunks (recorded, or imagined by the world model) really does. `worldenv align --in-libero` holds
imagination's verdict on an imagined episode against LIBERO's outcome of the same actions: the
reward RL in imagination trains on is right only where the two agree.

An episode id names its start (suite/task/init/...); the env is reset there and settled exactly as
every recorded episode is (`LiberoEnv.reset`), so a recorded episode's own chunks reproduce it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from worldenv.sim.env import EnvConfig, LiberoEnv


@dataclasses.dataclass
class OpenLoop:
    """What LIBERO made of the chunks."""

    success: bool                 # LIBERO's success came within the chunks (they stop there)
    success_chunk: int | None     # the chunk it came in, counted from 0
    proprio: np.ndarray           # (1 + chunks run, 8): after the settle, then after each chunk
    steps: int                    # simulator steps, the settle included


def start_of(episode_id: str) -> tuple[str, int, int]:
    """(suite, task, init state) of an episode id suite/task/init[/...]; a ValueError names the id."""
    parts = episode_id.split("/")
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise ValueError(f"episode id {episode_id!r}: expected suite/task/init[/...]") from None


class Executor:
    """One LIBERO env per suite and task, made on first use (`envs` may hand some in); a context
    manager that closes the ones it made."""

    def __init__(self, image_size: int = 64, envs: dict[tuple[str, int], LiberoEnv] | None = None):
        self.image_size = image_size
        self.envs = dict(envs or {})
        self._made: list[LiberoEnv] = []

    def env(self, suite: str, task: int) -> LiberoEnv:
        if (suite, task) not in self.envs:
            self.envs[suite, task] = LiberoEnv(EnvConfig(suite=suite, task=task, image_size=self.image_size))
            self._made.append(self.envs[suite, task])
        return self.envs[suite, task]

    def run(self, episode_id: str, chunks: list[np.ndarray] | np.ndarray) -> OpenLoop:
        """`chunks` ((K, 7) each, clipped to [-1, 1] as every executed action is) from the episode's
        init state, stopping at LIBERO's success."""
        suite, task, init = start_of(episode_id)
        env = self.env(suite, task)
        proprio = [env.reset(init, render=False).proprio]
        steps, success_chunk = env.config.settle_steps, None
        for c, chunk in enumerate(chunks):
            result = env.step_chunk(chunk, render=False)
            steps += len(result.actions)
            proprio.append(result.obs.proprio)
            if result.succeeded:
                success_chunk = c
                break
        return OpenLoop(success_chunk is not None, success_chunk, np.stack(proprio), steps)

    def close(self) -> None:
        for env in self._made:
            env.close()
        self._made.clear()

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
