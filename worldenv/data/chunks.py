"""Recorded LIBERO episodes at the models' time step, the action chunk.

The policy acts once per chunk of K actions, the world model predicts the frame after a chunk,
and the reflector judges the video of chunk-boundary frames: all three train on the same
`ChunkedEpisode`, cut from an HDF5 episode at steps offset, offset + K, ... (offset: where the
policy started acting, after the recorded settle steps; frames must have been rendered there),
plus the observation after the last action.
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterable

import numpy as np

from worldenv.data import hdf5
from worldenv.data.chunked_episode import ChunkedEpisode  # noqa: F401 (the type every caller names chunks.ChunkedEpisode)


def memory_bank(episode: ChunkedEpisode, c: int, history: int) -> np.ndarray:
    """The `history` chunk-boundary frames up to and including boundary `c`, oldest first, the
    first frame repeated before the episode's start (what a world model's memory bank holds
    there): (history, H, W, 3)."""
    return episode.frames[np.maximum(np.arange(c - history + 1, c + 1), 0)]


def full_chunks(episode: ChunkedEpisode) -> int:
    """Chunks before the first short one."""
    k = episode.actions.shape[1]
    short = np.flatnonzero(episode.lengths < k)
    return int(short[0]) if len(short) else episode.chunks


def _proprio(obs: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([obs["ee_states"], obs["gripper_states"]], axis=1).astype(np.float32)  # (T, 8)


def chunk(episode: hdf5.RecordedEpisode, instruction: str, k: int = 8, offset: int | None = None) -> ChunkedEpisode:
    """Cut `episode` into chunks of `k` actions from step `offset` (default: after the settle
    steps, where the policy starts acting)."""
    stride, steps = int(episode.attrs.get("image_stride", 1)), len(episode)
    first = int(episode.attrs.get("image_offset", 0))
    offset = int(episode.attrs.get("settle_steps", 0)) if offset is None else offset
    if k % stride or (offset - first) % stride or offset < first:
        raise ValueError(f"frames every {stride} steps from step {first} do not fall on chunks of {k} from step {offset}")
    starts = np.arange(offset, steps, k)
    if not len(starts) or "agentview_rgb" not in episode.final_obs:
        raise ValueError(f"episode {episode.attrs.get('id')}: no chunk starts before step {steps} or no final frame")
    frames = np.concatenate([episode.obs["agentview_rgb"][(starts - first) // stride], episode.final_obs["agentview_rgb"]])
    proprio = np.concatenate([_proprio(episode.obs)[starts], _proprio(episode.final_obs)])
    success = np.concatenate([episode.obs["success"][starts], episode.final_obs["success"]]).astype(bool)
    lengths = np.minimum(k, steps - starts)
    actions = np.zeros((len(starts), k, episode.actions.shape[1]), np.float32)
    for c, (s, n) in enumerate(zip(starts, lengths)):
        actions[c, :n] = episode.actions[s:s + n]
    ident = f"{episode.attrs.get('id', '?')}/{policy_label(str(episode.attrs.get('policy', '')))}"
    return ChunkedEpisode(frames, proprio, actions, lengths, success, np.append(starts, steps), instruction, ident)


def policy_label(name: str) -> str:
    """How an episode id names its policy: 'expert' or host:port as they are, a checkpoint
    directory by its run's name (`.../sft_n1_s0/model` -> sft_n1_s0), never a path of the
    machine that recorded it."""
    if "/" not in name:
        return name
    path = pathlib.PurePosixPath(name.rstrip("/"))
    return path.parent.name if path.name == "model" and path.parent.name else path.name


def load(paths: Iterable[str | pathlib.Path], k: int = 8, image_size: int | None = None,
         per_file: int = 0) -> list[ChunkedEpisode]:
    """The episodes of the given HDF5 task files (or folders of them) and LeRobotDataset
    directories (`worldenv.data.lerobot_import`), chunked where the policy starts acting;
    `per_file` > 0 keeps each file's (each LeRobot task's) first that many (e.g. demos per task)."""
    from worldenv.data import lerobot_import
    out, files = [], []
    for path in paths:
        if lerobot_import.is_dataset(path):
            out.extend(lerobot_import.episodes(path, k, image_size, per_file))
        else:
            files.append(path)
    for path in _files(files):
        task = hdf5.read(path, image_size)
        kept = [e for e in task.episodes if len(e)]
        out.extend(chunk(e, task.instruction, k) for e in (kept[:per_file] if per_file else kept))
    return out


def _files(paths: Iterable[str | pathlib.Path]) -> list[pathlib.Path]:
    files = []
    for path in map(pathlib.Path, paths):
        found = sorted(path.rglob("*.hdf5")) if path.is_dir() else [path]
        if not found or not all(f.is_file() for f in found):
            raise FileNotFoundError(f"data: no HDF5 episode files (nor a LeRobotDataset, meta/info.json) at {path}")
        files.extend(found)
    return files


def split(episodes: list[ChunkedEpisode], val_fraction: float, seed: int = 0) -> tuple[list, list]:
    """A validation split by whole episodes (never chunks of one episode on both sides),
    stratified by task and outcome so both sides see successes and failures of every task."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    groups: dict[tuple[str, bool], list[ChunkedEpisode]] = {}
    for e in episodes:
        groups.setdefault((e.instruction, e.succeeded), []).append(e)
    for key in sorted(groups):
        group = [groups[key][i] for i in rng.permutation(len(groups[key]))]
        n_val = int(round(len(group) * val_fraction)) if len(group) > 1 else 0
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return train, val
