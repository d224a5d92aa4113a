"""Episodes in LIBERO's HDF5 layout (robomimic style), written and read.

One file per task, `<task name>_demo.hdf5`, as LIBERO ships its datasets:

    data/                      attrs: env_name, problem_info (JSON: problem_name, domain_name,
                               language_instruction), bddl_file_name, bddl_file_content,
                               env_args (JSON), macros_image_convention, num_demos, total
    data/demo_k/               attrs: num_samples, init_state, + ours (see RecordedEpisode.attrs)
        actions    (T, 7)      OSC deltas (pos 3, axis-angle 3), gripper -1 open / +1 close
        states     (T, S)      flattened MuJoCo state before each action
        rewards    (T,) uint8  LIBERO's success after each action (sparse reward)
        dones      (T,) uint8  1 at the step that ended the episode with success
        robot_states (T, 9)    gripper qpos (2), eef pos (3), eef quat (4)
        obs/agentview_rgb (F, H, W, 3) uint8, obs/eye_in_hand_rgb (F, H, W, 3) uint8
        obs/ee_states (T, 6), obs/ee_pos (T, 3), obs/ee_ori (T, 3), obs/gripper_states (T, 2),
        obs/joint_states (T, 7)
        obs/success (T,) uint8 ours: success of the observed state (a per-frame label)
        final_obs/...          ours: the same keys, one entry: the observation after the last action
        log_probs (C,) float32 ours, exploration only: log-prob of each sampled action chunk

Images are observations before action image_offset + f*image_stride (attrs `image_offset`,
default 0, and `image_stride`, 1 = every step, LIBERO's own layout; K = once per action chunk).
Our recordings start at the init state: `states[0]` is what `set_init_state` loads, and the
first `settle_steps` actions (attr) are the no-ops that let objects settle before the policy
acts, so replaying the actions from `states[0]` reproduces the states and the outcome. We store them upright and say so with
macros_image_convention = "opencv"; LIBERO's own files say "opengl" (upside down), and the
reader flips those, so official files load unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Iterator

import h5py
import numpy as np

IMAGE_KEYS = ("agentview_rgb", "eye_in_hand_rgb")
LOWDIM_KEYS = ("ee_states", "ee_pos", "ee_ori", "gripper_states", "joint_states", "success")
UPRIGHT = "opencv"


@dataclasses.dataclass
class RecordedEpisode:
    """One demo_k group. `obs` / `final_obs` map the keys above to arrays."""

    actions: np.ndarray                      # (T, 7) float
    states: np.ndarray                       # (T, S) float64
    rewards: np.ndarray                      # (T,) uint8
    dones: np.ndarray                        # (T,) uint8
    obs: dict[str, np.ndarray]               # images (F, H, W, 3) uint8; low-dim (T, d)
    robot_states: np.ndarray | None = None   # (T, 9)
    final_obs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # each (1, ...)
    log_probs: np.ndarray | None = None      # (C,) float32
    attrs: dict = dataclasses.field(default_factory=dict)  # success, init_index, id, image_stride, ...

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        return bool(self.attrs.get("success", bool(np.asarray(self.rewards).any())))


@dataclasses.dataclass
class TaskFile:
    """A whole file: task-level attributes plus its episodes in demo order."""

    attrs: dict                      # data/ attributes (problem_info decoded to a dict)
    episodes: list[RecordedEpisode]

    @property
    def instruction(self) -> str:
        return self.attrs["problem_info"]["language_instruction"]


def write(path: str | pathlib.Path, attrs: dict, episodes: list[RecordedEpisode],
          compress: bool = True) -> pathlib.Path:
    """Write a task file (atomically: a .tmp file renamed into place)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for key, value in attrs.items():
            data.attrs[key] = json.dumps(value) if isinstance(value, dict) else value
        data.attrs["macros_image_convention"] = UPRIGHT
        data.attrs["num_demos"] = len(episodes)
        data.attrs["total"] = int(sum(len(e) for e in episodes))
        for k, episode in enumerate(episodes):
            _write_episode(data.create_group(f"demo_{k}"), episode, compress)
    tmp.replace(path)
    return path


def _write_episode(group: h5py.Group, episode: RecordedEpisode, compress: bool) -> None:
    for key in ("actions", "states", "rewards", "dones", "robot_states", "log_probs"):
        value = getattr(episode, key)
        if value is not None:
            group.create_dataset(key, data=value)
    _write_obs(group.create_group("obs"), episode.obs, compress)
    if episode.final_obs:
        _write_obs(group.create_group("final_obs"), episode.final_obs, compress)
    group.attrs["num_samples"] = len(episode)
    if len(episode.states):
        group.attrs["init_state"] = episode.states[0]
    for key, value in episode.attrs.items():
        group.attrs[key] = json.dumps(value) if isinstance(value, dict) else value


def _write_obs(group: h5py.Group, obs: dict[str, np.ndarray], compress: bool) -> None:
    for key, value in obs.items():
        if key in IMAGE_KEYS and compress and len(value):
            # one frame per chunk: readers slice frames, and gzip-4 shrinks renders ~3x
            group.create_dataset(key, data=value, chunks=(1, *value.shape[1:]), compression="gzip", compression_opts=4)
        else:
            group.create_dataset(key, data=value)


def read(path: str | pathlib.Path, image_size: int | None = None) -> TaskFile:
    """Read a task file written by `write` or shipped by LIBERO; images upright, optionally resized."""
    with h5py.File(path, "r") as f:
        data = f["data"]
        attrs = {k: _decode(k, v) for k, v in data.attrs.items()}
        flip = attrs.get("macros_image_convention", "opengl") != UPRIGHT
        episodes = [_read_episode(data[name], flip, image_size) for name in _demo_names(data)]
    return TaskFile(attrs, episodes)


def iter_episodes(path: str | pathlib.Path, image_size: int | None = None) -> Iterator[RecordedEpisode]:
    """Episodes one at a time (large files stay out of memory)."""
    with h5py.File(path, "r") as f:
        data = f["data"]
        flip = data.attrs.get("macros_image_convention", "opengl") != UPRIGHT
        for name in _demo_names(data):
            yield _read_episode(data[name], flip, image_size)


def _demo_names(data: h5py.Group) -> list[str]:
    return sorted((k for k in data.keys() if k.startswith("demo_")), key=lambda k: int(k.split("_")[1]))


def _read_episode(group: h5py.Group, flip: bool, image_size: int | None) -> RecordedEpisode:
    get = lambda key: group[key][()] if key in group else None  # noqa: E731
    obs = _read_obs(group["obs"], flip, image_size)
    final = _read_obs(group["final_obs"], flip, image_size) if "final_obs" in group else {}
    attrs = {k: _decode(k, v) for k, v in group.attrs.items() if k not in ("num_samples", "init_state", "model_file")}
    return RecordedEpisode(actions=get("actions"), states=get("states"), rewards=get("rewards"), dones=get("dones"),
                   obs=obs, robot_states=get("robot_states"), final_obs=final, log_probs=get("log_probs"), attrs=attrs)


def _read_obs(group: h5py.Group, flip: bool, image_size: int | None) -> dict[str, np.ndarray]:
    out = {}
    for key in group.keys():
        value = group[key][()]
        if key in IMAGE_KEYS or key.endswith("_rgb"):
            value = resize(value[:, ::-1] if flip else value, image_size)
        out[key] = value
    return out


def resize(frames: np.ndarray, size: int | None) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, size, size, 3) by area averaging (PIL); unchanged if size is None."""
    if size is None or len(frames) == 0 or frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames)
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BOX)) for f in frames])


def _decode(key: str, value):
    if isinstance(value, bytes):
        value = value.decode()
    if key in ("problem_info", "env_args") and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value
