"""The served world model as a Gymnasium environment (one episode, action chunks as actions).

    with ImaginedEnv(bank, "127.0.0.1:50051", "127.0.0.1:50052") as env:
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(chunk)   # chunk (K, A) in [-1, 1]

Observation: {"frame": (H, W, 3) uint8, "proprio": (P,) float32}; the instruction is in `info`.
Reward is the reflector's p(done) after each chunk (the paper's dense reward; the trajectory
reward is its value at termination); `terminated` when p(done) > eta, `truncated` at the horizon.
For throughput, use the queue and the batched workers; this wrapper serves tools that speak Gym.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from worldenv.client.clients import ReflectorClient, WorldModelClient
from worldenv.data.start_bank import StartBank


class ImaginedEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, bank: StartBank, world_model_addr: str, reflector_addr: str, horizon: int = 16,
                 eta: float = 0.0, auth_token: str | None = None):
        self.bank, self.horizon, self.eta = bank, horizon, eta
        self.world_model = WorldModelClient(world_model_addr, auth_token=auth_token).connect()
        self.reflector = ReflectorClient(reflector_addr, auth_token=auth_token).connect()
        spec = self.world_model.spec
        s, k, a, p = spec.image_size, spec.chunk_length, spec.action_dim, spec.proprio_dim
        self.action_space = gym.spaces.Box(-1.0, 1.0, (k, a), np.float32)
        self.observation_space = gym.spaces.Dict({
            "frame": gym.spaces.Box(0, 255, (s, s, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (p,), np.float32)})
        self._session: str | None = None
        self._video: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start from bank entry `options["start"]`, else one drawn with the env's RNG."""
        super().reset(seed=seed)
        self._close_session()
        index = int((options or {}).get("start", self.np_random.integers(len(self.bank))))
        frame, proprio = self.bank.frames[index], self.bank.proprio[index]
        self.instruction = self.bank.instructions[index]
        (self._session,) = self.world_model.open(frame[None], proprio[None], [self.instruction])
        self._video, self._t = [frame], 0
        info = {"instruction": self.instruction, "start_id": self.bank.ids[index]}
        return {"frame": frame.copy(), "proprio": proprio.astype(np.float32)}, info  # callers keep what they get

    def step(self, action):
        if self._session is None:
            raise RuntimeError("call reset() before step()")
        chunk = np.clip(np.asarray(action, np.float32), -1.0, 1.0)[None]        # (1, K, A)
        out = self.world_model.step([self._session], chunk)
        self._video.append(out.frames[0])
        judge = self.reflector.judge(np.stack(self._video)[None], [self.instruction], eta=self.eta)
        self._t += 1
        reward = float(judge.p_done[0])
        terminated, truncated = bool(judge.done[0]), self._t >= self.horizon and not judge.done[0]
        obs = {"frame": out.frames[0].copy(), "proprio": out.proprio[0].copy()}
        return obs, reward, terminated, truncated, {"p_done": reward, "step": self._t}

    def render(self):
        return self._video[-1] if self._video else None

    def _close_session(self) -> None:
        if self._session is not None:
            self.world_model.close_sessions([self._session])
            self._session = None

    def close(self):
        self._close_session()
        self.world_model.close()
        self.reflector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
