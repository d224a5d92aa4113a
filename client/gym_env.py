"""An imagined episode as a Gymnasium environment (action chunks as actions).

Over served models:

    with ImaginedEnv.connect(bank, "127.0.0.1:50051", "127.0.0.1:50052") as env:
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(chunk)   # chunk (K, A) in [-1, 1]

or over models in this process, through the same role interfaces:
`ImaginedEnv(bank, models.load("ckpt/world_model"), models.load("ckpt/reflector"))`.

Observation: {"frame": (H, W, 3) uint8, "proprio": (P,) float32}; the instruction is in `info`.
Reward is the reflector's p(done) after each chunk (the paper's dense reward; the trajectory
reward is its value at termination); `terminated` when p(done) > eta (with `grasp_gate`, only
once the imagined gripper held something: `worldenv.models.grasp_gate`), `truncated` at the horizon.
The episode runs in `worldenv.models.imagination.Imagination`, the same code the rollout
worker runs. For throughput, use the queue and the batched workers; this wrapper serves tools
that speak Gym.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from worldenv.client.clients import ReflectorClient, WorldModelClient
from worldenv.client.remote import RemoteReflector, RemoteWorldModel
from worldenv.data.start_bank import StartBank
from worldenv.models.imagination import Imagination
from worldenv.models.roles import Reflector, StartStates, WorldModel


def spaces(spec) -> tuple[gym.spaces.Box, gym.spaces.Dict]:
    """(action space: one (K, A) chunk in [-1, 1], observation space: frame and proprio) of a
    world model's spec."""
    s, k, a, p = spec.image_size, spec.chunk_length, spec.action_dim, spec.proprio_dim
    frame = gym.spaces.Box(0, 255, (s, s, 3), np.uint8)
    return (gym.spaces.Box(-1.0, 1.0, (k, a), np.float32),
            gym.spaces.Dict({"frame": frame, "proprio": gym.spaces.Box(-np.inf, np.inf, (p,), np.float32)}))


class ImaginedEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, bank: StartBank, world_model: WorldModel, reflector: Reflector, horizon: int = 16,
                 eta: float = 0.0, on_close=(), grasp_gate: float = 0.0):
        self.bank, self.horizon, self._on_close, self.grasp_gate = bank, horizon, on_close, grasp_gate
        self.world_model, self.reflector = world_model, reflector
        self.imagination = Imagination(world_model, reflector)
        self.eta = eta or self.imagination.default_eta
        self.action_space, self.observation_space = spaces(world_model.spec)
        self._running = False
        self._last: np.ndarray | None = None

    @classmethod
    def connect(cls, bank: StartBank, world_model_addr: str, reflector_addr: str, horizon: int = 16,
                eta: float = 0.0, auth_token: str | None = None, grasp_gate: float = 0.0) -> "ImaginedEnv":
        """Over a WorldModel and a Reflector service; closing the env closes the channels."""
        wm = WorldModelClient(world_model_addr, auth_token=auth_token).connect()
        rf = ReflectorClient(reflector_addr, auth_token=auth_token).connect()
        return cls(bank, RemoteWorldModel(wm), RemoteReflector(rf), horizon, eta, on_close=(wm.close, rf.close),
                   grasp_gate=grasp_gate)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start from bank entry `options["start"]`, else one drawn with the env's RNG."""
        super().reset(seed=seed)
        index = int((options or {}).get("start", self.np_random.integers(len(self.bank))))
        frame, proprio = self.bank.frames[index], self.bank.proprio[index].astype(np.float32)
        self.instruction = self.bank.instructions[index]
        self.imagination.start(StartStates(self.bank.start_frames(index)[None], proprio[None], [self.instruction]),
                               self.horizon, self.eta, grasp_gate=self.grasp_gate)
        self._running, self._last = True, frame
        info = {"instruction": self.instruction, "start_id": self.bank.ids[index]}
        return {"frame": frame.copy(), "proprio": proprio}, info  # callers keep what they get

    def step(self, action):
        if not self._running:
            raise RuntimeError("call reset() before step()")
        out = self.imagination.step([0], np.asarray(action, np.float32)[None])   # (1, K, A); the world model clips
        self._last = out.prediction.frames[0]
        reward = float(out.p_done[0])
        obs = {"frame": out.prediction.frames[0].copy(), "proprio": out.prediction.proprio[0].copy()}
        info = {"p_done": reward, "step": self.imagination.t[0]}
        return obs, reward, bool(out.terminated[0]), bool(out.truncated[0]), info

    def render(self):
        return self._last

    def close(self):
        self.imagination.end()
        self._running = False
        for close in self._on_close:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
