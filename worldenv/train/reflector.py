"""Training the reflector: p(task done by chunk c) from the video of chunk-boundary frames.

A sample is an episode's video up to frame c (as the rollout worker judges it after each
imagined chunk) with LIBERO's success label of that frame. Failures (exploration episodes that
never succeed) and the frames of a success before it happens are the negatives; a failure
judged done is the reward-hacking case, so positives are only up-weighted to balance, never
more. Per-frame binary cross-entropy.
"""
from __future__ import annotations


import numpy as np
import torch

from worldenv.models.reflector import sample_indices
from worldenv.data import chunks
from worldenv.train import supervised
from worldenv.train.settings import ReflectorTrainConfig
from worldenv.train.augment import shift_frames



def prefixes(episodes: list[chunks.ChunkedEpisode]) -> list[tuple[int, int]]:
    """(episode index, frame index) of every judged video: after each chunk, as the worker judges."""
    return [(i, c) for i, e in enumerate(episodes) for c in range(1, len(e.frames))]


def clip(episode: chunks.ChunkedEpisode, c: int, max_frames: int) -> np.ndarray:
    """The frames the reflector samples from the video up to frame c: (min(c+1, max), H, W, 3)."""
    return episode.frames[sample_indices(c + 1, max_frames).numpy()]


def losses(model, episodes, batch: list[tuple[int, int]], pos_weight: float, rng=None, shift: int = 0):
    """BCE over a batch of prefixes; videos of equal sampled length run together."""
    m = model.config.max_frames
    by_length: dict[int, list[tuple[int, int]]] = {}
    for i, c in batch:
        by_length.setdefault(min(c + 1, m), []).append((i, c))
    total, correct, count = torch.zeros((), device=model.device), 0, 0
    for items in by_length.values():
        videos = np.stack([clip(episodes[i], c, m) for i, c in items])               # (b, T, H, W, 3)
        if rng is not None and shift:
            b, t = videos.shape[:2]
            videos = shift_frames(videos.reshape(b * t, *videos.shape[2:]), rng, shift).reshape(videos.shape)
        labels = torch.tensor([float(episodes[i].success[c]) for i, c in items], device=model.device)
        logits = model.logits(torch.from_numpy(videos).to(model.device), [episodes[i].instruction for i, _ in items]).float()
        weight = 1 + (pos_weight - 1) * labels
        total = total + torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight, reduction="sum")
        correct += int(((logits > 0).float() == labels).sum())
        count += len(items)
    return {"loss": total / count, "accuracy": torch.tensor(correct / count)}


def train(config: ReflectorTrainConfig) -> dict:
    """Train on `config.data` (demos and exploration); the best model lands in <out>/model."""
    train_eps, val_eps = chunks.split(chunks.load(config.paths, per_file=config.episodes_per_file), config.val_fraction, config.seed)
    val_eps = val_eps or train_eps
    train_items, val_items = prefixes(train_eps), prefixes(val_eps)
    positives = sum(train_eps[i].success[c] for i, c in train_items)
    pos_weight = min(config.max_pos_weight, (len(train_items) - positives) / max(positives, 1))
    torch.manual_seed(config.seed)
    model = supervised.initial_model("reflector", config, **config.overrides)

    def draw(rng: np.random.Generator, size: int):
        return rng, [train_items[j] for j in rng.integers(0, len(train_items), size)]

    def step_losses(m, drawn):
        rng, batch = drawn
        return losses(m, train_eps, batch, pos_weight, rng, config.shift)

    def validate(m) -> dict[str, float]:
        parts = [losses(m, val_eps, val_items[i:i + 64], pos_weight) for i in range(0, len(val_items), 64)]
        sizes = [len(val_items[i:i + 64]) for i in range(0, len(val_items), 64)]
        return {k: float(np.average([p[k].item() for p in parts], weights=sizes)) for k in ("loss", "accuracy")}

    summary = supervised.fit(model, step_losses, draw, validate, config, config.out, "reflector")
    return {**summary, "pos_weight": pos_weight, "train_videos": len(train_items), "train_positives": int(positives),
            "train_episodes": len(train_eps), "val_episodes": len(val_eps)}
