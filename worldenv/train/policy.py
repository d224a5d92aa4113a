"""Supervised fine-tuning of the Laplace chunk policy on recorded episodes.

One sample per chunk: the frame and proprio before it, the instruction, and its K x 7 actions.
Loss: L1 of the mean on the executed actions, plus `nll_weight` x the Laplace negative
log-likelihood (which trains the scale head). Frames get random shifts of up to `shift` pixels
(replicate padding), as small-data imitation needs.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from worldenv.data import chunks
from worldenv.train import supervised
from worldenv.train.settings import PolicyTrainConfig
from worldenv.train.augment import shift_frames


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
    device = model.device
    dist = model.distribution(torch.from_numpy(batch.frames).to(device), torch.from_numpy(batch.proprio).to(device),
                              batch.instructions)
    target = torch.from_numpy(batch.actions).to(device)
    valid = torch.from_numpy(batch.valid).to(device)[..., None].expand_as(target).float()    # (B, K, A)
    count = valid.sum().clamp(min=1)
    l1 = ((dist.loc - target).abs() * valid).sum() / count
    nll = (-dist.log_prob(target) * valid).sum() / count
    return {"loss": l1 + nll_weight * nll, "l1": l1, "nll": nll}


def train(config: PolicyTrainConfig) -> dict:
    """Train on `config.data`; the best policy (by validation loss) lands in <out>/model."""
    episodes = [e for e in chunks.load(config.paths, per_file=config.episodes_per_file) if e.succeeded or not config.only_successes]
    if not episodes:
        raise ValueError("data: no episodes to imitate (only successes are used unless only_successes=False)")
    train_eps, val_eps = chunks.split(episodes, config.val_fraction, config.seed)
    train_set, val_set = samples(train_eps), samples(val_eps or train_eps)
    torch.manual_seed(config.seed)
    model = supervised.initial_model("policy", config, **config.overrides)
    if hasattr(model, "proprio_norm"):  # ours is fitted here; a paper-scale policy brings its dataset statistics
        model.proprio_norm.fit(torch.from_numpy(train_set.proprio).to(model.device))
    if hasattr(model, "fit_action_spread") and not config.init:  # the unit of RL's exploration noise
        model.fit_action_spread(torch.from_numpy(train_set.actions[train_set.valid]))

    def draw(rng: np.random.Generator, size: int) -> Samples:
        batch = train_set.take(rng.integers(0, len(train_set), size))
        return dataclasses.replace(batch, frames=shift_frames(batch.frames, rng, config.shift))

    def validate(m) -> dict[str, float]:
        parts = [losses(m, val_set.take(np.arange(i, min(i + 256, len(val_set)))), config.nll_weight)
                 for i in range(0, len(val_set), 256)]
        return {k: float(np.mean([p[k].item() for p in parts])) for k in ("loss", "l1", "nll")}

    summary = supervised.fit(model, lambda m, b: losses(m, b, config.nll_weight), draw, validate, config, config.out, "policy")
    return {**summary, "train_episodes": len(train_eps), "val_episodes": len(val_eps), "train_samples": len(train_set)}
