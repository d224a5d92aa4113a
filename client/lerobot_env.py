"""The imagined env where a LeRobot LIBERO env goes: LeRobot's observation names, one action
per step, and a gymnasium id.

    import gymnasium as gym
    import worldenv.client                       # registers the id (as LeRobot's gym_* packages do)
    env = gym.make("worldenv/ImaginedLibero-v0", bank="starts.npz",
                   world_model="127.0.0.1:50051", reflector="127.0.0.1:50052")
    obs, info = env.reset(seed=0)                # obs["observation.images.image"] (H, W, 3) uint8,
                                                 # obs["observation.state"] (8,) float32; info["task"]
    obs, reward, terminated, truncated, info = env.step(action)   # action (7,): one control step

`world_model` and `reflector` are a service address (host:port), a checkpoint directory, or a
model object (the role interfaces); `bank` a start-bank .npz or a `StartBank`.

Observation keys (`obs_type`): "lerobot" gives the names LeRobot's policies read for LIBERO
(`observation.images.image`, `observation.state`); "pixels_agent_pos" gives what LeRobot's own
LIBERO env returns (`pixels/image`, `agent_pos`), which its `preprocess_observation` renames
to those. Actions (`action_mode`): "step" takes one (A,) action per step, as LeRobot's eval
loop sends them, and imagines the next frame once a chunk of K has been given (the world model
predicts at chunk boundaries; between them the observation stays the last imagined one and the
reward is 0; a policy with n_action_steps = K reads only boundary frames). "chunk" takes the
whole (K, A) chunk per step, as `ImaginedEnv` does.
"""
from __future__ import annotations

import pathlib
from typing import Any

import gymnasium as gym
import numpy as np

from worldenv.client.gym_env import ImaginedEnv
from worldenv.data.start_bank import StartBank

IMAGE, STATE = "observation.images.image", "observation.state"
OBS_TYPES = ("lerobot", "pixels_agent_pos")
ACTION_MODES = ("step", "chunk")


class LeRobotImaginedEnv(gym.Env):
    """`ImaginedEnv` with LeRobot's observation names and, in "step" mode, one action per step."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, env: ImaginedEnv, obs_type: str = "lerobot", action_mode: str = "step",
                 render_mode: str | None = "rgb_array"):
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type: expected one of {OBS_TYPES}, got {obs_type!r}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode: expected one of {ACTION_MODES}, got {action_mode!r}")
        self.env, self.obs_type, self.action_mode = env, obs_type, action_mode
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected 'rgb_array' or None, got {render_mode!r}")
        self.render_mode = render_mode
        chunk, inner = env.action_space, env.observation_space
        self.chunk_length = chunk.shape[0]
        self.action_space = chunk if action_mode == "chunk" else gym.spaces.Box(-1.0, 1.0, chunk.shape[1:], np.float32)
        self.observation_space = self._space(inner["frame"], inner["proprio"])
        self._pending: list[np.ndarray] = []   # the actions of the chunk being given, step mode
        self._last: dict = {}                   # the last imagined observation, ImaginedEnv's keys
        self.task_description = ""

    def _space(self, frame: gym.spaces.Box, proprio: gym.spaces.Box) -> gym.spaces.Dict:
        if self.obs_type == "lerobot":
            return gym.spaces.Dict({IMAGE: frame, STATE: proprio})
        return gym.spaces.Dict({"pixels": gym.spaces.Dict({"image": frame}), "agent_pos": proprio})

    def _rename(self, obs: dict) -> dict:
        """A new observation dict each call (callers keep what they get)."""
        frame, proprio = obs["frame"].copy(), obs["proprio"].copy()
        if self.obs_type == "lerobot":
            return {IMAGE: frame, STATE: proprio}
        return {"pixels": {"image": frame}, "agent_pos": proprio}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self._pending, self._last = [], obs
        self.task_description = info["instruction"]
        return self._rename(obs), {**info, "task": self.task_description, "is_success": False}

    def step(self, action):
        if self.action_mode == "chunk":
            return self._imagine(np.asarray(action, np.float32))
        self._pending.append(np.asarray(action, np.float32))
        if len(self._pending) < self.chunk_length:
            return self._rename(self._last), 0.0, False, False, {"task": self.task_description, "is_success": False}
        chunk, self._pending = np.stack(self._pending), []                        # (K, A)
        return self._imagine(chunk)

    def _imagine(self, chunk: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(chunk)
        self._last = obs
        return self._rename(obs), reward, terminated, truncated, {**info, "task": self.task_description,
                                                          "is_success": bool(terminated)}

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()


def _check(obs_type: str, action_mode: str, render_mode: str | None) -> None:
    if obs_type not in OBS_TYPES:
        raise ValueError(f"obs_type: expected one of {OBS_TYPES}, got {obs_type!r}")
    if action_mode not in ACTION_MODES:
        raise ValueError(f"action_mode: expected one of {ACTION_MODES}, got {action_mode!r}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode: expected 'rgb_array' or None, got {render_mode!r}")


def _role(value: Any, role: str, addr_client, remote_cls) -> tuple[Any, Any]:
    """(role object, close function or None) from an address, a checkpoint directory or an object."""
    if not isinstance(value, (str, pathlib.Path)):
        return value, None
    if pathlib.Path(value).is_dir():
        from worldenv import models          # in-process weights: torch, only when asked for
        return models.load(value, role=role), None
    client = addr_client(str(value)).connect()
    return remote_cls(client), client.close


def make(bank: str | StartBank, world_model: Any, reflector: Any, horizon: int = 16, eta: float = 0.0,
         obs_type: str = "lerobot", action_mode: str = "step", auth_token: str | None = None,
         render_mode: str | None = "rgb_array") -> LeRobotImaginedEnv:
    """The entry point of `registration.LIBERO_ENV_ID` (`gymnasium.make` passes its keyword arguments here)."""
    from worldenv.client.clients import ReflectorClient, WorldModelClient
    from worldenv.client.remote import RemoteReflector, RemoteWorldModel
    _check(obs_type, action_mode, render_mode)        # before any connection is opened
    bank = bank if isinstance(bank, StartBank) else StartBank.load(bank)
    wm, close_wm = _role(world_model, "world_model", lambda a: WorldModelClient(a, auth_token=auth_token),
                         RemoteWorldModel)
    rf, close_rf = _role(reflector, "reflector", lambda a: ReflectorClient(a, auth_token=auth_token), RemoteReflector)
    closers = tuple(c for c in (close_wm, close_rf) if c is not None)
    return LeRobotImaginedEnv(ImaginedEnv(bank, wm, rf, horizon, eta, on_close=closers), obs_type, action_mode,
                              render_mode)
