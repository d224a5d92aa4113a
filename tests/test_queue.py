"""The Redis Streams queue and the rollout worker against a real Redis and real gRPC servers."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import redis

from servers import serving
from worldenv.rl import rollout
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.rl.queue import Job, RolloutQueue
from worldenv.rl.worker import RolloutWorker
from worldenv.data.episodes import EpisodeStore
from worldenv.data.start_bank import synthetic_bank


def job(i: int, run: str = "r", horizon: int = 3, eta: float = 0.0) -> Job:
    bank = synthetic_bank(2)
    return Job(id=f"{run}-{i}", frame=bank.frames[i % 2], proprio=bank.proprio[i % 2], instruction=bank.instructions[i % 2],
               start_id=bank.ids[i % 2], run_id=run, group_id=f"{run}-g", horizon=horizon, seed=i + 1, eta=eta)


@pytest.fixture
def queue(redis_client, key_prefix):
    return RolloutQueue(redis_client, key_prefix)


@pytest.fixture(scope="module")
def servers():
    with serving("world-model") as wm, serving("reflector") as rf, serving("policy") as po:
        yield {"world_model": wm, "reflector": rf, "policy": po}


@pytest.fixture(scope="module")
def services(servers):
    return {name: server.address for name, server in servers.items()}


@pytest.fixture
def worker_factory(services, redis_client, key_prefix):
    opened = []

    def make(consumer: str, batch_size: int = 4, reclaim_idle_ms: int = 60_000) -> RolloutWorker:
        clients = [PolicyClient(services["policy"]).connect(), WorldModelClient(services["world_model"]).connect(),
                   ReflectorClient(services["reflector"]).connect()]
        opened.extend(clients)
        return RolloutWorker.served(RolloutQueue(redis_client, key_prefix), EpisodeStore(redis_client, key_prefix), *clients,
                             batch_size=batch_size, consumer=consumer, reclaim_idle_ms=reclaim_idle_ms, block_ms=200)

    yield make
    for c in opened:
        c.close()


def test_job_fields_round_trip():
    j = job(3)
    back = Job.from_fields({k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in j.to_fields().items()})
    np.testing.assert_array_equal(back.frame, j.frame)
    np.testing.assert_array_equal(back.proprio, j.proprio)
    assert (back.id, back.instruction, back.horizon, back.seed) == (j.id, j.instruction, j.horizon, j.seed)


def test_enqueue_is_idempotent(queue, redis_client):
    assert queue.enqueue(job(0)) is True
    assert queue.enqueue(job(0)) is False
    assert redis_client.xlen(queue.jobs_key) == 1


def test_unacked_jobs_are_reclaimed_by_another_consumer(queue):
    for i in range(3):
        queue.enqueue(job(i))
    first = queue.claim("dead", 3, block_ms=10)
    assert [c.job.id for c in first] == ["r-0", "r-1", "r-2"]
    assert queue.claim("alive", 3, block_ms=10, reclaim_idle_ms=60_000) == []
    time.sleep(0.3)
    again = queue.claim("alive", 3, block_ms=10, reclaim_idle_ms=200)
    assert sorted(c.job.id for c in again) == ["r-0", "r-1", "r-2"]
    assert all(c.reclaimed and c.attempts == 2 for c in again)


def test_complete_publishes_once_per_job(queue, redis_client):
    queue.enqueue(job(0))
    claimed = queue.claim("w", 1, block_ms=10)[0]
    assert queue.complete(claimed, {"status": "done", "episode_id": "r-0"}) is True
    assert queue.complete(claimed, {"status": "done", "episode_id": "r-0"}) is False
    assert redis_client.xlen(queue.results_key) == 1
    assert queue.pending() == 0


def test_worker_runs_a_batch_and_stores_episodes(queue, worker_factory, redis_client, key_prefix):
    store = EpisodeStore(redis_client, key_prefix)
    cursor = queue.results_cursor()
    for i in range(5):
        queue.enqueue(job(i, horizon=4, eta=0.999))
    worker = worker_factory("w1", batch_size=8)
    assert worker.run(max_jobs=5) == 5
    results = queue.wait_results("r", 5, after=cursor, timeout_s=10)
    assert sorted(r["job_id"] for r in results) == [f"r-{i}" for i in range(5)]
    ep = store.get("r-0")
    assert ep.status == "horizon" and ep.frames.shape == (5, 64, 64, 3) and ep.actions.shape == (4, 8, 7)
    assert ep.p_done.shape == (4,) and ep.log_probs.shape == (4,) and ep.policy_version == 1
    assert len(ep.timings_ms["step"]) == 4 and ep.extra["eta"] == pytest.approx(0.999)
    assert not np.array_equal(ep.frames[0], ep.frames[-1])


def test_episodes_end_when_the_reflector_says_done(queue, worker_factory, redis_client, key_prefix):
    for i in range(3):
        queue.enqueue(job(i, horizon=5, eta=0.01))  # any p_done above 0.01 ends the episode
    worker_factory("w1").run(max_jobs=3)
    store = EpisodeStore(redis_client, key_prefix)
    for i in range(3):
        ep = store.get(f"r-{i}")
        assert ep.status == "done" and ep.done_step == 0 and ep.reward == pytest.approx(float(ep.p_done[0]))
    assert store.rewards("r-0")["eta"] == pytest.approx(0.01)


class ClosingReflector(ReflectorClient):
    """A ReflectorClient that records the sessions it closes."""

    def __init__(self, address: str):
        super().__init__(address)
        self.closed: list[list[str]] = []

    def close_sessions(self, session_ids):
        self.closed.append(list(session_ids))
        return super().close_sessions(session_ids)


def test_worker_rewards_are_judge_on_the_whole_video_and_sessions_close_as_episodes_end(
        queue, servers, services, redis_client, key_prefix):
    """The worker sends only new frames, yet every p_done is what Judge gives the whole video
    batched as before (all episodes still running at that step, in job order), up to float
    rounding: the session caches per-frame features and sums them in another order."""
    horizons = [2, 4, 3, 4]
    for i, horizon in enumerate(horizons):
        queue.enqueue(job(i, run="s", horizon=horizon, eta=0.999))
    reflector = ClosingReflector(services["reflector"]).connect()
    with PolicyClient(services["policy"]) as po, WorldModelClient(services["world_model"]) as wm:
        worker = RolloutWorker.served(queue, EpisodeStore(redis_client, key_prefix), po, wm, reflector, batch_size=4,
                               consumer="w-s", block_ms=200)
        assert worker.run(max_jobs=4) == 4
    episodes = [EpisodeStore(redis_client, key_prefix).get(f"s-{i}") for i in range(4)]
    assert [len(ep.p_done) for ep in episodes] == horizons
    with ReflectorClient(services["reflector"]) as judge:
        for t in range(max(horizons)):
            running = [ep for ep in episodes if len(ep.p_done) > t]
            videos = np.stack([ep.frames[:t + 2] for ep in running])
            p_done = judge.judge(videos, [ep.instruction for ep in running]).p_done
            np.testing.assert_allclose(p_done, [ep.p_done[t] for ep in running], rtol=0, atol=1e-6)
    assert [ep.reward for ep in episodes] == [float(ep.p_done[-1]) for ep in episodes]
    reflector.close()
    assert [len(ids) for ids in reflector.closed[:2]] == [1, 1], "sessions close as their episodes end"
    assert len({sid for ids in reflector.closed for sid in ids}) == 4
    assert len(servers["reflector"].service.sessions) == 0 and len(servers["world_model"].service.sessions) == 0


class ForgettingReflector(ReflectorClient):
    """A ReflectorClient whose server loses the sessions (a restart, the TTL) after their opening."""

    def __init__(self, address: str, server):
        super().__init__(address)
        self.server = server

    def observe(self, session_ids, frames, eta=0.0):
        self.server.service.sessions.close(session_ids)
        return super().observe(session_ids, frames, eta)


def test_a_lost_reflector_session_leaves_the_batch_for_retry(queue, servers, services, redis_client, key_prefix):
    queue.enqueue(job(0, run="lost", horizon=3))
    reflector = ForgettingReflector(services["reflector"], servers["reflector"]).connect()
    with PolicyClient(services["policy"]) as po, WorldModelClient(services["world_model"]) as wm:
        worker = RolloutWorker.served(queue, EpisodeStore(redis_client, key_prefix), po, wm, reflector, batch_size=1,
                               consumer="w-lost", block_ms=200)
        assert worker.run_once() == 1
    reflector.close()
    assert queue.pending() == 1, "the job stays pending, to be reclaimed"
    assert EpisodeStore(redis_client, key_prefix).meta("lost-0") is None
    assert len(servers["world_model"].service.sessions) == 0, "the world-model sessions were closed"


def test_stored_but_unacked_job_is_completed_without_rerun(queue, worker_factory, redis_client, key_prefix):
    queue.enqueue(job(0))
    w = worker_factory("w1", reclaim_idle_ms=100)
    claimed = queue.claim("dead", 1, block_ms=10)[0]
    w.store.put(w.rollout([claimed.job])[0])   # the dead worker stored it, then died before acking
    time.sleep(0.2)
    assert w.run_once() == 1
    assert redis_client.xlen(queue.results_key) == 1 and queue.pending() == 0


def test_job_that_keeps_failing_is_given_up(queue, worker_factory, redis_client, key_prefix):
    queue.enqueue(job(0))
    for _ in range(3):
        queue.claim("crashy", 1, block_ms=10, reclaim_idle_ms=0)
    w = worker_factory("w1", reclaim_idle_ms=0)
    w.run_once()
    ep = EpisodeStore(redis_client, key_prefix).get("r-0")
    assert ep.status == "failed" and "gave up" in ep.error


def test_killed_worker_jobs_are_reclaimed_and_completed_exactly_once(services, redis_url, redis_client, key_prefix,
                                                                     worker_factory):
    queue = RolloutQueue(redis_client, key_prefix)
    jobs = [job(i, run="kill", horizon=40, eta=0.999) for i in range(8)]
    cursor = queue.results_cursor()
    for j in jobs:
        queue.enqueue(j)
    env = dict(os.environ, REDIS_URL=redis_url, WORLDENV_PREFIX=key_prefix)
    proc = subprocess.Popen([sys.executable, "-m", "worldenv.cli", "worker", "--batch-size", "4",
                             "--world-model-addr", services["world_model"], "--reflector-addr", services["reflector"],
                             "--policy-addr", services["policy"], "--consumer", "doomed"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            consumers = {c["name"]: c["pending"] for c in redis_client.xinfo_consumers(queue.jobs_key, "workers")}
            if consumers.get(b"doomed", consumers.get("doomed", 0)) >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the worker never claimed a batch")
        time.sleep(0.5)  # mid-batch: its 40-step episodes are running
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert queue.pending() >= 4, "the killed worker's jobs stay pending"
    survivor = worker_factory("survivor", batch_size=8, reclaim_idle_ms=300)

    def finished() -> int:
        return sum(f[b"run_id"] == b"kill" for _, f in redis_client.xrange(queue.results_key))

    deadline = time.monotonic() + 240
    while finished() < 8 and time.monotonic() < deadline:
        survivor.run_once()
    results = queue.wait_results("kill", 8, after=cursor, timeout_s=5)
    ids = [r["job_id"] for r in results]
    assert sorted(ids) == sorted(j.id for j in jobs) and len(ids) == len(set(ids)) == 8
    assert queue.pending() == 0
    store = EpisodeStore(redis_client, key_prefix)
    assert all(store.meta(j.id)["status"] == "horizon" for j in jobs)


def test_rollout_report_counts_steps_and_latency(services, redis_client, key_prefix, worker_factory):
    import threading

    queue, store = RolloutQueue(redis_client, key_prefix), EpisodeStore(redis_client, key_prefix)
    jobs = rollout.make_jobs(synthetic_bank(2), 6, "rep", horizon=3, group_size=4, eta=0.999)
    assert {j.group_id for j in jobs} == {"rep-g0000", "rep-g0001"}
    stop = threading.Event()
    worker = worker_factory("w", batch_size=8)
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    try:
        report = rollout.run(queue, store, jobs, timeout_s=60)
    finally:
        stop.set()
        thread.join(10)
    assert report.episodes == 6 and report.steps == 18 and report.statuses == {"horizon": 6}
    assert set(report.latency_ms) == {"act", "step", "judge"} and report.episodes_per_s > 0
    assert any("imagined steps/s" in line for line in report.lines())


def test_keyframe_jobs_carry_their_history_through_the_queue_and_the_worker(queue, worker_factory, redis_client,
                                                                             key_prefix):
    bank = synthetic_bank(2)
    history = np.stack([bank.frames[1], bank.frames[0]])                     # (2, H, W, 3), oldest first
    j = Job(id="kf-0", frame=bank.frames[0], proprio=bank.proprio[0], instruction="x", run_id="kf", group_id="kf-g",
            horizon=2, seed=1, eta=0.999, history=history)
    back = Job.from_fields({k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in j.to_fields().items()})
    np.testing.assert_array_equal(back.history, history)
    assert back.start_frames().shape == (3, 64, 64, 3)
    cursor = queue.results_cursor()
    queue.enqueue(j)
    queue.enqueue(job(5, run="kf", horizon=2, eta=0.999))                    # no history, same batch
    assert worker_factory("w-kf", batch_size=4).run(max_jobs=2) == 2
    results = queue.wait_results("kf", 2, after=cursor, timeout_s=10)
    assert {r["status"] for r in results} == {"horizon"}
    assert EpisodeStore(redis_client, key_prefix).get("kf-0").frames.shape == (3, 64, 64, 3)


def test_unreadable_job_entry_is_published_as_failed_not_crashing_the_claim(queue, redis_client):
    """A job whose tensor no array can have (as fuzzing sent over gRPC) fails alone, with its reason."""
    from worldenv.v1 import tensor_pb2

    good, bad = job(0), job(1).to_fields()
    bad["frame"] = tensor_pb2.Tensor(dtype=tensor_pb2.UINT8, shape=[0, 2**40, 2**40]).SerializeToString()
    redis_client.xadd(queue.jobs_key, bad)
    queue.enqueue(good)
    claimed = queue.claim("w", 4, block_ms=10)
    assert [c.job.id for c in claimed] == ["r-0"]
    (_, fields), = redis_client.xrange(queue.results_key)
    result = {k.decode(): v.decode() for k, v in fields.items()}
    assert result["job_id"] == "r-1" and result["run_id"] == "r" and result["status"] == "failed"
    assert "job 'r-1'" in result["error"] and "frame.shape" in result["error"] and "too large" in result["error"]
    assert queue.pending() == 1, "only the readable job is left pending"


def test_a_live_workers_long_episodes_are_not_reclaimed(queue, worker_factory, redis_client):
    """The worker touches its entries every step: only a dead worker's jobs reach the reclaim idle
    time, so that time can be a few step times however long the episodes run."""
    import threading

    for i in range(2):
        queue.enqueue(job(i, horizon=80, eta=0.999))
    worker = worker_factory("alive", batch_size=2)
    started = time.monotonic()
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    stolen = []
    while runner.is_alive():
        stolen += queue.claim("thief", 2, block_ms=10, reclaim_idle_ms=2000)
        time.sleep(0.1)
    runner.join()
    elapsed = time.monotonic() - started
    if elapsed < 3:
        pytest.skip(f"the batch took {elapsed:.1f} s, too little over the 2 s reclaim time to test anything")
    assert stolen == [], f"a live worker's jobs were reclaimed after {elapsed:.1f} s"
    assert redis_client.xlen(queue.results_key) == 2 and queue.pending() == 0


def test_drop_undelivered_deletes_only_a_dead_attempts_unclaimed_jobs(queue, redis_client):
    for i in range(3):
        queue.enqueue(job(i, run="r-it0001-aaaaaa"))          # a killed trainer's attempt
    held = queue.claim("w", 1, block_ms=10)                      # one of them already with a worker
    for i in range(2):
        queue.enqueue(job(i, run="r-it0001-bbbbbb"))          # the restarted trainer's
    queue.enqueue(job(0, run="other-it0001-aaaaaa"))           # another run
    dropped = queue.drop_undelivered(lambda run: run.endswith("-aaaaaa") and run.startswith("r-"))
    assert dropped == 2 and redis_client.xlen(queue.jobs_key) == 4
    rest = queue.claim("w2", 10, block_ms=10)
    assert sorted(c.job.run_id for c in rest) == ["other-it0001-aaaaaa", "r-it0001-bbbbbb", "r-it0001-bbbbbb"]
    assert queue.complete(held[0], {"status": "done"}), "the job a worker held still completes"
    assert queue.drop_undelivered(lambda run: True) == 0, "nothing undelivered is left"


def test_the_wait_for_results_bounds_each_next_result_not_their_sum(queue):
    """Results that keep coming, each within the timeout, are waited for however long they take
    together; a queue that stalls fails after the timeout with what it got."""
    import threading
    cursor = queue.results_cursor()
    for i in range(5):
        queue.enqueue(job(i, run="slow"))
    claimed = queue.claim("slow-worker", 5)
    assert len(claimed) == 5

    def finish(count: int) -> None:
        for c in claimed[:count]:
            time.sleep(0.3)
            queue.complete(c, {"status": "done", "steps": 1, "reward": 0.0, "episode_id": ""})

    started = time.monotonic()
    feeder = threading.Thread(target=finish, args=(5,))
    feeder.start()
    results = queue.wait_results("slow", 5, after=cursor, timeout_s=1.0)
    feeder.join()
    assert len(results) == 5 and time.monotonic() - started > 1.0, "all five arrived, later than one timeout"
    cursor = queue.results_cursor()
    for i in range(5, 8):
        queue.enqueue(job(i, run="stall"))
    claimed = queue.claim("stall-worker", 3)
    feeder = threading.Thread(target=finish, args=(1,))
    feeder.start()
    with pytest.raises(TimeoutError, match=r"1 of 3 results of run 'stall': none new for 1 s"):
        queue.wait_results("stall", 3, after=cursor, timeout_s=1.0)
    feeder.join()
