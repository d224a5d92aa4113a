"""Start-state bank: the real observations imagined episodes begin from.

One `.npz` file holds N start states: agentview frames, proprio, instructions, and the ids that
reproduce each one in the simulator. Two kinds of entry: the first observation of a LIBERO init
state (`worldenv starts build`, id suite/task/init), and **keyframes** - any chunk boundary of
a recorded episode, demo or exploration (`keyframes()`, id suite/task/init/policy/step<n>, n indexing the recording's states), with
the chunk-boundary frames before it as `history`, so the world model's memory bank starts full
and an imagined rollout starts part-way into the task (as WoVR's keyframe-initialised
rollouts do, which shortens imagination and so the model's drift). `synthetic_bank()` makes a
small stand-in bank for smoke runs without LIBERO.
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
    history: np.ndarray | None = None  # (N, T, H, W, 3) uint8: the chunk-boundary frames before each
                                       # start, oldest first (a first frame repeated where there were none)

    def __post_init__(self):
        n = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames: expected (N, H, W, 3) uint8, got {self.frames.dtype} {self.frames.shape}")
        if self.history is not None and (self.history.shape[0] != n or self.history.shape[2:] != self.frames.shape[1:]):
            raise ValueError(f"history: expected (N={n}, T, {', '.join(map(str, self.frames.shape[1:]))}), "
                             f"got {self.history.shape}")
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
        for key in ("wrist_frames", "history"):
            if getattr(self, key) is not None:
                arrays[key] = getattr(self, key)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "StartBank":
        with np.load(path, allow_pickle=False) as z:
            return cls(frames=z["frames"], proprio=z["proprio"].astype(np.float32),
                       instructions=[str(s) for s in z["instructions"]], ids=[str(s) for s in z["ids"]],
                       meta=json.loads(str(z["meta"])), wrist_frames=z["wrist_frames"] if "wrist_frames" in z else None,
                       history=z["history"] if "history" in z else None)

    def start_frames(self, index: int) -> np.ndarray:
        """(T+1, H, W, 3): the history then the start frame - what a world model's memory starts with."""
        frame = self.frames[index][None]
        return frame if self.history is None else np.concatenate([self.history[index], frame])

    def subset(self, indices) -> "StartBank":
        """The entries at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return StartBank(self.frames[idx], self.proprio[idx], [self.instructions[i] for i in idx],
                         [self.ids[i] for i in idx], dict(self.meta), pick(self.wrist_frames), pick(self.history))


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


def first_kept(episode, before_success: int, first: int) -> int:
    """The first chunk boundary of `episode` a bank keeps: with `before_success` K > 0, a
    successful episode keeps only its last K boundaries before success (where the grasp and the
    placing decide it), a failed one all of them."""
    if before_success and episode.succeeded:
        return max(first, int(np.argmax(episode.success)) - before_success)
    return first


def keyframes(episodes, history: int = 1, every: int = 1, include_start: bool = True,
              before_success: int = 0) -> StartBank:
    """Keyframes of recorded `chunks.ChunkedEpisode`s: every `every`-th chunk boundary before the
    episode ends or succeeds (a start that is already done teaches nothing), each with the
    `history` chunk-boundary frames before it; `before_success` > 0 keeps near-outcome states
    only (`first_kept`)."""
    rows = []
    for e in episodes:
        padded = np.concatenate([np.repeat(e.frames[:1], history, axis=0), e.frames])     # (history + C + 1, ...)
        for c in range(first_kept(e, before_success, 0 if include_start else 1), e.chunks, every):
            if e.success[c]:
                break
            rows.append((e.frames[c], e.proprio[c], e.instruction, f"{e.id}/step{e.steps[c]}", padded[c:c + history]))
    if not rows:
        raise ValueError("keyframes: the episodes have no chunk boundary before success or the end")
    frames, proprio, instructions, ids, hist = zip(*rows)
    return StartBank(np.stack(frames), np.stack(proprio).astype(np.float32), list(instructions), list(ids),
                     meta={"source": "keyframes", "image_size": int(frames[0].shape[0]), "history": history,
                           "every": every, "before_success": before_success},
                     history=np.stack(hist) if history else None)
