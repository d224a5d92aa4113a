"""Turn the chunks of one episode into an `hdf5.RecordedEpisode`, and a task into its file
attributes (LIBERO's layout)."""
from __future__ import annotations

import pathlib

import numpy as np

from worldenv.data import hdf5
from worldenv.sim.env import ChunkResult, Observation


def task_attrs(task, env_args: dict | None = None) -> dict:
    """The data/ attributes of a task file (`hdf5.write`) for a `suites.TaskInfo`."""
    from worldenv.sim import install
    install.prepare()  # LIBERO prompts on first import otherwise
    from libero.libero.envs import bddl_utils  # the BDDL header names the problem class
    info = bddl_utils.get_problem_info(task.bddl_file)
    problem = {"problem_name": info["problem_name"], "domain_name": info["domain_name"],
               "language_instruction": task.instruction}
    return {"env_name": task.name, "problem_info": problem, "bddl_file_name": task.bddl_file,
            "bddl_file_content": pathlib.Path(task.bddl_file).read_text(),
            "env_args": env_args or {}, "suite": task.suite, "task_index": task.index}


class Recorder:
    """Collects observations before each action; frames wherever they were rendered."""

    def __init__(self, wrist: bool):
        self.wrist = wrist
        self.actions: list[np.ndarray] = []
        self.before: list[Observation] = []
        self.success: list[bool] = []
        self.last: Observation | None = None

    def add(self, chunk: ChunkResult) -> None:
        self.actions.append(chunk.actions)
        self.before.extend(chunk.before)
        self.success.extend(chunk.success.tolist())
        self.last = chunk.obs

    def episode(self, attrs: dict, log_probs: list[float] | None = None) -> hdf5.RecordedEpisode:
        """The recorded episode; `attrs` gets image_stride and success added."""
        actions = np.concatenate(self.actions).astype(np.float64) if self.actions else np.zeros((0, 7))
        rewards = np.array(self.success, np.uint8)
        dones = np.zeros_like(rewards)
        if len(rewards) and rewards[-1]:
            dones[-1] = 1
        offset, stride = self._image_steps()
        return hdf5.RecordedEpisode(
            actions=actions, states=np.stack([o.state for o in self.before]) if self.before else np.zeros((0, 0)),
            rewards=rewards, dones=dones, obs=self._obs(self.before), robot_states=_robot_states(self.before),
            final_obs=self._obs([self.last]) if self.last is not None else {},
            log_probs=None if log_probs is None else np.asarray(log_probs, np.float32),
            attrs={**attrs, "image_offset": offset, "image_stride": stride, "success": bool(rewards.any())})

    def _image_steps(self) -> tuple[int, int]:
        """(first step with a frame, steps between frames)."""
        rendered = [i for i, o in enumerate(self.before) if o.frame is not None]
        if not rendered:
            return 0, max(len(self.before), 1)
        return rendered[0], rendered[1] - rendered[0] if len(rendered) > 1 else max(len(self.before), 1)

    def _obs(self, observations: list[Observation]) -> dict[str, np.ndarray]:
        proprio = np.stack([o.proprio for o in observations]).astype(np.float64)   # (T, 8)
        out = {"ee_states": proprio[:, :6], "ee_pos": proprio[:, :3], "ee_ori": proprio[:, 3:6],
               "gripper_states": proprio[:, 6:8], "joint_states": np.stack([o.joints for o in observations]),
               "success": np.array([o.success for o in observations], np.uint8),
               "agentview_rgb": np.stack([o.frame for o in observations if o.frame is not None])}
        if self.wrist:
            out["eye_in_hand_rgb"] = np.stack([o.wrist for o in observations if o.wrist is not None])
        return out


def _robot_states(observations: list[Observation]) -> np.ndarray:
    """(T, 9): gripper qpos (2), eef pos (3), eef quat x,y,z,w (4), as LIBERO's robot_states."""
    from scipy.spatial.transform import Rotation
    rows = []
    for o in observations:
        quat = Rotation.from_rotvec(o.proprio[3:6].astype(np.float64)).as_quat()  # x, y, z, w
        rows.append(np.concatenate([o.proprio[6:8], o.proprio[:3], quat]))
    return np.stack(rows) if rows else np.zeros((0, 9))
