"""The rollout worker: takes B jobs from the queue and imagines them as one batch.

The batch runs through `worldenv.models.imagination` over the three served models (their
`worldenv.client.remote` adapters): Policy.Act -> WorldModel.Step -> Reflector.Observe per step,
the world model and the reflector keeping each episode in a session, the batch shrinking to the
episodes still running. The worker adds the queue: it touches its jobs every step, stores each
finished episode (with every call's latency and the policy version that sampled it), publishes
its result and acks its job; a lost session or server (NOT_FOUND, UNAVAILABLE) leaves the batch
pending for another attempt.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time

import grpc
import numpy as np

from worldenv.client.clients import PolicyClient, PolicyPool, ReflectorClient, WorldModelClient
from worldenv.client.errors import ServiceError
from worldenv.client.remote import RemotePolicy, RemoteReflector, RemoteWorldModel
from worldenv.config import WorkerConfig
from worldenv.data.episodes import EpisodeStore, ImaginedEpisode
from worldenv.models.imagination import Episode, Imagination, imagine
from worldenv.models.roles import Policy, Reflector, StartStates, WorldModel
from worldenv.rl.queue import Claimed, Job, RolloutQueue
from worldenv.rl.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)
RETRY_CODES = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)


class _Retry(Exception):
    """The batch could not finish for a reason another attempt may not meet."""


class RolloutWorker:
    def __init__(self, queue: RolloutQueue, store: EpisodeStore, policy: Policy, world_model: WorldModel,
                 reflector: Reflector, batch_size: int = 32, consumer: str = "worker", reclaim_idle_ms: int = 60_000,
                 block_ms: int = 1000, max_attempts: int = 3, metrics: WorkerMetrics | None = None):
        self.queue, self.store = queue, store
        self.metrics = metrics or WorkerMetrics()
        self.policy, self.world_model, self.reflector = policy, world_model, reflector
        self.batch_size, self.consumer = batch_size, consumer
        self.reclaim_idle_ms, self.block_ms, self.max_attempts = reclaim_idle_ms, block_ms, max_attempts
        self._running: list[str] = []  # stream entries of the batch being imagined, touched every step

    @classmethod
    def served(cls, queue: RolloutQueue, store: EpisodeStore, policy: PolicyClient | PolicyPool,
               world_model: WorldModelClient,
               reflector: ReflectorClient, **options) -> "RolloutWorker":
        """A worker over the three services, through their role adapters."""
        return cls(queue, store, RemotePolicy(policy), RemoteWorldModel(world_model), RemoteReflector(reflector),
                   **options)

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
        for c, stored in zip(claimed, self.store.metas([c.job.id for c in claimed])):
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
        stored = self.store.put(episode)
        self.metrics.episodes.labels(episode.status).inc()
        meta = episode.meta() if stored else self.store.meta(episode.id)  # else: another attempt's
        self.queue.complete(claimed, self._result(meta or {}))

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
        starts = StartStates(_start_frames(jobs), np.stack([np.asarray(j.proprio, np.float32) for j in jobs]),
                             [j.instruction for j in jobs])
        with Imagination(self.world_model, self.reflector, quiet=(ServiceError,)) as imagination:
            episodes = imagine(self.policy, imagination, starts, [j.horizon for j in jobs], [j.eta for j in jobs],
                               deterministic=jobs[0].deterministic, seeds=[j.seed for j in jobs],
                               on_step=lambda: self.queue.touch(self.consumer, self._running),
                               grasp_gate=[j.grasp_gate for j in jobs], confirm=[j.confirm for j in jobs])
        return [self._episode(job, episode) for job, episode in zip(jobs, episodes)]

    @staticmethod
    def _episode(job: Job, tr: Episode) -> ImaginedEpisode:
        steps = len(tr.actions)
        return ImaginedEpisode(
            id=job.id, status="done" if tr.done_step is not None else "horizon", policy_version=tr.policy_version,
            instruction=job.instruction, start_id=job.start_id, group_id=job.group_id, run_id=job.run_id,
            done_step=tr.done_step, reward=tr.p_done[-1] if tr.p_done else 0.0,
            frames=np.stack(tr.frames), actions=np.stack(tr.actions).astype(np.float32),
            log_probs=np.asarray(tr.log_probs, np.float32), p_done=np.asarray(tr.p_done, np.float32),
            proprio=np.stack(tr.proprio).astype(np.float32), timings_ms=tr.timings, created_at=time.time(),
            extra={"horizon": job.horizon, "seed": job.seed, "eta": tr.eta, "grasp_gate": job.grasp_gate,
                   "confirm": job.confirm,
                   "steps": steps})

    @staticmethod
    def _failed(job: Job, reason: str) -> ImaginedEpisode:
        return ImaginedEpisode(id=job.id, status="failed", policy_version=0, instruction=job.instruction,
                       start_id=job.start_id, group_id=job.group_id, run_id=job.run_id,
                       frames=np.asarray(job.frame)[None], actions=np.zeros((0, 0, 0), np.float32), log_probs=np.zeros(0, np.float32),
                       p_done=np.zeros(0, np.float32), proprio=np.asarray(job.proprio, np.float32)[None],
                       timings_ms={"act": [], "step": [], "judge": []}, created_at=time.time(), error=reason)


def _start_frames(jobs: list[Job]) -> np.ndarray:
    """(B, H, W, 3) start frames, or (B, T, H, W, 3) when jobs bring history (keyframe starts);
    shorter histories are padded with their oldest frame, as the world model pads."""
    if all(j.history is None for j in jobs):
        return np.stack([j.frame for j in jobs])
    stacks = [j.start_frames() for j in jobs]
    t = max(len(f) for f in stacks)
    return np.stack([np.concatenate([np.repeat(f[:1], t - len(f), axis=0), f]) for f in stacks])


@contextlib.contextmanager
def open_worker(config: WorkerConfig):
    """Connect to Redis and the three services as `config` says; yields a ready RolloutWorker."""
    import redis

    from worldenv.rl.queue import default_consumer

    client = redis.Redis.from_url(config.redis_url)
    kw = {"auth_token": config.auth_token}
    with PolicyPool(config.policy_addr, **kw) as policy, WorldModelClient(config.world_model_addr, **kw) as wm, \
            ReflectorClient(config.reflector_addr, **kw) as reflector:
        yield RolloutWorker.served(RolloutQueue(client, config.prefix),
                                   EpisodeStore(client, config.prefix, config.max_episodes), policy, wm, reflector,
                                   batch_size=config.batch_size, consumer=config.consumer or default_consumer(),
                                   reclaim_idle_ms=int(config.reclaim_idle_s * 1000), block_ms=config.block_ms)
    client.close()
