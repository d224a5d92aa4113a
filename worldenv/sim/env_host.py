"""What runs inside an env process: one LiberoEnv, its current observation, the scripted expert.

The driver calls these methods by name through `pool.EnvProcess.call`. Arguments and results are
small dataclasses and numpy arrays (pickled over a local pipe; frames are at most a few per call).
"""
from __future__ import annotations

import os

import numpy as np

from worldenv.sim.env import ChunkResult, EnvConfig, LiberoEnv, Observation


class EnvHost:
    """Holds at most one env; re-creates it only when the task or observation config changes."""

    def __init__(self):
        self.env: LiberoEnv | None = None
        self.obs: Observation | None = None
        self.expert = None

    def open(self, config: EnvConfig) -> str:
        """Load the env for `config`; returns its instruction."""
        if self.env is None or self.env.config != config:
            self.close()
            self.env = LiberoEnv(config)
        return self.env.instruction

    def reset(self, init_index: int, expert: bool = False, render_each_step: bool = False) -> Observation:
        """Start an episode from standard init state `init_index` (rendered observation)."""
        self.obs = self._env().reset(init_index, render=True, render_each_step=render_each_step)
        self.expert = None
        if expert:
            from worldenv.sim.expert import ScriptedExpert
            self.expert = ScriptedExpert()
            self.expert.reset(self.env)
        return self.obs

    def settle_chunk(self) -> ChunkResult:
        """The last reset's settle phase: no-op steps from the init state (for recordings)."""
        return self._env().settle

    def step_chunk(self, actions: np.ndarray, stop_on_success: bool = True,
                   render_each_step: bool = False) -> ChunkResult:
        """Run a (k, 7) action chunk; render once at its end (or at every step if asked)."""
        result = self._env().step_chunk(actions, stop_on_success, render_each_step, first=self.obs)
        self.obs = result.obs
        return result

    def expert_chunk(self, k: int, stop_on_success: bool = True, render_each_step: bool = False) -> ChunkResult:
        """Run k steps chosen by the scripted expert, closed-loop at every step."""
        if self.expert is None:
            raise RuntimeError("expert_chunk needs reset(..., expert=True) first")
        env = self._env()
        result = env.step_chunk(np.zeros((k, 7), np.float32), stop_on_success, render_each_step,
                                first=self.obs, policy=lambda: self.expert.act(env))
        self.obs = result.obs
        return result

    def crash(self) -> None:
        """Kill this process at once (tests use it to check crash recovery)."""
        os._exit(3)

    def _env(self) -> LiberoEnv:
        if self.env is None:
            raise RuntimeError("no env open: call open(config) first")
        return self.env

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
