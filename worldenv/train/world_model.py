"""Training the action-conditioned world model on recorded transitions, one chunk each.

A transition is the memory bank before a chunk (the last `history` chunk-boundary frames, the
first repeated at the start), the proprio, the K x 7 actions (clipped, as executed), and the
frame and proprio after it. Only full chunks are used: a short last chunk is not a step the
served model ever takes. Before training, the action map's gain (metres of eef motion per unit
of position action per step) is fitted to the recorded (action, eef displacement) pairs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from worldenv import checkpoints
from worldenv.models import registry
from worldenv.data import chunks
from worldenv.train import supervised
from worldenv.train.settings import WorldModelTrainConfig


PROPRIO_PARTS = ("proprio_head", "proprio_dynamics", "proprio_reader")   # a student's, copied from its teacher


@dataclasses.dataclass(frozen=True)
class Transitions:
    history: np.ndarray         # (N, T, H, W, 3) uint8, oldest first
    proprio: np.ndarray         # (N, 8) float32
    actions: np.ndarray         # (N, K, 7) float32, clipped to [-1, 1]
    next_frame: np.ndarray      # (N, H, W, 3) uint8
    next_proprio: np.ndarray    # (N, 8) float32
    teacher_frame: np.ndarray | None = None   # (N, H, W, 3) uint8, a teacher's predicted next frame (--teacher)

    def __len__(self) -> int:
        return len(self.actions)

    def take(self, idx) -> "Transitions":
        return Transitions(*(None if (v := getattr(self, f.name)) is None else v[idx] for f in dataclasses.fields(self)))


def transitions(episodes: list[chunks.ChunkedEpisode], history: int) -> Transitions:
    """Every full chunk of every episode, with its memory bank."""
    parts = []
    for e in episodes:
        k = e.actions.shape[1]
        for c in np.flatnonzero(e.lengths == k):
            parts.append((chunks.memory_bank(e, c, history), e.proprio[c], np.clip(e.actions[c], -1, 1), e.frames[c + 1],
                          e.proprio[c + 1]))
    if not parts:
        raise ValueError("data: no full action chunks to learn from")
    return Transitions(*(np.stack(column) for column in zip(*parts)))


@dataclasses.dataclass(frozen=True)
class Windows:
    """Runs of consecutive full chunks, for training on the model's own predicted history: each
    start (episode, chunk) whose next `depth + 1` chunks are full."""
    episodes: list[chunks.ChunkedEpisode]
    starts: np.ndarray          # (N, 2) int: episode index, first chunk
    history: int

    def __len__(self) -> int:
        return len(self.starts)

    def take(self, idx, depth: int) -> tuple[np.ndarray, ...]:
        """The real history before each start (N, T, H, W, 3), then the proprio, actions, next frame
        and next proprio of the `depth + 1` chunks from it, each (N, depth + 1, ...)."""
        parts = []
        for e, c in self.starts[idx]:
            ep = self.episodes[e]
            run, after = slice(c, c + depth + 1), slice(c + 1, c + depth + 2)
            parts.append((chunks.memory_bank(ep, c, self.history), ep.proprio[run], np.clip(ep.actions[run], -1, 1),
                          ep.frames[after], ep.proprio[after]))
        return tuple(np.stack(column) for column in zip(*parts))


def windows(episodes: list[chunks.ChunkedEpisode], history: int, depth: int) -> Windows:
    """Every start whose next `depth + 1` chunks are all full."""
    starts = [(i, c) for i, e in enumerate(episodes) for c in range(chunks.full_chunks(e) - depth)]
    if not starts:
        raise ValueError(f"data: no run of {depth + 1} full action chunks to learn from (--own-history {depth})")
    return Windows(episodes, np.asarray(starts, np.int64), history)


def rolled(model, data: Windows, idx, depth: int) -> Iterator[Transitions]:
    """The transitions d = 0..depth chunks after each start, each with the model's own frames as
    its history: rolled from the real history on the real actions and proprio (no gradient), as
    imagination rolls."""
    history, proprio, actions, next_frame, next_proprio = data.take(idx, depth)
    for d in range(depth + 1):
        yield Transitions(history, proprio[:, d], actions[:, d], next_frame[:, d], next_proprio[:, d])
        if d < depth:
            frames, _ = model.predict(history, proprio[:, d], actions[:, d])
            history = np.concatenate([history[:, 1:], frames[:, None]], axis=1)


def own_history(model, data: Windows, idx, depth: int) -> Transitions:
    """The transition `depth` chunks after each start, its history rolled on the model's own frames."""
    *_, last = rolled(model, data, idx, depth)
    return last


def fit_action_gain(data: Transitions) -> float:
    """Least-squares gain g in: eef displacement over a chunk = g x sum of its position actions."""
    pushed = data.actions[:, :, :3].sum(axis=1).ravel()                         # (N * 3,)
    moved = (data.next_proprio[:, :3] - data.proprio[:, :3]).ravel()
    return float(pushed @ moved / max(pushed @ pushed, 1e-9))


def losses(model, batch: Transitions, teacher_weight: float = 0.0) -> dict[str, torch.Tensor]:
    t = {f.name: torch.from_numpy(v) for f in dataclasses.fields(batch) if (v := getattr(batch, f.name)) is not None}
    taught = {} if batch.teacher_frame is None else {"teacher_frame": t["teacher_frame"], "teacher_weight": teacher_weight}
    return model.forward_train(t["history"], t["proprio"], t["actions"], t["next_frame"], t["next_proprio"], **taught)


def taught(data: Transitions, teacher, batch: int = 64) -> Transitions:
    """`data` with the teacher's predicted next frame of every transition (one pass, no grad)."""
    frames = [teacher.predict(data.history[i:i + batch], data.proprio[i:i + batch], data.actions[i:i + batch])[0]
              for i in range(0, len(data), batch)]
    return dataclasses.replace(data, teacher_frame=np.concatenate(frames))


def student(teacher, overrides: dict, device: str):
    """A fresh world model with the teacher's config and `overrides` (e.g. a cheaper U-Net), and the
    teacher's proprio path (head, dynamics) copied."""
    config = teacher.config.model_dump() | overrides
    model = registry.build("world_model", device=device, **{k: v for k, v in config.items() if k not in ("role", "arch")})
    for part in PROPRIO_PARTS:
        if getattr(teacher, part, None) is not None and getattr(model, part, None) is not None:
            getattr(model, part).load_state_dict(getattr(teacher, part).state_dict())
    return model


def _teacher(path: str, device: str):
    teacher = registry.load(checkpoints.model(path, "world_model"), role="world_model", device=device)
    if teacher.spec.arch != "tiny-unet" or teacher.config.mode != "residual":
        raise ValueError(f"--teacher: distillation takes a residual-mode tiny-unet world model, not {teacher.spec.arch}")
    return teacher


def _initial_model(config: WorldModelTrainConfig, train_set: Transitions, teacher):
    """The model to train: a student of `teacher`, the --init checkpoint, or a fresh one (its action
    gain fitted to the data), with a proprio reader added or alone trainable as asked."""
    overrides = config.overrides
    if config.calibrate and not config.init and teacher is None:   # a fine-tuned model or a student keeps its gain
        overrides["action_gain"] = max(fit_action_gain(train_set), 1e-4)
    torch.manual_seed(config.seed)
    if teacher is not None:   # a new student, or one trained further (--init): its frames only
        model = supervised.initial_model("world_model", config) if config.init else \
            student(teacher, overrides, config.device)
        for name, param in model.named_parameters():
            param.requires_grad_(not name.startswith(PROPRIO_PARTS))
        return model
    model = supervised.initial_model("world_model", config, **overrides)
    if config.add_proprio_reader:
        if not hasattr(model, "add_proprio_reader"):
            raise ValueError(f"--add-proprio-reader: the {model.spec.arch} world model has no proprio reader to add")
        model.add_proprio_reader()
    if config.reader_only:
        if getattr(model, "proprio_reader", None) is None:
            raise ValueError("--reader-only: the world model has no proprio reader (give --add-proprio-reader)")
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("proprio_reader."))
    return model


def train(config: WorldModelTrainConfig) -> dict:
    """Train on `config.data` (demos and exploration); the best model lands in <out>/model."""
    if config.proprio_dynamics:
        from worldenv.train import proprio_dynamics
        return proprio_dynamics.train(config)
    teacher = _teacher(config.teacher, config.device) if config.teacher else None
    base = registry.read_config(checkpoints.model(config.init, "world_model")) if config.init else teacher.config.model_dump() if teacher else {}
    history = int(config.overrides.get("history", base.get("history", 2)))
    train_eps, val_eps = chunks.split(chunks.load(config.paths, per_file=config.episodes_per_file), config.val_fraction, config.seed)
    train_set, val_set = transitions(train_eps, history), transitions(val_eps or train_eps, history)
    model = _initial_model(config, train_set, teacher)
    if teacher is not None:
        train_set = taught(train_set, teacher)
        del teacher

    if config.own_history:
        return _fit_own_history(config, model, train_eps, val_eps or train_eps, history, len(train_set))

    def draw(rng: np.random.Generator, size: int) -> Transitions:
        return train_set.take(rng.integers(0, len(train_set), size))

    def validate(m) -> dict[str, float]:
        torch.manual_seed(0)  # diffusion mode: the same timesteps and noise at every validation
        return _mean_losses(m, [val_set.take(np.arange(i, min(i + 64, len(val_set)))) for i in range(0, len(val_set), 64)])

    def train_losses(m, batch: Transitions) -> dict[str, torch.Tensor]:
        return losses(m, batch, config.teacher_weight)

    summary = supervised.fit(model, train_losses, draw, validate, config, config.out, "world model")
    return {**summary, "action_gain": model.config.action_gain, "train_transitions": len(train_set),
            "val_transitions": len(val_set), "train_episodes": len(train_eps), "val_episodes": len(val_eps)}


def _mean_losses(model, batches) -> dict[str, float]:
    parts = [losses(model, b) for b in batches]
    return {k: float(np.mean([p[k].item() for p in parts])) for k in parts[0]}


def _fit_own_history(config: WorldModelTrainConfig, model, train_eps, val_eps, history: int, n_transitions: int) -> dict:
    """`train` with --own-history N: each batch draws d = 0..N and trains on the transition d chunks
    after its starts, with the model's own frames as its history (`own_history`). The best model
    is the one with the lowest loss at d = N on the held-out episodes."""
    deepest = config.own_history
    train_w, val_w = windows(train_eps, history, deepest), windows(val_eps, history, deepest)

    def draw(rng: np.random.Generator, size: int) -> tuple[int, np.ndarray]:
        return int(rng.integers(0, deepest + 1)), rng.integers(0, len(train_w), size)

    def train_losses(m, batch: tuple[int, np.ndarray]) -> dict[str, torch.Tensor]:
        depth, idx = batch
        return losses(m, own_history(m, train_w, idx, depth))

    def validate(m) -> dict[str, float]:
        torch.manual_seed(0)
        blocks = [list(rolled(m, val_w, np.arange(i, min(i + 64, len(val_w))), deepest)) for i in range(0, len(val_w), 64)]
        deep, real = _mean_losses(m, [b[-1] for b in blocks]), _mean_losses(m, [b[0] for b in blocks])
        return deep | {f"{k}_real_history": v for k, v in real.items()}

    summary = supervised.fit(model, train_losses, draw, validate, config, config.out, "world model")
    return {**summary, "action_gain": model.config.action_gain, "train_transitions": n_transitions,
            "train_windows": len(train_w), "val_windows": len(val_w), "own_history": deepest,
            "train_episodes": len(train_eps), "val_episodes": len(val_eps)}
