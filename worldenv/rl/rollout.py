"""Rollouts through the queue: jobs made from a start-state bank (LOOP groups), enqueued, waited
for, and measured (episodes/s, imagined steps/s, per-call latency)."""
from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable

import numpy as np

from worldenv.data.episodes import EpisodeStore
from worldenv.data.start_bank import StartBank, synthetic_bank
from worldenv.rl.queue import Job, RolloutQueue
from worldenv.rl.settings import RolloutOptions


@dataclasses.dataclass
class RolloutReport:
    run_id: str
    episodes: int
    wall_s: float
    steps: int                               # imagined action chunks over all episodes
    statuses: dict[str, int]
    latency_ms: dict[str, tuple[float, float]]  # call -> (p50, p99) client latency
    mean_reward: float
    episode_ids: list[str]

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.wall_s if self.wall_s else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s if self.wall_s else 0.0

    def lines(self) -> list[str]:
        lat = ", ".join(f"{k} p50 {p50:.1f} ms p99 {p99:.1f} ms" for k, (p50, p99) in self.latency_ms.items())
        status = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        return [f"run {self.run_id}: {self.episodes} episodes in {self.wall_s:.1f} s ({status})",
                f"episodes/s {self.episodes_per_s:.2f}  imagined steps/s {self.steps_per_s:.1f}  "
                f"mean reward {self.mean_reward:.3f}",
                f"per-call latency: {lat}"]


def make_jobs(bank: StartBank, episodes: int, run_id: str, horizon: int, group_size: int,
              seed: int = 1, eta: float = 0.0, grasp_gate: float = 0.0, confirm: int = 1) -> list[Job]:
    """`episodes` jobs; each start state gets `group_size` rollouts sharing a group id (LOOP groups)."""
    jobs = []
    for n in range(episodes):
        g = n // group_size
        s = g % len(bank)
        jobs.append(Job(id=f"{run_id}-{n:05d}", frame=bank.frames[s], proprio=bank.proprio[s],
                        instruction=bank.instructions[s], start_id=bank.ids[s], run_id=run_id,
                        group_id=f"{run_id}-g{g:04d}", horizon=horizon, seed=seed * 100_003 + n + 1 if seed else 0,
                        eta=eta, grasp_gate=grasp_gate, confirm=confirm, history=None if bank.history is None else bank.history[s]))
    return jobs


def run(queue: RolloutQueue, store: EpisodeStore, jobs: list[Job], timeout_s: float = 600.0,
        on_wait: Callable[[], None] | None = None) -> RolloutReport:
    """Enqueue `jobs` (one run id), wait for all their results (calling `on_wait` between
    reads), and summarise."""
    run_id = jobs[0].run_id
    cursor = queue.results_cursor()
    started = time.perf_counter()
    queue.enqueue_many(jobs)
    results = queue.wait_results(run_id, len(jobs), after=cursor, timeout_s=timeout_s, on_wait=on_wait)
    wall = time.perf_counter() - started
    latencies: dict[str, list[float]] = {"act": [], "step": [], "judge": []}
    for r in results:
        meta = store.meta(r["episode_id"]) if r.get("episode_id") else None  # timings only: no frames read
        for name, values in (meta["timings_ms"].items() if meta else ()):
            latencies.setdefault(name, []).extend(values)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    rewards = [float(r["reward"]) for r in results if r.get("reward") not in ("", None)]
    return RolloutReport(
        run_id=run_id, episodes=len(results), wall_s=wall, steps=sum(int(r["steps"] or 0) for r in results),
        statuses=statuses, mean_reward=float(np.mean(rewards)) if rewards else 0.0,
        latency_ms={k: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for k, v in latencies.items() if v},
        episode_ids=[r["episode_id"] for r in results])


def new_run_id() -> str:
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def request(redis_url: str, prefix: str, episodes: int, options: RolloutOptions,
            run_id: str | None = None) -> RolloutReport:
    """Enqueue `episodes` imagined episodes as `options` say, wait for them; returns the RolloutReport."""
    import redis

    bank = _start_bank(options, episodes)
    jobs = make_jobs(bank, episodes, run_id or new_run_id(), options.horizon, options.group_size, options.seed,
                     options.eta, options.grasp_gate, options.confirm)
    print(f"enqueued {len(jobs)} episodes from {len(bank)} start states ({bank.meta.get('source', options.starts)}) "
          f"on {redis_url}", flush=True)
    client = redis.Redis.from_url(redis_url)
    return run(RolloutQueue(client, prefix), EpisodeStore(client, prefix), jobs, options.timeout)


def default_starts() -> str | None:
    """The start bank the stack serves: the one a running `worldenv up` recorded (None there =
    synthetic start states), else the shipped keyframes, else None."""
    from worldenv import checkpoints, home

    recorded = home.stack()
    if recorded is not None and "starts" in recorded:
        return recorded["starts"]
    shipped = checkpoints.starts()
    return str(shipped) if shipped else None


def _start_bank(options: RolloutOptions, episodes: int) -> StartBank:
    """--starts, else the bank the stack serves (`default_starts`), else synthetic start states:
    one per group of rollouts."""
    path = options.starts or default_starts()
    if path:
        return StartBank.load(path)
    return synthetic_bank(n=max(1, -(-episodes // options.group_size)))
