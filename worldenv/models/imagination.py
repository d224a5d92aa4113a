"""Imagined episodes: the three roles played together, act -> step -> judge -> stop.

This is the one place where that loop is written. `Imagination` holds a batch of running
episodes in a world model and a reflector (in this process or served: `worldenv.client.remote`)
and steps any subset of them; `imagine()` drives one batch with a policy to its end. The rollout
worker, the imagined-success measurement and the gym envs all use them.

    with Imagination(world_model, reflector) as imagination:
        episodes = imagine(policy, imagination, starts, horizon=30, seeds=[1, 2, 3])

An episode ends when the reflector's p(done) > eta (`terminated`; with a grasp gate, only once
the imagined gripper has held something, `worldenv.models.grasp_gate`) or at its horizon
(`truncated`); its states are released as soon as it ends, and whatever is still open when the
`with` block ends (however it ends) is released then.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Sequence

import numpy as np

from worldenv.models.grasp_gate import Verdict, check_layout, finger_gap
from worldenv.models.roles import Observations, Policy, Prediction, Reflector, StartStates, WorldModel

DEFAULT_ETA = 0.5   # the done threshold when neither the caller nor the reflector's spec names one
CALLS = ("act", "step", "judge")


def step_seed(seed: int, t: int) -> int:
    """Per-step sampling seed of an episode (0 stays unseeded)."""
    return 0 if seed == 0 else (seed * 1_000_003 + t + 1) % (2**63 - 1) or 1


def latency_ms(model, started: float) -> float:
    """The latency of `model`'s last call: the client's round trip as a served model's adapter
    recorded it (`last_timing`), else the wall time since `started`."""
    timing = getattr(model, "last_timing", None)
    return float(timing.latency_ms) if timing is not None else (time.perf_counter() - started) * 1000


@dataclasses.dataclass
class Outcome:
    """What one imagined step gave the rows it stepped, in their order."""

    prediction: Prediction
    p_done: np.ndarray          # (b,) float32
    terminated: np.ndarray      # (b,) bool: p_done > the row's eta (and its grasp gate holds)
    truncated: np.ndarray       # (b,) bool: the row's horizon reached, not terminated
    latency_ms: dict[str, float]  # "step", "judge"


class Imagination:
    """Running imagined episodes, one row each: `start` rows from start states, `step` any of
    them with action chunks, `end` them (released at once; ending a row twice costs nothing).

    `quiet` names exceptions to ignore while releasing states (a served model may be the thing
    that failed)."""

    def __init__(self, world_model: WorldModel, reflector: Reflector, quiet: tuple[type[Exception], ...] = ()):
        self.world_model, self.reflector, self.quiet = world_model, reflector, quiet
        self.default_eta = float(reflector.spec.extra.get("eta", DEFAULT_ETA))
        self._states: dict[int, tuple] = {}     # row -> (world-model state, reflector state)
        self.t: dict[int, int] = {}             # row -> steps taken
        self.horizon: dict[int, int] = {}
        self.verdict: dict[int, Verdict] = {}   # row -> its done rule (eta, grasp gate, verdicts in a row)

    def start(self, starts: StartStates, horizon: int | Sequence[int], eta: float | Sequence[float] = 0.0,
              rows: Sequence[int] | None = None, grasp_gate: float | Sequence[float] = 0.0,
              confirm: int | Sequence[int] = 1) -> np.ndarray:
        """Start len(starts) episodes in `rows` (default 0..B-1), ending what ran there; returns the rows.
        starts.frames may carry history (B, T, H, W, 3): the reflector's video begins at the last.
        `grasp_gate` (metres, per row or one for all; 0 = none): a row's verdict counts only once its
        gripper's last closed run held at least that gap (`GraspGate`). `confirm` (per row or one for
        all): a row ends done only after that many chunks in a row with p(done) > eta (`Verdict`)."""
        rows = np.arange(len(starts)) if rows is None else np.asarray(rows, np.int64)
        if np.any(np.asarray(grasp_gate) > 0):
            check_layout(self.world_model.spec)
        n = len(rows)
        etas = np.broadcast_to(np.asarray(eta, np.float64), (n,))
        gates = np.broadcast_to(np.asarray(grasp_gate, np.float64), (n,))
        confirms = np.broadcast_to(np.asarray(confirm, np.int64), (n,))
        verdicts = [Verdict(float(etas[k]) or self.default_eta, float(gates[k]), int(confirms[k])) for k in range(n)]
        self.end(rows)
        first = starts.frames[:, -1] if starts.frames.ndim == 5 else starts.frames
        world = self.world_model.start(starts)
        try:
            videos = self.reflector.start(first, list(starts.instructions))
        except BaseException:
            self._release(self.world_model, world)
            raise
        horizons = np.broadcast_to(np.asarray(horizon), (n,))
        for k, row in enumerate(rows.tolist()):
            self._states[row], self.t[row] = (world[k], videos[k]), 0
            self.horizon[row], self.verdict[row] = int(horizons[k]), verdicts[k]
        return rows

    def step(self, rows: Sequence[int], actions: np.ndarray) -> Outcome:
        """One chunk (b, K, A) for each of `rows`: the world model predicts, the reflector judges.
        Raw samples go in: the world model clips, as the simulator does."""
        rows = [int(r) for r in rows]
        started = time.perf_counter()
        prediction, world = self.world_model.step([self._states[r][0] for r in rows], actions)
        step_ms = latency_ms(self.world_model, started)
        started = time.perf_counter()
        p_done, videos = self.reflector.observe([self._states[r][1] for r in rows], prediction.frames)
        judge_ms = latency_ms(self.reflector, started)
        gaps = finger_gap(prediction.proprio)
        for k, r in enumerate(rows):
            self._states[r], self.t[r] = (world[k], videos[k]), self.t[r] + 1
        terminated = np.array([self.verdict[r].update(float(p_done[k]), float(actions[k, -1, -1]), float(gaps[k]))
                               for k, r in enumerate(rows)], bool)
        truncated = np.array([self.t[r] >= self.horizon[r] for r in rows], bool) & ~terminated
        return Outcome(prediction, np.asarray(p_done, np.float32), terminated, truncated,
                       {"step": step_ms, "judge": judge_ms})

    def end(self, rows: Sequence[int] | None = None) -> None:
        """Release the states of `rows` (default: every row still open): world model, then reflector."""
        ended = [self._states.pop(int(r)) for r in (list(self._states) if rows is None else rows)
                 if int(r) in self._states]
        if ended:
            self._release(self.world_model, [s[0] for s in ended])
            self._release(self.reflector, [s[1] for s in ended])

    def _release(self, model, states: list) -> None:
        try:
            model.end(states)
        except self.quiet:
            pass

    def __enter__(self) -> "Imagination":
        return self

    def __exit__(self, *exc) -> None:
        self.end()


@dataclasses.dataclass
class Episode:
    """What one imagined episode accumulates while it runs."""

    frames: list                # (H, W, 3) uint8, the start frame first
    proprio: list               # (P,) float32
    instruction: str
    actions: list = dataclasses.field(default_factory=list)     # (K, A) as sampled
    log_probs: list = dataclasses.field(default_factory=list)
    p_done: list = dataclasses.field(default_factory=list)
    explored: list = dataclasses.field(default_factory=list)    # bool per chunk: sampled, not the mean
    policy_version: int = 0     # of the policy that sampled the last chunk
    eta: float = 0.0            # the done threshold applied
    done_step: int | None = None
    timings: dict = dataclasses.field(default_factory=lambda: {name: [] for name in CALLS})  # ms per call

    @property
    def done(self) -> bool:
        return self.done_step is not None


def imagine(policy: Policy, imagination: Imagination, starts: StartStates, horizon: int | Sequence[int],
            eta: float | Sequence[float] = 0.0, deterministic: bool = False, seeds: Sequence[int] | None = None,
            on_step: Callable[[], None] | None = None, grasp_gate: float | Sequence[float] = 0.0,
            confirm: int | Sequence[int] = 1, explore: Sequence[Collection[int] | None] | None = None) -> list[Episode]:
    """Imagine len(starts) episodes as one batch until each ends; the batch shrinks to the episodes
    still running. `seeds` (one per episode) seed each step's draw (`step_seed`); none = the
    policy's own RNG. `on_step()` runs before every step (a worker touches its jobs there).
    `grasp_gate`, `confirm`: see `Imagination.start`. `explore` (one entry per episode): the chunks
    (0-based) at which a sampled episode samples, its mean everywhere else (None = every chunk);
    each episode's `explored` says which of its chunks were sampled."""
    if explore is not None and len(explore) != len(starts):
        raise ValueError(f"explore: expected {len(starts)} entries (one per episode), got {len(explore)}")
    flags = np.broadcast_to(np.asarray(deterministic, bool), (len(starts),))
    rows = imagination.start(starts, horizon, eta, grasp_gate=grasp_gate, confirm=confirm)
    first = starts.frames[:, -1] if starts.frames.ndim == 5 else starts.frames
    episodes = [Episode([first[i]], [np.asarray(starts.proprio[i], np.float32)], starts.instructions[i],
                        eta=imagination.verdict[int(r)].eta) for i, r in enumerate(rows)]
    live, t = np.arange(len(episodes)), 0
    while live.size:
        if on_step is not None:
            on_step()
        obs = Observations(np.stack([episodes[i].frames[-1] for i in live]),
                           np.stack([episodes[i].proprio[-1] for i in live]),
                           [episodes[i].instruction for i in live])
        step_seeds = None if seeds is None else [step_seed(seeds[i], t) for i in live]
        mean = [bool(flags[i]) or (explore is not None and explore[i] is not None and t not in explore[i])
                for i in live]
        started = time.perf_counter()
        act = policy.act(obs, mean if explore is not None else deterministic, step_seeds)
        act_ms = latency_ms(policy, started)
        out = imagination.step(rows[live], act.actions)
        for k, i in enumerate(live):
            _record(episodes[i], t, act, out, k, {"act": act_ms, **out.latency_ms})
            episodes[i].explored.append(not mean[k])
        ended = out.terminated | out.truncated
        imagination.end(rows[live[ended]])
        live, t = live[~ended], t + 1
    return episodes


def _record(episode: Episode, t: int, act, out: Outcome, k: int, latency: dict[str, float]) -> None:
    episode.frames.append(out.prediction.frames[k])
    episode.proprio.append(out.prediction.proprio[k])
    episode.actions.append(act.actions[k])
    episode.log_probs.append(act.log_probs[k])
    episode.p_done.append(float(out.p_done[k]))
    episode.policy_version = act.policy_version
    for name in CALLS:
        episode.timings[name].append(latency[name])
    if out.terminated[k]:
        episode.done_step = t
