"""Replaying a recorded episode's actions from its `states[0]`, the way LIBERO's and OpenVLA's
dataset tools regenerate observations, and measuring how far the replay drifts."""
from __future__ import annotations

import dataclasses

import numpy as np

from worldenv.data import hdf5
from worldenv.sim.env import LiberoEnv


@dataclasses.dataclass(frozen=True)
class Replay:
    """How a replay went."""

    max_divergence: float      # max over steps of |replayed - recorded| flattened MuJoCo state
    success: bool              # LIBERO's success check at the end of the replay
    recorded_success: bool     # the episode's own label
    steps: int


def replay(env: LiberoEnv, episode: hdf5.RecordedEpisode) -> Replay:
    """Load `states[0]`, step every recorded action, compare each state before an action."""
    env.restore(episode.states[0], render=False)
    divergence, success = 0.0, False
    for recorded, action in zip(episode.states, episode.actions):
        state = env.inner.sim.get_state().flatten()
        divergence = max(divergence, float(np.abs(state - recorded).max()))
        success = env.step(action)
    return Replay(divergence, bool(success or env.inner._check_success()), episode.success, len(episode.actions))
