"""Run one LIBERO episode in an env process of the pool: policy (or expert) chunks until success, a judge, or the horizon.

Termination: `sim` stops at LIBERO's success (the standard protocol); `reflector` stops when a
Reflector's p(done) > eta on the video so far (the paper's setting without ground-truth
termination); the episode then counts as a success if LIBERO's check holds at that moment. The
reflector keeps the video in its own state (a served one, in a session), so each chunk's frame
is sent once.
A crashed env process fails its episode with the reason; it does not end the run.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from worldenv.models.grasp_gate import Verdict, finger_gap
from worldenv.models.roles import Reflector
from worldenv.sim import pool as pool_mod
from worldenv.sim.env import EnvConfig
from worldenv.sim.policies import ActionSource
from worldenv.sim.recording import Recorder


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    config: EnvConfig
    init_index: int
    max_steps: int
    chunk_length: int = 8
    deterministic: bool = False
    record: bool = False            # keep everything for HDF5
    render_each_step: bool = False  # frames at every step (LIBERO's layout) instead of once per chunk
    keep_video: bool = False        # keep the chunk frames for a video
    stop_on_success: bool = True    # False under reflector termination: the judge decides

    @property
    def id(self) -> str:
        return f"{self.config.suite}/{self.config.task}/{self.init_index}"


@dataclasses.dataclass
class EpisodeResult:
    spec: EpisodeSpec
    instruction: str
    success: bool                   # LIBERO's success at the end of the episode
    ever_success: bool              # LIBERO's success at any step
    steps: int
    outcome: str                    # "success" | "reflector" | "horizon" | "crashed: ..." | "error: ..."
    seconds: float
    p_done: list[float] = dataclasses.field(default_factory=list)   # reflector p(done) after each chunk
    video: np.ndarray | None = None                                 # (F, H, W, 3) uint8
    episode: object | None = None                                    # hdf5.RecordedEpisode when recorded

    @property
    def failed_to_run(self) -> bool:
        return self.outcome.startswith(("crashed", "error"))


def run(process: pool_mod.EnvProcess, spec: EpisodeSpec, source: ActionSource,
        judge: Reflector | None = None, eta: float = 0.5, grasp_gate: float = 0.0, confirm: int = 1) -> EpisodeResult:
    """One episode; env failures become a failed result with the reason. With a judge the episode
    ends done by imagination's rule (`grasp_gate.Verdict`): p(done) > eta at `confirm` chunks in a
    row and, with `grasp_gate` > 0 (metres), the real gripper's last closed run holding an object
    that wide after the last of them."""
    started = time.perf_counter()
    try:
        return _run(process, spec, source, judge, eta, started, grasp_gate, confirm)
    except (pool_mod.EnvCrashed, pool_mod.EnvError) as exc:
        kind = "crashed" if isinstance(exc, pool_mod.EnvCrashed) else "error"
        reason = str(exc).strip().splitlines()[-1][:300]
        return EpisodeResult(spec, "", False, False, 0, f"{kind}: {reason}", time.perf_counter() - started)


def _run(process, spec: EpisodeSpec, source: ActionSource, judge: Reflector | None, eta: float,
         started: float, grasp_gate: float = 0.0, confirm: int = 1) -> EpisodeResult:
    instruction = process.call("open", config=spec.config)
    obs = process.call("reset", init_index=spec.init_index, expert=source.in_env, render_each_step=spec.render_each_step)
    recorder = Recorder(spec.config.wrist) if spec.record else None
    if recorder is not None:  # from the init state on, so states[0] replays
        recorder.add(process.call("settle_chunk"))
    frames, p_done, log_probs = [obs.frame], [], []
    steps, ever, outcome = 0, False, "horizon"
    verdict = Verdict(eta, grasp_gate, confirm) if judge is not None else None
    with _Watch(judge, obs.frame, instruction) as watch:
        while steps < spec.max_steps:
            k = min(spec.chunk_length, spec.max_steps - steps)
            chunk, log_prob = _next_chunk(process, source, obs, instruction, spec, k)
            steps += len(chunk.actions)
            ever |= chunk.succeeded
            obs = chunk.obs
            frames.append(obs.frame)
            if log_prob is not None:
                log_probs.append(log_prob)
            if recorder is not None:
                recorder.add(chunk)
            if spec.stop_on_success and chunk.succeeded:
                outcome = "success"
                break
            if verdict is not None:
                p_done.append(watch.observe(obs.frame))
                if verdict.update(p_done[-1], float(chunk.actions[-1, -1]), float(finger_gap(obs.proprio))):
                    outcome = "reflector"
                    break
    success = ever if spec.stop_on_success else obs.success
    result = EpisodeResult(spec, instruction, bool(success), ever, steps, outcome,
                           time.perf_counter() - started, p_done,
                           np.stack(frames) if spec.keep_video else None)
    if recorder is not None:
        result.episode = recorder.episode(_attrs(spec, result, source), log_probs if log_probs else None)
    return result


class _Watch:
    """One episode's video in the reflector's own state (a served reflector's session), from the
    first frame on; ended with the episode. Without a reflector it watches nothing."""

    def __init__(self, reflector: Reflector | None, frame: np.ndarray, instruction: str):
        self.reflector = reflector
        self.state = reflector.start(frame[None], [instruction]) if reflector is not None else None

    def observe(self, frame: np.ndarray) -> float:
        """p(done) of the video so far with `frame` (H, W, 3) appended."""
        p_done, self.state = self.reflector.observe(self.state, frame[None])
        return float(p_done[0])

    def __enter__(self) -> "_Watch":
        return self

    def __exit__(self, *exc) -> None:
        if self.reflector is not None:
            self.reflector.end(self.state)


def _next_chunk(process, source: ActionSource, obs, instruction: str, spec: EpisodeSpec, k: int):
    stop = spec.stop_on_success
    if source.in_env:
        return process.call("expert_chunk", k=k, stop_on_success=stop, render_each_step=spec.render_each_step), None
    out = source.act(obs.frame[None], obs.proprio[None], [instruction], spec.deterministic)
    chunk = process.call("step_chunk", actions=out.actions[0, :k], stop_on_success=stop, render_each_step=spec.render_each_step)
    return chunk, None if out.log_probs is None else float(out.log_probs[0])


def _attrs(spec: EpisodeSpec, result: EpisodeResult, source: ActionSource) -> dict:
    return {"id": spec.id, "suite": spec.config.suite, "task_index": spec.config.task,
            "init_index": spec.init_index, "outcome": result.outcome, "policy": source.name,
            "chunk_length": spec.chunk_length, "image_size": spec.config.image_size,
            "settle_steps": spec.config.settle_steps}
