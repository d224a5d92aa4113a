"""A toy recorded dataset in the LIBERO HDF5 layout, for training tests without the simulator.

The eef moves by GAIN x each position action per step; the frame shows a bright square where
the eef is (so frames follow the actions) and a goal square; an episode succeeds once the eef
is near the goal. Successful episodes head for the goal; failures wander.
"""
from __future__ import annotations

import pathlib

import numpy as np

from worldenv.data import hdf5

GAIN, SIZE, K = 0.005, 32, 8
INSTRUCTION = "move the gripper to the green square"


GREEN, RED = (40, 200, 60), (200, 40, 60)


def _frame(pos: np.ndarray, goal: np.ndarray, goal_colour=GREEN) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), 40, np.uint8)
    for p, colour in ((goal, goal_colour), (pos, (230, 230, 230))):
        r, c = (np.clip((p[:2] + 0.25) / 0.5, 0, 0.999) * SIZE).astype(int)
        img[max(r - 2, 0):r + 2, max(c - 2, 0):c + 2] = colour
    return img


def episode(rng: np.random.Generator, succeed: bool, steps: int = 40, stride: int = 1,
            goal_colour=GREEN) -> hdf5.RecordedEpisode:
    pos = rng.uniform(-0.1, 0.1, 3)
    goal = pos + rng.choice([-1, 1], 3) * rng.uniform(0.04, 0.12, 3)   # never done at the start
    actions, proprio, frames, success = [], [], [], []
    for t in range(steps):
        done = bool(np.linalg.norm(pos[:2] - goal[:2]) < 0.03)
        proprio.append(np.concatenate([pos, [np.pi, 0, 0], [0.04, -0.04]]))
        frames.append(_frame(pos, goal, goal_colour))
        success.append(done)
        if done:
            break
        direction = (goal - pos) if succeed else rng.normal(0, 1, 3)
        a = np.concatenate([np.clip(direction / max(np.abs(direction).max(), 1e-6), -1, 1), np.zeros(3), [-1.0]])
        actions.append(a)
        pos = pos + GAIN * a[:3]
    if success[-1]:  # the recorder stops on success: the last observation is the final one
        proprio, frames, success = proprio[:-1], frames[:-1], success[:-1]
    final_done = bool(np.linalg.norm(pos[:2] - goal[:2]) < 0.03)
    p = np.stack(proprio)
    obs = {"ee_states": p[:, :6], "ee_pos": p[:, :3], "ee_ori": p[:, 3:6], "gripper_states": p[:, 6:8],
           "joint_states": np.zeros((len(p), 7)), "success": np.array(success, np.uint8),
           "agentview_rgb": np.stack(frames)[::stride]}
    last = np.concatenate([pos, [np.pi, 0, 0], [0.04, -0.04]])[None]
    final = {"ee_states": last[:, :6], "ee_pos": last[:, :3], "ee_ori": last[:, 3:6], "gripper_states": last[:, 6:8],
             "joint_states": np.zeros((1, 7)), "success": np.array([final_done], np.uint8),
             "agentview_rgb": _frame(pos, goal, goal_colour)[None]}
    n = len(actions)
    rewards = np.zeros(n, np.uint8)
    rewards[-1] = final_done
    return hdf5.RecordedEpisode(actions=np.array(actions), states=np.zeros((n, 4)), rewards=rewards, dones=rewards.copy(),
                                obs=obs, final_obs=final, attrs={"image_stride": stride, "success": final_done})


def write(directory: pathlib.Path, successes: int = 8, failures: int = 8, seed: int = 0, stride: int = 1,
          instruction: str = INSTRUCTION, goal_colour=GREEN, name: str = "toy_demo") -> pathlib.Path:
    rng = np.random.default_rng(seed)
    episodes = [episode(rng, i < successes, stride=stride, goal_colour=goal_colour) for i in range(successes + failures)]
    for i, e in enumerate(episodes):
        e.attrs["id"] = f"{name}/0/{i}"
    attrs = {"env_name": "toy", "problem_info": {"problem_name": name, "domain_name": "toy",
                                                 "language_instruction": instruction}}
    return hdf5.write(directory / f"{name}.hdf5", attrs, episodes)
