"""The rollout worker: takes B jobs from the queue and imagines them as one batch.

Per step: Policy.Act(obs[B]) -> WorldModel.Step(actions[B]) -> Reflector.Observe(frames[B]);
the world model and the reflector keep each episode in a session (its memory bank, its video),
so a step sends only the new frames. An episode ends when p(done) > eta or at its horizon, and
the batch shrinks to the episodes still running. Each finished episode is stored, its result
published, and its job acked.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time

import grpc
import numpy as np

from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.client.errors import ServiceError
from worldenv.client.metrics import WorkerMetrics
from worldenv.client.queue import Claimed, Job, RolloutQueue
from worldenv.data.episodes import EpisodeStore, ImaginedEpisode

log = logging.getLogger(__name__)
RETRY_CODES = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)


class _Retry(Exception):
    """The batch could not finish for a reason another attempt may not meet."""


@dataclasses.dataclass
class _Trace:
    """What one episode accumulates while it runs."""

    frames: list            # (H, W, 3) uint8, start frame first
    proprio: list           # (P,) float32
    actions: list = dataclasses.field(default_factory=list)    # (K, A)
    log_probs: list = dataclasses.field(default_factory=list)
    p_done: list = dataclasses.field(default_factory=list)
    policy_version: int = 0
    eta: float = 0.0        # the done threshold applied (the job's, or the reflector's default)
    done_step: int | None = None
    timings: dict = dataclasses.field(default_factory=lambda: {"act": [], "step": [], "judge": []})


def step_seed(seed: int, t: int) -> int:
    """Per-step sampling seed of an episode (0 stays unseeded)."""
    return 0 if seed == 0 else (seed * 1_000_003 + t + 1) % (2**63 - 1) or 1


class RolloutWorker:
    def __init__(self, queue: RolloutQueue, store: EpisodeStore, policy: PolicyClient,
                 world_model: WorldModelClient, reflector: ReflectorClient, batch_size: int = 8,
                 consumer: str = "worker", reclaim_idle_ms: int = 60_000, block_ms: int = 1000,
                 max_attempts: int = 3, metrics: WorkerMetrics | None = None):
        self.queue, self.store = queue, store
        self.metrics = metrics or WorkerMetrics()
        self.policy, self.world_model, self.reflector = policy, world_model, reflector
        self.batch_size, self.consumer = batch_size, consumer
        self.reclaim_idle_ms, self.block_ms, self.max_attempts = reclaim_idle_ms, block_ms, max_attempts
        self._running: list[str] = []  # stream entries of the batch being imagined, touched every step

    def run(self, max_jobs: int = 0, stop: threading.Event | None = None) -> int:
        """Serve jobs until `stop` is set or `max_jobs` are done; returns jobs handled."""
        handled = 0
        while not (stop and stop.is_set()) and not (max_jobs and handled >= max_jobs):
            handled += self.run_once()
        return handled

    def run_once(self) -> int:
        claimed = self.queue.claim(self.consumer, self.batch_size, self.block_ms, self.reclaim_idle_ms)
        self.metrics.reclaimed.inc(sum(c.reclaimed for c in claimed))
        runnable = []
        for c in claimed:
            stored = self.store.meta(c.job.id)
            if stored is not None:  # stored by a worker that died before acking
                self.queue.complete(c, self._result(stored))
            elif c.attempts > self.max_attempts:
                self._finish(c, self._failed(c.job, f"gave up after {c.attempts - 1} attempts"))
            else:
                runnable.append(c)
        if runnable:
            self._running = [c.entry_id for c in runnable]
            try:
                with self.metrics.batch_seconds.time():
                    episodes = self.rollout([c.job for c in runnable])
            except _Retry as exc:  # left pending: reclaimed by a worker after the idle time
                log.warning("batch of %d left for retry: %s", len(runnable), exc)
                self.metrics.retries.inc()
                return len(claimed)
            finally:
                self._running = []
            for c, episode in zip(runnable, episodes):
                self._finish(c, episode)
        return len(claimed)

    def _finish(self, claimed: Claimed, episode: ImaginedEpisode) -> None:
        self.store.put(episode)
        self.metrics.episodes.labels(episode.status).inc()
        self.queue.complete(claimed, self._result(self.store.meta(episode.id) or {}))

    @staticmethod
    def _result(meta: dict) -> dict:
        keys = ("status", "reward", "steps", "done_step", "policy_version", "error")
        return {k: "" if meta.get(k) is None else meta.get(k) for k in keys} | {"episode_id": meta.get("id", "")}

    def rollout(self, jobs: list[Job]) -> list[ImaginedEpisode]:
        """Imagine every job as one batch; a failing service fails the batch's episodes with the
        reason, except a lost session or server (a pod scaled away), which is retried."""
        try:
            return self._imagine(jobs)
        except (ServiceError, ValueError) as exc:
            if isinstance(exc, ServiceError) and exc.code in RETRY_CODES:
                raise _Retry(str(exc)) from exc
            log.warning("batch of %d failed: %s", len(jobs), exc)
            return [self._failed(job, str(exc)) for job in jobs]

    def _imagine(self, jobs: list[Job]) -> list[ImaginedEpisode]:
        traces = [_Trace([j.frame], [np.asarray(j.proprio, np.float32)]) for j in jobs]
        instructions = [j.instruction for j in jobs]
        with contextlib.ExitStack() as opened:  # closes what is still open however the batch ends
            world = self._open(opened, self.world_model, _start_frames(jobs),
                               np.stack([t.proprio[0] for t in traces]), instructions)
            videos = self._open(opened, self.reflector, np.stack([t.frames[0] for t in traces]), instructions)
            active, t = np.arange(len(jobs)), 0
            while active.size:
                still = self._advance(jobs, traces, (world, videos), active, t)
                ended = np.setdiff1d(active, still)
                for client, ids in ((self.world_model, world), (self.reflector, videos)):
                    _close(client, [ids[i] for i in ended])
                active, t = still, t + 1
        return [self._episode(job, trace) for job, trace in zip(jobs, traces)]

    @staticmethod
    def _open(opened: contextlib.ExitStack, client, *starts) -> list[str]:
        """Open one session per job on `client` (world model or reflector), closed when `opened` exits."""
        ids = client.open(*starts)
        opened.callback(_close, client, ids)
        return ids

    def _advance(self, jobs, traces, sessions: tuple[list[str], list[str]], active: np.ndarray, t: int) -> np.ndarray:
        """One imagined step of the active episodes; returns those still running."""
        self.queue.touch(self.consumer, self._running)
        frames = np.stack([traces[i].frames[-1] for i in active])          # (b, H, W, 3)
        proprio = np.stack([traces[i].proprio[-1] for i in active])        # (b, P)
        instr = [jobs[i].instruction for i in active]
        act = self.policy.act(frames, proprio, instr, deterministic=jobs[active[0]].deterministic,
                              seed=[step_seed(jobs[i].seed, t) for i in active])
        # Raw samples, as their log-probs are of them: the world model clips, as the simulator does.
        world, videos = sessions
        step = self.world_model.step([world[i] for i in active], act.actions)
        for k, i in enumerate(active):
            tr = traces[i]
            tr.frames.append(step.frames[k]); tr.proprio.append(step.proprio[k])
            tr.actions.append(act.actions[k]); tr.log_probs.append(act.log_probs[k])
            tr.policy_version = act.policy_version
        judge = self.reflector.observe([videos[i] for i in active], step.frames)  # videos of t+2 frames
        still = []
        for k, i in enumerate(active):
            tr, eta = traces[i], jobs[i].eta or judge.eta
            tr.eta = eta
            tr.p_done.append(float(judge.p_done[k]))
            for name, timing in (("act", act.timing), ("step", step.timing), ("judge", judge.timing)):
                tr.timings[name].append(timing.latency_ms)
            if judge.p_done[k] > eta:
                tr.done_step = t
            elif t + 1 < jobs[i].horizon:
                still.append(i)
        return np.asarray(still, dtype=np.int64)

    @staticmethod
    def _episode(job: Job, tr: _Trace) -> ImaginedEpisode:
        steps = len(tr.actions)
        return ImaginedEpisode(
            id=job.id, status="done" if tr.done_step is not None else "horizon", policy_version=tr.policy_version,
            instruction=job.instruction, start_id=job.start_id, group_id=job.group_id, run_id=job.run_id,
            done_step=tr.done_step, reward=tr.p_done[-1] if tr.p_done else 0.0,
            frames=np.stack(tr.frames), actions=np.stack(tr.actions).astype(np.float32),
            log_probs=np.asarray(tr.log_probs, np.float32), p_done=np.asarray(tr.p_done, np.float32),
            proprio=np.stack(tr.proprio).astype(np.float32), timings_ms=tr.timings, created_at=time.time(),
            extra={"horizon": job.horizon, "seed": job.seed, "eta": tr.eta, "steps": steps})

    @staticmethod
    def _failed(job: Job, reason: str) -> ImaginedEpisode:
        return ImaginedEpisode(id=job.id, status="failed", policy_version=0, instruction=job.instruction,
                       start_id=job.start_id, group_id=job.group_id, run_id=job.run_id,
                       frames=np.asarray(job.frame)[None], actions=np.zeros((0, 0, 0), np.float32), log_probs=np.zeros(0, np.float32),
                       p_done=np.zeros(0, np.float32), proprio=np.asarray(job.proprio, np.float32)[None],
                       timings_ms={"act": [], "step": [], "judge": []}, created_at=time.time(), error=reason)


def _close(client, session_ids: list[str]) -> None:
    """Close sessions of ended episodes; ids already closed cost no call."""
    if session_ids:
        with contextlib.suppress(ServiceError):  # the server may be the thing that failed
            client.close_sessions(session_ids)


def _start_frames(jobs: list[Job]) -> np.ndarray:
    """(B, H, W, 3) start frames, or (B, T, H, W, 3) when jobs bring history (keyframe starts);
    shorter histories are padded with their oldest frame, as the world model pads."""
    if all(j.history is None for j in jobs):
        return np.stack([j.frame for j in jobs])
    stacks = [j.start_frames() for j in jobs]
    t = max(len(f) for f in stacks)
    return np.stack([np.concatenate([np.repeat(f[:1], t - len(f), axis=0), f]) for f in stacks])
