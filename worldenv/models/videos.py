"""The Reflector role for any reflector that judges whole videos (`VideoJudge`), and its
incremental form: each episode's state is its instruction and its frames so far; videos of
equal length are judged together."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from worldenv.models import inputs
from worldenv.models.roles import Spec


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


class VideoJudge:
    """The Reflector role over a torch module whose forward maps frames (B, T, H, W, 3) uint8 and
    B instructions to logits of p(done) (B,), and whose `config` has arch, name, image_size and
    max_frames. Shared by the tiny reflector and the LLaVA one."""

    def logits(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Logits (B,) for frames (B, T, H, W, 3) uint8 and B instruction strings."""
        return self(frames, instructions)

    def loss(self, frames: torch.Tensor, instructions: list[str], labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy against done labels (B,) in [0, 1]; scalar."""
        logits = self.logits(frames, instructions).float()
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.device, torch.float32))

    @torch.no_grad()
    def judge(self, videos: np.ndarray, instructions: list[str]) -> np.ndarray:
        """p(done) in [0, 1] per video: videos (B, T, H, W, 3) uint8 -> (B,) float32."""
        logits = self.logits(inputs.as_tensor(videos, self.device), instructions)
        return torch.sigmoid(logits.float()).cpu().numpy()

    @property
    def spec(self) -> Spec:
        c = self.config
        return Spec("reflector", c.arch, c.name, c.image_size, extra={"max_frames": c.max_frames})

    def start(self, frames: np.ndarray, instructions: list[str]) -> list[Video]:
        """First frames (B, H, W, 3) -> one video state each."""
        s = self.config.image_size
        inputs.expect("frames", frames, ("B", s, s, 3), "uint8")
        inputs.expect_texts("instructions", instructions, {"B": len(frames)})
        return start(frames, instructions)

    def observe(self, states: Sequence[Video], frames: np.ndarray) -> tuple[np.ndarray, list[Video]]:
        """Append frames (B, H, W, 3) -> p_done (B,) of each video so far, and the new states."""
        s = self.config.image_size
        inputs.expect("frames", frames, (len(states), s, s, 3), "uint8")
        return observe(self.judge, states, frames)

    def end(self, states: Sequence[Video]) -> None:
        """Nothing to release in-process."""
