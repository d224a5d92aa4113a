"""The incremental Reflector form for any reflector that judges whole videos: each episode's
state is its instruction and its frames so far; videos of equal length are judged together."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Video:
    """One episode's reflector state."""

    instruction: str
    frames: tuple[np.ndarray, ...]   # each (H, W, 3) uint8, oldest first

    def push(self, frame: np.ndarray) -> "Video":
        return Video(self.instruction, (*self.frames, frame))


def start(frames: np.ndarray, instructions: Sequence[str]) -> list[Video]:
    """First frames (B, H, W, 3) -> one video each (frames copied: callers may reuse buffers)."""
    return [Video(text, (frame.copy(),)) for frame, text in zip(frames, instructions)]


def observe(judge: Callable[[np.ndarray, list[str]], np.ndarray], states: Sequence[Video],
            frames: np.ndarray) -> tuple[np.ndarray, list[Video]]:
    """Append frames (B, H, W, 3) and judge each video so far -> p_done (B,), new states."""
    videos = [v.push(f.copy()) for v, f in zip(states, frames)]
    p_done = np.zeros(len(videos), np.float32)
    for length in sorted({len(v.frames) for v in videos}):
        rows = [i for i, v in enumerate(videos) if len(v.frames) == length]
        clips = np.stack([np.stack(videos[i].frames) for i in rows])          # (b, T, H, W, 3)
        p_done[rows] = judge(clips, [videos[i].instruction for i in rows])
    return p_done, videos
