"""B imagined episodes as one `gymnasium.vector.VectorEnv`, stepped as one batch.

    env = ImaginedVectorEnv.connect(bank, 8, "127.0.0.1:50051", "127.0.0.1:50052")  # or in-process:
    env = ImaginedVectorEnv(bank, 8, models.load(...), models.load(...))
    obs, info = env.reset(seed=0)                       # obs["frame"] (8, H, W, 3), obs["proprio"] (8, P)
    obs, reward, terminated, truncated, info = env.step(chunks)   # chunks (8, K, A)

Each sub-env starts from a bank entry drawn with its own RNG (seed + i, as gymnasium seeds
SyncVectorEnv's sub-envs), so it behaves exactly like `SyncVectorEnv` over `ImaginedEnv`s; but
one step is one batched WorldModel step and one batched Reflector call. Reward is p(done);
terminated when p(done) > eta (and, with `grasp_gate`, the imagined gripper held something);
truncated at the horizon; finished sub-envs reset on the next step (gymnasium's NEXT_STEP
autoreset: that step ignores their action and returns the reset observation with reward 0).
The sub-envs are rows of one `worldenv.models.imagination.Imagination`, the code the rollout
worker runs.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from worldenv.client.gym_env import spaces
from worldenv.data.start_bank import StartBank
from worldenv.models.imagination import Imagination
from worldenv.models.roles import Reflector, StartStates, WorldModel


class ImaginedVectorEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, bank: StartBank, num_envs: int, world_model: WorldModel, reflector: Reflector,
                 horizon: int = 16, eta: float = 0.0, on_close=(), grasp_gate: float = 0.0):
        self.bank, self.num_envs, self.horizon, self._on_close = bank, num_envs, horizon, on_close
        self.world_model, self.reflector = world_model, reflector
        self.imagination = Imagination(world_model, reflector)
        self.eta = eta or self.imagination.default_eta
        self.grasp_gate = grasp_gate
        spec = world_model.spec
        s, p = spec.image_size, spec.proprio_dim
        self.single_action_space, self.single_observation_space = spaces(spec)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._done = np.zeros(num_envs, bool)           # finished last step: reset on this one
        self._obs = {"frame": np.zeros((num_envs, s, s, 3), np.uint8), "proprio": np.zeros((num_envs, p), np.float32)}

    @classmethod
    def connect(cls, bank: StartBank, num_envs: int, world_model_addr: str, reflector_addr: str,
                horizon: int = 16, eta: float = 0.0, auth_token: str | None = None,
                grasp_gate: float = 0.0) -> "ImaginedVectorEnv":
        """Over a WorldModel and a Reflector service; closing the env closes the channels."""
        from worldenv.client.clients import ReflectorClient, WorldModelClient
        from worldenv.client.remote import RemoteReflector, RemoteWorldModel
        wm = WorldModelClient(world_model_addr, auth_token=auth_token).connect()
        rf = ReflectorClient(reflector_addr, auth_token=auth_token).connect()
        return cls(bank, num_envs, RemoteWorldModel(wm), RemoteReflector(rf), horizon, eta, (wm.close, rf.close),
                   grasp_gate)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rngs = [gym.utils.seeding.np_random(seed + i)[0] for i in range(self.num_envs)]
        self._start(np.arange(self.num_envs))
        return self._copy_obs(), {}

    def _start(self, rows: np.ndarray) -> None:
        """(Re)start sub-envs `rows` from bank entries drawn with their own RNGs."""
        picks = [int(self._rngs[i].integers(len(self.bank))) for i in rows]
        frames = np.stack([self.bank.frames[j] for j in picks])
        proprio = np.stack([self.bank.proprio[j] for j in picks]).astype(np.float32)
        texts = [self.bank.instructions[j] for j in picks]
        starts = np.stack([self.bank.start_frames(j) for j in picks])
        self.imagination.start(StartStates(starts, proprio, texts), self.horizon, self.eta, rows, self.grasp_gate)
        self._done[rows] = False
        self._obs["frame"][rows], self._obs["proprio"][rows] = frames, proprio

    def step(self, actions):
        actions = np.asarray(actions, np.float32)                                  # (B, K, A)
        reward = np.zeros(self.num_envs, np.float64)
        terminated, truncated = np.zeros(self.num_envs, bool), np.zeros(self.num_envs, bool)
        resetting, live = np.flatnonzero(self._done), np.flatnonzero(~self._done)
        if len(resetting):
            self._start(resetting)
        if len(live):
            out = self.imagination.step(live, actions[live])
            reward[live], terminated[live], truncated[live] = out.p_done, out.terminated, out.truncated
            self._obs["frame"][live], self._obs["proprio"][live] = out.prediction.frames, out.prediction.proprio
        self._done = terminated | truncated
        return self._copy_obs(), reward, terminated, truncated, {}

    def _copy_obs(self) -> dict:
        return {k: v.copy() for k, v in self._obs.items()}

    def close_extras(self, **kwargs):
        self.imagination.end()
        for close in self._on_close:
            close()
