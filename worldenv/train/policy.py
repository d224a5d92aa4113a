"""Supervised fine-tuning of the Laplace chunk policy on recorded episodes.

One sample per chunk: the frame and proprio before it, the instruction, and its K x 7 actions.
Loss: L1 of the mean on the executed actions, plus `nll_weight` x the Laplace negative
log-likelihood (which trains the scale head). Frames get random shifts of up to `shift` pixels
(replicate padding), as small-data imitation needs.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pydantic
import torch

from worldenv import models
from worldenv.train import chunks, loop
from worldenv.train.augment import shift_frames


class PolicyTrainConfig(pydantic.BaseModel):
    """What `worldenv train policy` trains and how."""

    model_config = pydantic.ConfigDict(extra="forbid")

    fit: loop.FitConfig = loop.FitConfig(steps=5000, lr=1e-3)
    nll_weight: float = pydantic.Field(0.1, ge=0, description="weight of the Laplace NLL beside the L1 on the mean")
    shift: int = pydantic.Field(4, ge=0, description="random frame shift augmentation, pixels")
    val_fraction: float = pydantic.Field(0.15, ge=0, lt=1, description="episodes held out for validation")
    only_successes: bool = pydantic.Field(True, description="imitate successful episodes only")
    model: dict = pydantic.Field(default_factory=dict, description="policy config overrides, e.g. width")


@dataclasses.dataclass(frozen=True)
class Samples:
    frames: np.ndarray          # (N, H, W, 3) uint8
    proprio: np.ndarray         # (N, 8) float32
    actions: np.ndarray         # (N, K, 7) float32
    valid: np.ndarray           # (N, K) bool: executed actions
    instructions: list[str]

    def __len__(self) -> int:
        return len(self.frames)

    def take(self, idx: np.ndarray) -> "Samples":
        return Samples(self.frames[idx], self.proprio[idx], self.actions[idx], self.valid[idx],
                       [self.instructions[i] for i in idx])


def samples(episodes: list[chunks.ChunkedEpisode]) -> Samples:
    """Every chunk of every episode."""
    k = episodes[0].actions.shape[1]
    valid = [np.arange(k)[None] < e.lengths[:, None] for e in episodes]
    return Samples(np.concatenate([e.frames[:-1] for e in episodes]), np.concatenate([e.proprio[:-1] for e in episodes]),
                   np.concatenate([e.actions for e in episodes]), np.concatenate(valid),
                   [e.instruction for e in episodes for _ in range(e.chunks)])


def losses(model, batch: Samples, nll_weight: float) -> dict[str, torch.Tensor]:
    dist = model.distribution(torch.from_numpy(batch.frames), torch.from_numpy(batch.proprio), batch.instructions)
    target = torch.from_numpy(batch.actions)
    valid = torch.from_numpy(batch.valid)[..., None].expand_as(target).float()    # (B, K, A)
    count = valid.sum().clamp(min=1)
    l1 = ((dist.loc - target).abs() * valid).sum() / count
    nll = (-dist.log_prob(target) * valid).sum() / count
    return {"loss": l1 + nll_weight * nll, "l1": l1, "nll": nll}


def train(data: list[str | pathlib.Path], out: str | pathlib.Path, config: PolicyTrainConfig) -> dict:
    """Train a policy on the HDF5 files `data`; the best one (by validation loss) lands in out/model."""
    episodes = [e for e in chunks.load(data) if e.succeeded or not config.only_successes]
    if not episodes:
        raise ValueError("data: no episodes to imitate (only successes are used unless only_successes=False)")
    train_eps, val_eps = chunks.split(episodes, config.val_fraction, config.fit.seed)
    train_set, val_set = samples(train_eps), samples(val_eps or train_eps)
    torch.manual_seed(config.fit.seed)
    model = models.build("policy", **config.model)
    model.proprio_norm.fit(torch.from_numpy(train_set.proprio))

    def draw(rng: np.random.Generator, size: int) -> Samples:
        batch = train_set.take(rng.integers(0, len(train_set), size))
        return dataclasses.replace(batch, frames=shift_frames(batch.frames, rng, config.shift))

    def validate(m) -> dict[str, float]:
        parts = [losses(m, val_set.take(np.arange(i, min(i + 256, len(val_set)))), config.nll_weight)
                 for i in range(0, len(val_set), 256)]
        return {k: float(np.mean([p[k].item() for p in parts])) for k in ("loss", "l1", "nll")}

    summary = loop.fit(model, lambda m, b: losses(m, b, config.nll_weight), draw, validate, config.fit, out, "policy")
    return {**summary, "train_episodes": len(train_eps), "val_episodes": len(val_eps), "train_samples": len(train_set)}
