"""Training the reflector: p(task done by chunk c) from the video of chunk-boundary frames.

A sample is an episode's video up to frame c (as the rollout worker judges it after each
imagined chunk) with LIBERO's success label of that frame. Failures (exploration episodes that
never succeed) and the frames of a success before it happens are the negatives; a failure
judged done is the reward-hacking case, so positives are only up-weighted to balance, never
more. Per-frame binary cross-entropy.

The instruction must matter: a success video judged under another task's instruction is a
negative. `mismatch_fraction` of every batch is pairs: a success clip under its own instruction
(done) and the same clip under another task's (not done), so only the instruction tells them
apart (unpaired mismatches alone, success being rare, taught a reflector to call every success
"not done"). Without them the reflector learned "something went into the
basket" and paid a policy that placed the wrong object in full.

With `replays` (a world-model checkpoint), every episode is also seen as the world model
replays its real actions open loop, with the real episode's labels frame by frame: RL asks the
reflector to judge imagined video, blurred and drifting, and a reflector that only ever saw
real video judges it worse.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from worldenv.models.reflector import sample_indices
from worldenv.data import chunks
from worldenv.train import supervised
from worldenv.train.settings import ReflectorTrainConfig
from worldenv.train.augment import shift_frames



Item = tuple[int, int, str | None]   # (episode, frame, instruction it is judged under; None = its own)


def prefixes(episodes: list[chunks.ChunkedEpisode]) -> list[Item]:
    """(episode index, frame index, None) of every judged video: after each chunk, as the worker judges."""
    return [(i, c, None) for i, e in enumerate(episodes) for c in range(1, len(e.frames))]


def mismatched(episodes: list[chunks.ChunkedEpisode], items: list[Item], rng: np.random.Generator | None) -> list[Item]:
    """Success prefixes among `items`, each under another task's instruction (random with `rng`,
    else the next one in sorted order): negatives that teach the reflector to read the instruction."""
    texts = sorted({e.instruction for e in episodes})
    out = []
    for i, c, _ in items:
        others = [t for t in texts if t != episodes[i].instruction]
        if others and episodes[i].success[c]:
            out.append((i, c, others[int(rng.integers(len(others)))] if rng is not None else others[0]))
    return out


def as_outcome(episodes: list[chunks.ChunkedEpisode]) -> list[chunks.ChunkedEpisode]:
    """Every frame labelled with its episode's outcome (a value's target: P(success | video so far)
    under the policy that made the episode) instead of whether the task is done by then."""
    return [dataclasses.replace(e, success=np.full_like(e.success, bool(e.succeeded))) for e in episodes]


def label(episodes: list[chunks.ChunkedEpisode], item: Item) -> float:
    """LIBERO's success of the frame under the episode's own instruction; 0 under another."""
    i, c, instruction = item
    return float(episodes[i].success[c]) if instruction is None else 0.0


def clip(episode: chunks.ChunkedEpisode, c: int, max_frames: int) -> np.ndarray:
    """The frames the reflector samples from the video up to frame c: (min(c+1, max), H, W, 3)."""
    return episode.frames[sample_indices(c + 1, max_frames).numpy()]


def losses(model, episodes, batch: list[Item], pos_weight: float, rng=None, shift: int = 0):
    """BCE over a batch of prefixes; videos of equal sampled length run together."""
    m = model.config.max_frames
    by_length: dict[int, list[Item]] = {}
    for item in batch:
        by_length.setdefault(min(item[1] + 1, m), []).append(item)
    total, correct, count = torch.zeros((), device=model.device), 0, 0
    for items in by_length.values():
        videos = np.stack([clip(episodes[i], c, m) for i, c, _ in items])            # (b, T, H, W, 3)
        if rng is not None and shift:
            b, t = videos.shape[:2]
            videos = shift_frames(videos.reshape(b * t, *videos.shape[2:]), rng, shift).reshape(videos.shape)
        labels = torch.tensor([label(episodes, item) for item in items], device=model.device)
        texts = [text or episodes[i].instruction for i, _, text in items]
        logits = model.logits(torch.from_numpy(videos).to(model.device), texts).float()
        weight = 1 + (pos_weight - 1) * labels
        total = total + torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight, reduction="sum")
        correct += int(((logits > 0).float() == labels).sum())
        count += len(items)
    return {"loss": total / count, "accuracy": torch.tensor(correct / count)}


def replayed(episodes: list[chunks.ChunkedEpisode], world_model_dir: str, batch: int = 32) -> list[chunks.ChunkedEpisode]:
    """Each episode as the world model replays its real actions from its first frame: imagined
    frames, the real episode's labels."""
    from worldenv import models
    from worldenv.measure.reflector import imagine
    world_model = models.load(world_model_dir, role="world_model")
    videos = [v for i in range(0, len(episodes), batch) for v in imagine(world_model, episodes[i:i + batch])]
    return [dataclasses.replace(e, frames=v, id=f"{e.id}/replay") for e, v in zip(episodes, videos)]


def train(config: ReflectorTrainConfig) -> dict:
    """Train on `config.data` (demos and exploration); the best model lands in <out>/model."""
    train_eps, val_eps = chunks.split(chunks.load(config.paths, per_file=config.episodes_per_file), config.val_fraction, config.seed)
    val_eps = val_eps or train_eps
    if config.target == "outcome":
        train_eps, val_eps = as_outcome(train_eps), as_outcome(val_eps)
    if config.replays:
        train_eps, val_eps = train_eps + replayed(train_eps, config.replays), val_eps + replayed(val_eps, config.replays)
    train_items, val_items = prefixes(train_eps), prefixes(val_eps)
    positive_items = [it for it in train_items if train_eps[it[0]].success[it[1]]]
    val_mismatched = mismatched(val_eps, val_items, None)
    positives = len(positive_items)
    pos_weight = min(config.max_pos_weight, (len(train_items) - positives) / max(positives, 1))
    torch.manual_seed(config.seed)
    model = supervised.initial_model("reflector", config, **config.overrides)
    if config.add_film:
        model.add_instruction_film()

    def draw(rng: np.random.Generator, size: int):
        # Pairs: a success clip under its own instruction (done) and under another (not done),
        # so the instruction is the only difference the loss can follow.
        n_pairs = int(round(size * config.mismatch_fraction / 2)) if positive_items else 0
        paired = [positive_items[j] for j in rng.integers(0, len(positive_items), n_pairs)]
        rest = [train_items[j] for j in rng.integers(0, len(train_items), size - 2 * n_pairs)]
        return rng, rest + paired + mismatched(train_eps, paired, rng)

    def step_losses(m, drawn):
        rng, batch = drawn
        return losses(m, train_eps, batch, pos_weight, rng, config.shift)

    def validate(m) -> dict[str, float]:
        out = _average(m, val_eps, val_items + val_mismatched, pos_weight)
        if val_mismatched:
            out["mismatch_accuracy"] = _average(m, val_eps, val_mismatched, pos_weight)["accuracy"]
        return out

    summary = supervised.fit(model, step_losses, draw, validate, config, config.out, "reflector")
    return {**summary, "pos_weight": pos_weight, "train_videos": len(train_items), "train_positives": int(positives),
            "train_episodes": len(train_eps), "val_episodes": len(val_eps), "val_mismatched": len(val_mismatched),
            "replays": bool(config.replays)}


def _average(model, episodes, items: list[Item], pos_weight: float) -> dict[str, float]:
    """Loss and accuracy over `items`, 64 at a time, weighted by batch size."""
    parts = [losses(model, episodes, items[i:i + 64], pos_weight) for i in range(0, len(items), 64)]
    sizes = [len(items[i:i + 64]) for i in range(0, len(items), 64)]
    return {k: float(np.average([p[k].item() for p in parts], weights=sizes)) for k in ("loss", "accuracy")}
