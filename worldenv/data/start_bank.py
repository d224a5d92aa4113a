"""Start-state bank: the real first observations imagined episodes begin from.

One `.npz` file holds N start states: agentview frames, proprio, instructions, and the ids that
reproduce each one in the simulator (suite, task index, init-state index). Built from LIBERO by
`worldenv starts build`; `synthetic_bank()` makes a small stand-in bank for smoke runs without LIBERO.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np


@dataclasses.dataclass
class StartBank:
    frames: np.ndarray               # (N, H, W, 3) uint8, upright
    proprio: np.ndarray              # (N, P) float32: eef pos (3), axis-angle (3), gripper qpos (2)
    instructions: list[str]          # N task instructions
    ids: list[str]                   # N ids, e.g. "libero_object/3/17" = suite/task/init state
    meta: dict = dataclasses.field(default_factory=dict)  # suite, image size, source, ...
    wrist_frames: np.ndarray | None = None  # (N, H, W, 3) uint8 when built with the wrist camera

    def __post_init__(self):
        n = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames: expected (N, H, W, 3) uint8, got {self.frames.dtype} {self.frames.shape}")
        if self.proprio.shape[0] != n or len(self.instructions) != n or len(self.ids) != n:
            raise ValueError(f"start bank fields disagree on N: frames {n}, proprio {self.proprio.shape[0]}, "
                             f"instructions {len(self.instructions)}, ids {len(self.ids)}")

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"frames": self.frames, "proprio": self.proprio.astype(np.float32),
                  "instructions": np.array(self.instructions, dtype=np.str_),
                  "ids": np.array(self.ids, dtype=np.str_), "meta": np.array(json.dumps(self.meta))}
        if self.wrist_frames is not None:
            arrays["wrist_frames"] = self.wrist_frames
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "StartBank":
        with np.load(path, allow_pickle=False) as z:
            return cls(frames=z["frames"], proprio=z["proprio"].astype(np.float32),
                       instructions=[str(s) for s in z["instructions"]], ids=[str(s) for s in z["ids"]],
                       meta=json.loads(str(z["meta"])), wrist_frames=z["wrist_frames"] if "wrist_frames" in z else None)


_SYNTHETIC_TASKS = ["pick up the red block and place it in the basket",
                    "pick up the green block and place it in the basket",
                    "pick up the blue block and place it in the basket",
                    "push the yellow block to the left"]


def synthetic_bank(n: int = 8, image_size: int = 64, proprio_dim: int = 8, seed: int = 0) -> StartBank:
    """A stand-in bank for smoke runs without LIBERO: a table, a basket and coloured blocks
    at random places. It exercises the pipeline; it is not a task anyone can measure success on."""
    rng = np.random.default_rng(seed)
    s = image_size
    frames = np.empty((n, s, s, 3), np.uint8)
    frames[:] = np.array([96, 80, 64], np.uint8)                      # table
    frames[:, : s // 3] = np.array([150, 160, 170], np.uint8)          # wall
    colours = np.array([[200, 40, 40], [40, 180, 60], [50, 70, 200], [220, 200, 40]], np.uint8)
    for i in range(n):
        bx, by = rng.integers(s // 2, s - s // 6), rng.integers(s // 10, s - s // 4)
        frames[i, bx: bx + s // 8, by: by + s // 5] = (140, 110, 60)     # basket
        for c in colours:
            x, y = rng.integers(s // 3, s - s // 10), rng.integers(2, s - s // 10)
            frames[i, x: x + s // 14 + 1, y: y + s // 14 + 1] = c
    proprio = np.zeros((n, proprio_dim), np.float32)
    proprio[:, :3] = rng.uniform([-0.2, -0.2, 0.9], [0.2, 0.2, 1.2], (n, 3))
    proprio[:, 3:6] = (np.pi, 0.0, 0.0)
    proprio[:, 6:8] = (0.04, -0.04)
    instructions = [_SYNTHETIC_TASKS[i % len(_SYNTHETIC_TASKS)] for i in range(n)]
    ids = [f"synthetic/{i % len(_SYNTHETIC_TASKS)}/{i}" for i in range(n)]
    return StartBank(frames, proprio, instructions, ids, meta={"source": "synthetic", "image_size": s, "seed": seed})
