"""`ChunkedEpisode`: one recorded episode at the models' time step (the action chunk), the
training data of all three models. Its own module so that the readers of every format
(`chunks` for HDF5, `lerobot_import` for LeRobotDataset) and the writers (`lerobot`) share it
without importing one another."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ChunkedEpisode:
    """One episode as C chunks."""

    frames: np.ndarray          # (C+1, H, W, 3) uint8: before each chunk, then after the last
    proprio: np.ndarray         # (C+1, 8) float32: eef pos, axis-angle, gripper qpos
    actions: np.ndarray         # (C, K, 7) float32; a short last chunk is padded with zeros
    lengths: np.ndarray         # (C,) int: actions executed in each chunk (K, or fewer at the end)
    success: np.ndarray         # (C+1,) bool: LIBERO's success in each frame's state
    steps: np.ndarray           # (C+1,) int: the recorded step of each frame (its states[] index)
    instruction: str
    id: str                     # suite/task/init/policy, unique per episode

    @property
    def chunks(self) -> int:
        return len(self.actions)

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())
