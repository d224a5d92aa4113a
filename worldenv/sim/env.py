"""One LIBERO env that renders only when an observation is needed.

LIBERO renders two cameras at every physics step by default (~83 ms/step here); physics alone
costs ~9 ms. A policy looks at the scene once per action chunk, so `step_chunk` runs K steps
without cameras and renders once at the end. LIBERO's own success check (the BDDL goal) is read
at every step. Frames come back upright (MuJoCo renders bottom row first).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from worldenv.sim import install, suites

NOOP = np.array([0, 0, 0, 0, 0, 0, -1], np.float32)  # hold still, gripper open
# Std (rad) of the Gaussian noise on each arm joint of a sampled init state. LIBERO's fixed init
# states were made with robosuite's default initialization noise (Gaussian, magnitude 0.02);
# its env turns that noise off, so without this every sampled state started in one exact arm
# pose. Measured over fixed states 0-29 of libero_object task 0: std 0.013-0.022 per joint.
ARM_INIT_NOISE = 0.02


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Which task and how to observe it."""

    suite: str
    task: int
    image_size: int = 64          # square frames, rendered at this size directly
    wrist: bool = False           # also render the eye-in-hand camera
    settle_steps: int = 10        # no-op steps after reset: objects drop onto the table first
    seed: int = 0


@dataclasses.dataclass
class Observation:
    """What a policy sees, plus the low-dim state recorders keep."""

    frame: np.ndarray | None      # (H, W, 3) uint8 agentview, upright; None when not rendered
    wrist: np.ndarray | None      # (H, W, 3) uint8 eye-in-hand, upright
    proprio: np.ndarray           # (8,) float32: eef pos (3), eef axis-angle (3), gripper qpos (2)
    joints: np.ndarray            # (7,) float64 arm joint positions
    state: np.ndarray             # (S,) float64 flattened MuJoCo state
    success: bool                 # LIBERO's goal check on this state


@dataclasses.dataclass
class ChunkResult:
    """Outcome of up to K physics steps. `before[t]` is the observation before action t."""

    actions: np.ndarray           # (k, 7) float32 actions executed (k <= K: stops at success if asked)
    success: np.ndarray           # (k,) bool, LIBERO's success flag after each step
    before: list[Observation]     # k observations before each action (frames only where rendered)
    obs: Observation              # after the last action, rendered (unless step_chunk(render=False))

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """(4,) quaternion x,y,z,w -> (3,) axis * angle, angle in [0, pi] (robosuite's convention)."""
    q = np.asarray(quat_xyzw, np.float64)
    w = np.clip(q[3], -1.0, 1.0)
    s = np.sqrt(max(1.0 - w * w, 0.0))
    if s < 1e-8:
        return np.zeros(3)
    return q[:3] / s * (2.0 * np.arccos(w))


class LiberoEnv:
    """A LIBERO task env with render-once stepping. Lives in one process (see pool.py)."""

    def __init__(self, config: EnvConfig):
        self.config = config
        self.task = suites.task(config.suite, config.task)
        self._init_states = suites.init_states(config.suite, config.task)
        install.prepare()
        from libero.libero.envs import OffScreenRenderEnv
        # Cameras off: robosuite would otherwise render both at every step. We render by hand.
        self._env = OffScreenRenderEnv(bddl_file_name=self.task.bddl_file, use_camera_obs=False,
                                       camera_heights=config.image_size, camera_widths=config.image_size,
                                       ignore_done=True, horizon=100_000)
        self._env.seed(config.seed)
        self._raw: dict = {}

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def inner(self):
        """LIBERO's robosuite env (re-read after reset: reset rebuilds the sim)."""
        return self._env.env

    def reset(self, init_index: int, render: bool = True, render_each_step: bool = False) -> Observation:
        """Load standard init state `init_index`, settle, and observe.

        The settle phase (no-op steps from the init state) is kept as `self.settle`, a chunk
        whose first state is the init state itself: a recording that starts with it replays
        from its `states[0]` the way LIBERO's tools replay (set_init_state, then the actions).
        """
        self._env.reset()
        self._raw = self._env.set_init_state(self.init_state(init_index))
        noops = np.repeat(NOOP[None], self.config.settle_steps, axis=0)
        self.settle = self.step_chunk(noops, stop_on_success=False, render_each_step=render_each_step,
                                      first=self.observe(render=render_each_step))
        return self.settle.obs if render else dataclasses.replace(self.settle.obs, frame=None, wrist=None)

    def init_state(self, init_index: int) -> np.ndarray:
        """LIBERO's fixed init state `init_index` (0-49), or, from 50 on, a new one sampled from
        the task's placement regions with seed `init_index` (the same index, the same state),
        the arm joints perturbed as in LIBERO's own (`ARM_INIT_NOISE`): training data can come
        from those while evaluation keeps all 50 fixed ones."""
        if init_index < 0:
            raise suites.SuiteError(f"init state {init_index} out of range (>= 0)")
        if init_index < len(self._init_states):
            return self._init_states[init_index]
        np.random.seed(init_index % 2**32)  # robosuite's placement samplers draw from numpy's global RNG
        self._env.seed(init_index)
        self._env.reset()
        self._perturb_arm(np.random.default_rng(init_index))
        return self.inner.sim.get_state().flatten()

    def _perturb_arm(self, rng: np.random.Generator) -> None:
        """Arm joints at their rest pose plus N(0, ARM_INIT_NOISE) each, as LIBERO's fixed init
        states have them; the object placements (drawn before, from the global RNG) are unchanged."""
        robot, sim = self.inner.robots[0], self.inner.sim
        joints = robot._ref_joint_pos_indexes
        sim.data.qpos[joints] = robot.init_qpos + rng.normal(0.0, ARM_INIT_NOISE, len(joints))
        sim.data.qvel[robot._ref_joint_vel_indexes] = 0.0
        sim.forward()

    def restore(self, state: np.ndarray, render: bool = True) -> Observation:
        """Load a recorded flattened MuJoCo state (LIBERO's set_init_state) and observe it."""
        self._env.reset()
        self._raw = self._env.set_init_state(np.asarray(state, np.float64))
        return self.observe(render)

    def step(self, action: np.ndarray) -> bool:
        """One physics (policy) step, no rendering. Returns LIBERO's success flag."""
        self._raw, _, done, _ = self._env.step(np.asarray(action, np.float64))
        return bool(done)  # LIBERO's step returns done = _check_success()

    def step_chunk(self, actions: np.ndarray, stop_on_success: bool = True, render_each_step: bool = False,
                   first: Observation | None = None, policy=None, render: bool = True) -> ChunkResult:
        """Run K actions (K, 7), render once at the end (or after each step if asked; not at all
        with `render` False, for a caller that reads only the state).

        `first` is the current observation (already rendered) to head `before`; omitted, it is
        observed again without rendering. `policy()`, if given, replaces each action of the
        chunk by its own (closed-loop scripted control); only K is taken from `actions`."""
        # The one clip of the real side: [-1, 1] is the controller's input range. Policies
        # return raw samples (their log-probs are of those); the world model clips likewise.
        actions = np.clip(np.array(actions, np.float32).reshape(-1, 7), -1.0, 1.0)
        before, flags = [first or self.observe(render=False)], []
        for t in range(len(actions)):
            if policy is not None:
                actions[t] = policy()
            flags.append(self.step(actions[t]))
            if t == len(actions) - 1 or (stop_on_success and flags[-1]):
                break
            before.append(self.observe(render=render_each_step))
        return ChunkResult(actions[: len(flags)], np.array(flags, bool), before, self.observe(render=render))

    def observe(self, render: bool = True) -> Observation:
        raw = self._raw
        proprio = np.concatenate([raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]),
                                  raw["robot0_gripper_qpos"]]).astype(np.float32)
        return Observation(frame=self.render("agentview") if render else None,
                           wrist=self.render("robot0_eye_in_hand") if render and self.config.wrist else None,
                           proprio=proprio, joints=np.asarray(raw["robot0_joint_pos"], np.float64).copy(),
                           state=self.inner.sim.get_state().flatten(), success=bool(self.inner._check_success()))

    def render(self, camera: str) -> np.ndarray:
        """(H, W, 3) uint8 upright image of `camera`."""
        size = self.config.image_size
        image = self.inner.sim.render(camera_name=camera, width=size, height=size)
        return np.ascontiguousarray(image[::-1])

    def close(self) -> None:
        self._env.close()
