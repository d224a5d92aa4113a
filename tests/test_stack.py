"""The local stack `worldenv up` runs (real Redis, services and worker processes): supervision."""
from __future__ import annotations

import logging
import os
import signal
import sys
import time

import pytest
import redis

from test_queue import job
from worldenv.rl.queue import RolloutQueue
from worldenv.local import stack as local
from worldenv.data.episodes import EpisodeStore
from worldenv.services.common.memory import ALLOCATOR_ENV


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.1)
    return value


@pytest.fixture
def stack(tmp_path):
    up = local.start(local.StackConfig(home=tmp_path, free_ports=True, workers=1, batch_size=4, reclaim_idle_s=3.0,
                                       backoff_s=0.5, max_episodes=3))
    try:
        yield up
    finally:
        up.stop()


def pending_on(client: redis.Redis, queue: RolloutQueue, consumer: str) -> int:
    consumers = {c["name"]: c["pending"] for c in client.xinfo_consumers(queue.jobs_key, "workers")}
    return consumers.get(consumer.encode(), consumers.get(consumer, 0))


def test_a_killed_worker_is_restarted_and_its_jobs_still_complete(stack, caplog):
    caplog.set_level(logging.WARNING, logger="worldenv.up")
    client = redis.Redis.from_url(stack.redis_url)
    queue = RolloutQueue(client, stack.config.prefix)
    doomed = stack.processes["worker-0"]
    environ = open(f"/proc/{doomed.pid}/environ", "rb").read().decode().split("\0")
    assert all(f"{k}={v}" in environ for k, v in ALLOCATOR_ENV.items()), "the workers get the allocator settings"
    jobs = [job(i, run="supervised", horizon=30, eta=0.999) for i in range(4)]
    for j in jobs:
        queue.enqueue(j)
    wait_for(lambda: pending_on(client, queue, "up-worker-0") == 4, 60, "the worker claims the batch")
    os.kill(doomed.pid, signal.SIGKILL)  # mid-batch: its episodes are 30 steps long

    reborn = wait_for(lambda: (p := stack.processes["worker-0"]).pid != doomed.pid and p.poll() is None and p, 30,
                      "a new worker-0 starts")
    assert doomed.poll() == -signal.SIGKILL
    # the supervisor logs the restart just after it publishes the new process and saves up.json
    wait_for(lambda: any(f"worker-0 restarted (pid {reborn.pid}" in r.getMessage() for r in caplog.records), 10,
             "the restart is logged")
    assert stack.supervisor.restarts == {"worker-0": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"worker-0 (pid {doomed.pid}) exited with code -9" in m for m in messages), messages
    assert "exited with code -9" in (stack.config.home / "logs" / "worker-0.log").read_text()

    results = queue.wait_results("supervised", 4, timeout_s=180)
    assert sorted(r["job_id"] for r in results) == sorted(j.id for j in jobs), "each job completes exactly once"
    store = EpisodeStore(client, stack.config.prefix)
    kept = [m for j in jobs if (m := store.meta(j.id)) is not None]
    assert store.count() == len(kept) == 3, "the workers keep --max-episodes episodes, the oldest dropped"
    assert all(m["status"] == "horizon" and m["steps"] == 30 for m in kept)
    assert queue.pending() == 0
    client.close()


SLOW_TO_STOP = """
import signal, sys, time
log = open(sys.argv[1], "a")
def bye(*_):
    log.write(f"{sys.argv[2]} term {time.time()}\\n"); log.flush()
    time.sleep(1.0)
    log.write(f"{sys.argv[2]} exit {time.time()}\\n"); log.flush()
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
log.write(f"{sys.argv[2]} up {time.time()}\\n"); log.flush()
while True:
    time.sleep(0.05)
"""


def test_stop_takes_the_slowest_child_of_each_tier_not_their_sum(tmp_path):
    """Children that each take 1 s to stop: the workers stop before any service is asked to, the
    services before Redis, and the services stop together (about 3 s in all, not 6)."""
    events = tmp_path / "events"
    (tmp_path / "logs").mkdir()
    up = local.Stack(local.StackConfig(home=tmp_path), "redis://unused", {}, {})
    names = ["redis", "world-model", "reflector", "policy", "debug-api", "worker-0"]
    for name in names:
        up.spawn(name, [sys.executable, "-c", SLOW_TO_STOP, str(events), name])
    wait_for(lambda: events.exists() and events.read_text().count(" up ") == len(names), 30, "children up")
    started = time.monotonic()
    up.stop(timeout_s=10.0)
    took = time.monotonic() - started
    rows = [line.split() for line in events.read_text().splitlines()]
    at = {(name, what): float(t) for name, what, t in rows}
    services = names[1:5]
    assert all(at[(s, "term")] >= at[("worker-0", "exit")] for s in services)
    assert at[("redis", "term")] >= max(at[(s, "exit")] for s in services)
    assert max(at[(s, "term")] for s in services) - min(at[(s, "term")] for s in services) < 0.5
    assert 2.9 < took < 5.0, took
