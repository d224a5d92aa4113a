"""Tiny instant reflector: video + instruction -> p(task done), the reward and stop signal.

Stands in for World-Env's frozen VLM + trainable reward head: R(o_1..t, g) = sigmoid(head(h_t)),
trained with binary cross-entropy on per-frame success labels. Here a shared conv encoder embeds
up to `max_frames` frames sampled uniformly from the video (always with the last one), the
instruction embedding attends over them, and the attended summary, the last frame's features
and the instruction feed the head.

Its incremental form (`start` / `observe`) keeps each episode's per-frame vision features in a
`FeatureVideo` state, so a caller sends only the new frame per step and each observation encodes
that one frame instead of the sampled clip again; the verdict is the same as judging the whole
video (the frame encoder sees each frame on its own).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pydantic
import torch

from worldenv.models import checkpoint, inputs, text, videos, vision


class ReflectorConfig(pydantic.BaseModel):
    """Shape and size of the tiny reflector."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    role: Literal["reflector"] = "reflector"
    arch: Literal["tiny-reflector"] = "tiny-reflector"
    name: str = pydantic.Field("tiny-reflector", description="label reported in the spec")
    image_size: int = pydantic.Field(64, ge=16, description="frame side, pixels")
    max_frames: int = pydantic.Field(8, ge=1, description="frames sampled uniformly from the video, last included")
    instruction_encoder: str = pydantic.Field("all-MiniLM-L6-v2", description="frozen sentence encoder "
                                              "(a name `language` resolves, or a directory), or 'hashed' words")
    text_dim: int = pydantic.Field(384, ge=1, description="the sentence encoder's embedding size")
    vocab_size: int = pydantic.Field(1024, ge=2, description="hashed words only: vocabulary")
    max_tokens: int = pydantic.Field(24, ge=1, description="hashed words only: words kept")
    width: int = pydantic.Field(128, ge=8, description="feature width")
    instruction_film: bool = pydantic.Field(
        False, description="the instruction scales and shifts every frame's features (FiLM) before attention and "
        "the head, so what counts as done depends on the task, not only on the scene (checkpoints made before "
        "it have none)")


def sample_indices(length: int, max_frames: int) -> torch.Tensor:
    """Up to max_frames indices spread uniformly over [0, length), always ending at length - 1."""
    if length <= max_frames:
        return torch.arange(length)
    return torch.linspace(0, length - 1, max_frames).round().long()


def _identity_film(width: int) -> torch.nn.Linear:
    """Instruction features (B, W) -> FiLM (gamma, beta) (B, 2W), zero at init: identity."""
    film = torch.nn.Linear(width, 2 * width)
    torch.nn.init.zeros_(film.weight)
    torch.nn.init.zeros_(film.bias)
    return film


@dataclasses.dataclass(frozen=True)
class FeatureVideo:
    """One episode's state: its instruction and the vision features of its frames so far."""

    instruction: str
    features: tuple[torch.Tensor, ...]   # each (W,) in the model's dtype, on its device, oldest first

    def push(self, feature: torch.Tensor) -> "FeatureVideo":
        return FeatureVideo(self.instruction, (*self.features, feature))

    def clip(self, max_frames: int) -> torch.Tensor:
        """The features of the frames `forward` would sample from this video -> (T', W)."""
        return torch.stack([self.features[i] for i in sample_indices(len(self.features), max_frames).tolist()])


class Reflector(torch.nn.Module, checkpoint.Pretrained, videos.VideoJudge):
    """Frames (B, T, H, W, 3) + instruction -> logit of p(done) (B,)."""

    config_class = ReflectorConfig

    def __init__(self, config: ReflectorConfig | None = None):
        super().__init__()
        self.config = config = config or ReflectorConfig()
        w = config.width
        self.vision = vision.ConvEncoder(w)
        self.instruction = text.InstructionFeatures(config.instruction_encoder, w, config.text_dim,
                                                    config.vocab_size, config.max_tokens)
        self.query = torch.nn.Linear(w, w)
        self.film = _identity_film(w) if config.instruction_film else None
        self.head = torch.nn.Sequential(torch.nn.Linear(3 * w, w), torch.nn.SiLU(), torch.nn.Linear(w, 1))

    def add_instruction_film(self) -> None:
        """Give a reflector made without it the instruction FiLM layer, at identity: the same
        verdicts until fine-tuning moves it (a checkpoint grows it, keeping all it learned)."""
        if self.film is None:
            w = self.config.width
            self.config = self.config.model_copy(update={"instruction_film": True})
            self.film = _identity_film(w).to(self.query.weight.device, self.query.weight.dtype)

    def forward(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """frames (B, T, H, W, 3) uint8, B instructions -> logits (B,)."""
        s = self.config.image_size
        inputs.expect("frames", frames, ("B", "T", s, s, 3), "uint8")
        inputs.expect_texts("instructions", instructions, {"B": len(frames)})
        idx = sample_indices(frames.shape[1], self.config.max_frames).to(frames.device)
        clip = frames.index_select(1, idx)                                      # (B, T', H, W, 3)
        b, t = clip.shape[:2]
        feats = self.vision(clip.reshape(b * t, *clip.shape[2:])).view(b, t, -1)  # (B, T', W)
        return self.judge_features(feats, instructions)

    def judge_features(self, feats: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Vision features of the sampled frames (B, T', W), last frame last -> logits (B,)."""
        goal = self.instruction(list(instructions), self.device, self.dtype)    # (B, W)
        if self.film is not None:
            gamma, beta = self.film(goal).chunk(2, dim=-1)                      # (B, W) each
            feats = feats * (1 + gamma[:, None]) + beta[:, None]
        scores = torch.einsum("bw,btw->bt", self.query(goal), feats) / feats.shape[-1] ** 0.5
        summary = torch.einsum("bt,btw->bw", scores.softmax(dim=-1), feats)     # (B, W)
        return self.head(torch.cat([summary, feats[:, -1], goal], dim=-1)).squeeze(-1)

    # --- the Reflector role, incremental: features cached per frame ---------------------------

    @torch.inference_mode()
    def start(self, frames: np.ndarray, instructions: list[str]) -> list[FeatureVideo]:
        """First frames (B, H, W, 3) -> one state each, holding the first frame's features."""
        s = self.config.image_size
        inputs.expect("frames", frames, ("B", s, s, 3), "uint8")
        inputs.expect_texts("instructions", instructions, {"B": len(frames)})
        features = self.vision(inputs.as_tensor(frames, self.device))                  # (B, W)
        return [FeatureVideo(text, (f,)) for f, text in zip(features, instructions)]

    @torch.inference_mode()
    def observe(self, states: Sequence[FeatureVideo], frames: np.ndarray) -> tuple[np.ndarray, list[FeatureVideo]]:
        """Append frames (B, H, W, 3) -> p_done (B,) of each video so far, and the new states.
        Only the new frames are encoded; videos sampling equally many frames are judged together."""
        s = self.config.image_size
        inputs.expect("frames", frames, (len(states), s, s, 3), "uint8")
        features = self.vision(inputs.as_tensor(frames, self.device))                  # (B, W)
        states = [v.push(f) for v, f in zip(states, features)]
        p_done, m = np.zeros(len(states), np.float32), self.config.max_frames
        for t in sorted({min(len(v.features), m) for v in states}):
            rows = [i for i, v in enumerate(states) if min(len(v.features), m) == t]
            clips = torch.stack([states[i].clip(m) for i in rows])                    # (b, T', W)
            logits = self.judge_features(clips, [states[i].instruction for i in rows])
            p_done[rows] = torch.sigmoid(logits.float()).cpu().numpy()
        return p_done, states
