"""Training the world model's proprio dynamics (`worldenv.models.proprio_dynamics`) on whole
recorded episodes, unrolled on its own predictions.

A sample is a window of `unroll` consecutive full chunks of one episode: the dynamics starts from
the real proprio at the window's first chunk (and the real previous chunk), then steps on the real
actions with its own predicted states; the loss is the mean |error| of every predicted state in
the features a policy reads (`proprio.features`), standardised by the dynamics' own training data.
Windows that run past an episode's end are masked there. `open_loop` replays a whole episode
from its first proprio, the way imagination uses the model, for the held-out figures.

The dynamics' standardisation is fitted on its own training data, where the arm turns far more than
in the demos a policy learnt from: a policy's rotation features have a spread 3-30 times smaller,
so an error the dynamics' loss counts as small moves that policy's input by many of its stds.
`--policy-units POLICY` adds the error of that policy's own proprio input (its standardisation and
clamp, `proprio_dynamics.read`) to the loss, so the dynamics is also trained in the units a
policy acts on. `--proprio-members K` trains an ensemble (`proprio_dynamics.DynamicsEnsemble`):
each member unrolled on its own windows, the loss their mean, the checkpoint kept by the
ensemble's own held-out figure.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch

from worldenv.data import chunks as chunk_data
from worldenv.data.chunked_episode import ChunkedEpisode
from worldenv.models.proprio import FEATURE_PARTS, ProprioNorm
from worldenv.models import proprio_dynamics as dynamics
from worldenv.models.proprio_dynamics import ArmState, ProprioDynamics, matrix_to_axis_angle, read
from worldenv.train import supervised
from worldenv.train.settings import WorldModelTrainConfig

REST_FRACTION = 0.2   # share of training windows started without their history
SPANS = ((1, 4), (5, 14), (15, None))   # chunk spans of the open-loop figures (as `align`'s action gap)


@dataclasses.dataclass(frozen=True)
class Sequences:
    """Episodes' full chunks, padded to the longest: proprio (N, L+1, 8), actions (N, L, K, A)
    clipped to [-1, 1] as executed, chunks (N,) how many full chunks each has."""

    proprio: np.ndarray
    actions: np.ndarray
    chunks: np.ndarray

    def __len__(self) -> int:
        return len(self.chunks)

    def scored(self) -> np.ndarray:
        """(N, L) bool: which chunk boundaries 1..L each episode reaches (the rest is padding)."""
        return np.arange(1, self.proprio.shape[1])[None, :] <= self.chunks[:, None]

    def boundaries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw proprio (N_chunks, 8) before and after every full chunk (the dynamics' statistics)."""
        before = np.concatenate([p[:n] for p, n in zip(self.proprio, self.chunks)])
        after = np.concatenate([p[1:n + 1] for p, n in zip(self.proprio, self.chunks)])
        return torch.from_numpy(before), torch.from_numpy(after)


def sequences(episodes: list[ChunkedEpisode]) -> Sequences:
    """The leading full chunks of each episode (a short last chunk is not a step the world model takes)."""
    kept = [(e, int(np.cumprod(e.lengths == e.actions.shape[1]).sum())) for e in episodes]
    kept = [(e, n) for e, n in kept if n]
    if not kept:
        raise ValueError("data: no full action chunks to learn proprio dynamics from")
    longest, (k, a) = max(n for _, n in kept), kept[0][0].actions.shape[1:]
    proprio = np.zeros((len(kept), longest + 1, kept[0][0].proprio.shape[1]), np.float32)
    actions = np.zeros((len(kept), longest, k, a), np.float32)
    for i, (e, n) in enumerate(kept):
        proprio[i, :n + 1] = e.proprio[:n + 1]
        proprio[i, n + 1:] = e.proprio[n]          # padding: a valid rotation, never scored
        actions[i, :n] = np.clip(e.actions[:n], -1, 1)
    return Sequences(proprio, actions, np.array([n for _, n in kept]))


def unrolled_loss(model: ProprioDynamics, seq: Sequences, rows: np.ndarray, starts: np.ndarray,
                  unroll: int, at_rest: np.ndarray | None = None, reader: ProprioNorm | None = None) -> torch.Tensor:
    """Mean standardised |error| over the windows (rows, starts) unrolled `unroll` chunks;
    `at_rest` (B,) bool: windows whose history is withheld (as at a start state without one);
    `reader`: a policy's proprio standardisation, whose input error is added (`--policy-units`)."""
    device = model.delta_scale.device
    proprio = torch.from_numpy(seq.proprio[rows]).to(device)                          # (B, L+1, 8)
    actions = torch.from_numpy(seq.actions[rows]).to(device)                          # (B, L, K, A)
    chunks = torch.from_numpy(seq.chunks[rows]).to(device)
    b = torch.arange(len(rows), device=device)
    s = torch.from_numpy(starts).to(device)
    has_history = s > 0
    if at_rest is not None:
        has_history &= ~torch.from_numpy(at_rest).to(device)
    state = ArmState.from_raw(proprio[b, s])
    previous = ArmState.from_raw(proprio[b, torch.where(has_history, s - 1, s)])
    previous_actions = actions[b, (s - 1).clamp(min=0)] * has_history.float()[:, None, None]
    total, count = proprio.new_zeros(()), proprio.new_zeros(())
    for w in range(unroll):
        c = (s + w).clamp(max=actions.shape[1] - 1)
        nxt = model.step(state, actions[b, c], previous, previous_actions)
        real = ArmState.from_raw(proprio[b, c + 1])
        err = (model.standardise(nxt) - model.standardise(real)).abs().mean(-1)
        if reader is not None:
            err = err + (read(reader, nxt) - read(reader, real)).abs().mean(-1)
        mask = (s + w < chunks).float()
        total, count = total + (err * mask).sum(), count + mask.sum()
        previous, previous_actions, state = state, actions[b, c], nxt
    return total / count.clamp(min=1)


def draw_windows(rng: np.random.Generator, seq: Sequences, size: int,
                 rest_fraction: float = REST_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`size` windows: an episode each (uniform over chunks, so long episodes weigh more), a start
    chunk, and whether its history is withheld (imagination from a keyframe has none)."""
    rows = rng.choice(len(seq), size=size, p=seq.chunks / seq.chunks.sum())
    return rows, (rng.random(size) * seq.chunks[rows]).astype(np.int64), rng.random(size) < rest_fraction


@torch.no_grad()
def open_loop(model: ProprioDynamics, seq: Sequences) -> np.ndarray:
    """Every episode replayed from its first proprio on its real actions -> raw proprio (N, L+1, 8)
    (index 0 the real first proprio; beyond an episode's chunks, padding)."""
    device = model.delta_scale.device
    proprio = torch.from_numpy(seq.proprio).to(device)
    actions = torch.from_numpy(seq.actions).to(device)
    state = previous = ArmState.from_raw(proprio[:, 0])
    previous_actions = torch.zeros_like(actions[:, 0])
    out = [proprio[:, 0]]
    for c in range(actions.shape[1]):
        nxt = model.step(state, actions[:, c], previous, previous_actions)
        out.append(nxt.raw())
        previous, previous_actions, state = state, actions[:, c], nxt
    return torch.stack(out, dim=1).cpu().numpy()


def integrated_open_loop(world_model, seq: Sequences) -> np.ndarray:
    """`open_loop` for a world model's own proprio path (`predict_proprio`, no history)."""
    proprio = torch.from_numpy(seq.proprio[:, 0])
    out = [proprio]
    with torch.no_grad():
        for c in range(seq.actions.shape[1]):
            proprio = world_model.predict_proprio(proprio, torch.from_numpy(seq.actions[:, c]))
            out.append(proprio)
    return torch.stack(out, dim=1).numpy()


def open_loop_errors(model: ProprioDynamics, seq: Sequences, predicted: np.ndarray | None = None,
                     reader: ProprioNorm | None = None) -> dict[str, float]:
    """Mean |error| of an open-loop replay (`predicted`, default `open_loop(model, seq)`) over
    every predicted chunk boundary: in `model`'s standardised features by chunk span, in a policy's
    input units (`reader`'s, else `model`'s) by part ("read_<part>" for position, rotation,
    gripper), the rotation's angle in degrees ("rotation_deg") and the eef position's in metres
    ("position_m"). "loss" is what training minimises: the first, plus the second with a `reader`."""
    predicted = torch.from_numpy(open_loop(model, seq) if predicted is None else predicted).float()
    c = np.arange(1, seq.proprio.shape[1])
    valid = torch.from_numpy(seq.scored())                                            # (N, L)
    real = torch.from_numpy(seq.proprio[:, 1:])
    states = [ArmState.from_raw(x.reshape(-1, x.shape[-1])) for x in (predicted[:, 1:], real)]
    def error(norm):                                                                  # (N, L, 11)
        return (read(norm, states[0]) - read(norm, states[1])).abs().view(*valid.shape, -1)
    own = error(model.norm)
    err, read_err = own.mean(-1), own if reader is None else error(reader)
    turn = matrix_to_axis_angle(states[0].rot @ states[1].rot.transpose(-1, -2)).norm(dim=-1).view(valid.shape)
    metres = (predicted[:, 1:, :3] - real[..., :3]).abs().mean(-1)
    out = {"loss": float(err[valid].mean() + (read_err.mean(-1)[valid].mean() if reader is not None else 0)),
           "position_m": float(metres[valid].mean()), "rotation_deg": float(torch.rad2deg(turn[valid]).mean()),
           **{f"read_{part}": float(read_err[..., cols].mean(-1)[valid].mean()) for part, cols in FEATURE_PARTS.items()}}
    for lo, hi in SPANS:
        span = valid & torch.from_numpy((c >= lo) & (c <= (hi or c.max())))[None]
        if span.any():
            out[f"chunks_{lo}-{hi or ''}"] = float(err[span].mean())
            out[f"rotation_deg_{lo}-{hi or ''}"] = float(torch.rad2deg(turn[span]).mean())
    return out


def train(config: WorldModelTrainConfig) -> dict:
    """`train world-model --proprio-dynamics`: a world model (the --init checkpoint's, or a fresh
    one) given a proprio dynamics, only that trained; the best model by held-out open-loop error
    lands in <out>/model."""
    train_eps, val_eps = chunk_data.split(chunk_data.load(config.paths, per_file=config.episodes_per_file),
                                          config.val_fraction, config.seed)
    train_seq, val_seq = sequences(train_eps), sequences(val_eps or train_eps)
    torch.manual_seed(config.seed)
    model = supervised.initial_model("world_model", config, **config.overrides)
    if not hasattr(model, "add_proprio_dynamics"):
        raise ValueError(f"--proprio-dynamics: the {model.spec.arch} world model has no proprio dynamics to add")
    fresh = model.proprio_dynamics is None
    if not fresh and model.config.proprio_members != config.proprio_members:
        raise ValueError(f"--proprio-members {config.proprio_members}: the --init checkpoint's dynamics has "
                         f"{model.config.proprio_members}; give the same number to train it on")
    integrated = integrated_open_loop(model, val_seq) if fresh else None   # the path it replaces
    model.add_proprio_dynamics(config.proprio_members)
    if fresh:
        model.proprio_dynamics.fit_statistics(*train_seq.boundaries())
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("proprio_dynamics."))
    reader = policy_reader(config.policy_units, model.proprio_dynamics.delta_scale.device)
    replaced = open_loop_errors(model.proprio_dynamics, val_seq, integrated, reader)

    def losses(m, batches):   # an ensemble's members each on their own windows; the loss is their mean
        parts = [unrolled_loss(member, train_seq, *batch[:2], config.unroll, batch[2], reader)
                 for member, batch in zip(dynamics.members(m.proprio_dynamics), batches)]
        return {"loss": sum(parts) / len(parts)}

    def draw(rng, size):
        return [draw_windows(rng, train_seq, size) for _ in range(config.proprio_members)]

    summary = supervised.fit(model, losses, draw, lambda m: open_loop_errors(m.proprio_dynamics, val_seq, reader=reader),
                             config, config.out, "proprio dynamics")
    out = {**summary, "unroll": config.unroll, "policy_units": config.policy_units, "members": config.proprio_members,
           "train_episodes": len(train_eps), "val_episodes": len(val_eps), "val_before": replaced}
    if config.proprio_members > 1:
        out["val_members"] = members_alone(pathlib.Path(config.out) / supervised.MODEL_DIR, val_seq, reader)
    return out


def members_alone(checkpoint: pathlib.Path, seq: Sequences, reader: ProprioNorm | None) -> list[float]:
    """The held-out open-loop loss of each member of a checkpoint's ensemble stepping alone: what
    their mean gains over them."""
    from worldenv import models
    model = models.load(checkpoint, role="world_model")
    return [open_loop_errors(m, seq, reader=reader)["loss"] for m in dynamics.members(model.proprio_dynamics)]


def policy_reader(policy: str | None, device) -> ProprioNorm | None:
    """The proprio standardisation of a policy checkpoint ('shipped' = worldenv's), frozen; None for None."""
    if policy is None:
        return None
    from worldenv import checkpoints, models
    model = models.load(checkpoints.model(policy, "policy"), role="policy")
    norm = getattr(model, "proprio_norm", None)
    if not isinstance(norm, ProprioNorm):
        raise ValueError(f"--policy-units: the {model.spec.arch} policy at {policy} does not read proprio features "
                         "through a ProprioNorm")
    return norm.to(device).requires_grad_(False)

