"""RL runs that survive their policy servers, over real servers: a policy server killed and
started again mid-run, several replicas kept on one version (a late one catching up from the
weights store), and a run that cannot learn stopping with its cause."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import redis as redis_lib
import torch

from conftest import free_port
from servers import serving
from worldenv import cli, models
from worldenv.client.clients import PolicyClient, PolicyPool, ReflectorClient, WorldModelClient
from worldenv.config import argv
from worldenv.data.episodes import EpisodeStore
from worldenv.data.policy_weights import PolicyWeightsStore
from worldenv.data.start_bank import synthetic_bank
from worldenv.local import probes
from worldenv.rl import progress, trainer
from worldenv.rl.publisher import PolicyUnreachable, Publisher
from worldenv.rl.queue import RolloutQueue
from worldenv.rl.settings import RLConfig
from worldenv.rl.worker import RolloutWorker


def _policy(seed: int):
    torch.manual_seed(seed)
    return models.build("policy")


@pytest.fixture()
def run_files(tmp_path):
    _policy(5).save_pretrained(tmp_path / "policy0")
    synthetic_bank(4).save(tmp_path / "starts.npz")
    return tmp_path


def _config(tmp, redis_url, prefix, policy_addr, out, **over) -> RLConfig:
    base = dict(redis_url=redis_url, prefix=prefix, policy_addr=policy_addr, policy=str(tmp / "policy0"),
                starts=str(tmp / "starts.npz"), out=str(tmp / out), groups=2, group_size=4, horizon=2, eta=0.999,
                epochs=1, minibatch=8, lr=1e-3, timeout=120, min_reward_spread=0.0, policy_timeout_s=30,
                sync_every_s=0.5)
    return RLConfig(**(base | over))


@contextlib.contextmanager
def _worker(redis_client, prefix, policy, max_attempts: int = 3, reclaim_idle_ms: int = 60_000):
    """A rollout worker thread over the world model and reflector it serves, and `policy` (a client)."""
    with serving("world-model") as wm, serving("reflector") as rf, \
            WorldModelClient(wm.address) as wm_client, ReflectorClient(rf.address) as rf_client:
        worker = RolloutWorker.served(RolloutQueue(redis_client, prefix), EpisodeStore(redis_client, prefix), policy,
                                      wm_client, rf_client, batch_size=8, consumer="w", block_ms=100,
                                      max_attempts=max_attempts, reclaim_idle_ms=reclaim_idle_ms)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, kwargs={"stop": stop}, daemon=True)
        thread.start()
        try:
            yield worker
        finally:
            stop.set()
            thread.join(10)


def _served_version(address: str) -> int:
    with PolicyClient(address) as client:
        return int(client.spec.model_version)


def _loc(address: str) -> np.ndarray:
    bank = synthetic_bank(2)
    with PolicyClient(address) as client:
        return client.act(bank.frames, bank.proprio, bank.instructions, deterministic=True).loc


# ---- a policy server killed (kill -9) and started again on its port during a run ---------------

def _start_policy_server(checkpoint, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "worldenv.cli", "serve", "policy", "--host", "127.0.0.1",
                             "--port", str(port), "--checkpoint", str(checkpoint), "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"policy server exited with code {proc.returncode}"
        with contextlib.suppress(Exception):
            probes.check("grpc", f"127.0.0.1:{port}", timeout=1.0)
            return proc
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("policy server did not become healthy")


def _kill_during_iteration(redis_client, prefix: str, run_id: str, it: int, proc_box: list, checkpoint, port: int,
                           seen: dict) -> threading.Thread:
    """Once the jobs of iteration `it` are enqueued, kill -9 the server and start it again."""
    def act():
        pattern = f"{prefix}:job:{run_id}-it{it:04d}-*-00000"     # -<the trainer process's attempt>-
        deadline = time.monotonic() + 120
        while not redis_client.keys(pattern) and time.monotonic() < deadline:
            time.sleep(0.02)
        seen["version_before"] = _served_version(f"127.0.0.1:{port}")
        proc_box[0].kill()
        proc_box[0].wait(10)
        proc_box[0] = _start_policy_server(checkpoint, port)
    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_policy_server_restarted_mid_run_gets_the_weights_back_and_the_run_learns_on(
        run_files, redis_client, redis_url, key_prefix):
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = [_start_policy_server(run_files / "policy0", port)]
    seen: dict = {}
    try:
        with PolicyPool(address) as policy, _worker(redis_client, key_prefix, policy, max_attempts=20,
                                                   reclaim_idle_ms=500):
            killer = _kill_during_iteration(redis_client, key_prefix, "restart", 1, procs, run_files / "policy0",
                                            port, seen)
            summary = trainer.run(_config(run_files, redis_url, key_prefix, address, "restart", iterations=4,
                                          weights_store=False))
            killer.join(120)
        served = _served_version(address)
    finally:
        procs[0].kill()
        procs[0].wait(10)
    rows = summary["rows"]
    assert seen["version_before"] >= 3, "the run had published before the kill"
    # The restart is noticed at the next look: a sync while the iteration collects (the server is
    # back on its checkpoint at version 1 and gets the current weights again), or, when the
    # rollouts had all finished before the kill, the next publish (it gets the new version).
    assert sum(r["restarted_replicas"] for r in rows) == 1, "the trainer noticed the new server instance"
    restarts = [line for r in rows for line in r["republished_to"]]
    assert all("restarted" in line and "version 1)" in line for line in restarts) and len(restarts) <= 1
    assert all(r.get("timesteps") for r in rows[2:]), "the iterations after the restart update"
    assert served == summary["version"] > seen["version_before"], "the served version rose again"
    assert all(r["hopeless_streak"] == 0 or r["no_update_cause"] != "unreachable" for r in rows)


# ---- replicas ----------------------------------------------------------------------------------

def test_every_replica_serves_each_published_version_and_a_late_one_catches_up(
        run_files, redis_client, redis_url, key_prefix):
    store = {"weights_redis_url": redis_url, "weights_prefix": key_prefix, "weights_poll_s": 0.2}
    with serving("policy", model=_policy(1), **store) as a, serving("policy", model=_policy(2), **store) as b:
        addresses = f"{a.address},{b.address}"
        with PolicyPool(addresses) as policy, _worker(redis_client, key_prefix, policy):
            summary = trainer.run(_config(run_files, redis_url, key_prefix, addresses, "replicas", iterations=2))
        rows = summary["rows"]
        assert [(r["replicas"], r["replicas_at_version"]) for r in rows] == [(2, 2), (2, 2)]
        assert all(r.get("timesteps") for r in rows) and summary["version"] == 4   # start sync, two updates
        assert _served_version(a.address) == _served_version(b.address) == summary["version"]
        np.testing.assert_allclose(_loc(a.address), _loc(b.address), rtol=1e-5, atol=1e-6)
        with serving("policy", model=_policy(3), **store) as late:    # started after the run: the store has it
            assert _served_version(late.address) == summary["version"]
            np.testing.assert_allclose(_loc(late.address), _loc(a.address), rtol=1e-5, atol=1e-6)


def test_the_publisher_brings_a_replica_without_a_store_onto_the_current_version(redis_client, key_prefix):
    with serving("policy", model=_policy(1)) as a:
        publisher = Publisher(a.address, PolicyWeightsStore(redis_client, key_prefix), timeout_s=5)
        report = publisher.publish(trainer.weights_bytes(_policy(4)), "test")
        assert (report.replicas, report.at_version, publisher.version) == (1, 1, 2)
        with serving("policy", model=_policy(2)) as late:
            publisher.address = f"{a.address},{late.address}"
            report = publisher.sync()
            assert report.at_version == 2 and len(report.republished) == 1 and "new replica" in report.republished[0]
            assert _served_version(late.address) == publisher.version == 2
            assert publisher.sync().republished == [], "in sync: nothing sent again"
        publisher.close()


def test_a_replica_down_while_a_version_is_published_and_back_later_counts_as_restarted(redis_client, key_prefix):
    port = free_port()
    with serving("policy", model=_policy(1), port=port) as a:
        publisher = Publisher(a.address, PolicyWeightsStore(redis_client, key_prefix), timeout_s=5)
        publisher.publish(trainer.weights_bytes(_policy(4)), "first")
        first = publisher._client(a.address).spec.extra["instance"]
    with pytest.raises(PolicyUnreachable, match="version 3"):      # the only replica is down
        publisher.publish(trainer.weights_bytes(_policy(5)), "second")
    with serving("policy", model=_policy(1), port=port) as back:   # the same address, a new instance, version 1
        report = publisher.sync()
        assert len(report.restarted) == 1 and first not in report.restarted[0]
        assert len(report.republished) == 1 and "restarted" in report.republished[0] and "version 1)" in report.republished[0]
        assert report.at_version == 1 and _served_version(back.address) == publisher.version == 3
        again = publisher.sync()
        assert (again.restarted, again.republished, again.at_version) == ([], [], 1), "noted once"
    publisher.close()


def test_a_policy_server_whose_weights_store_is_down_serves_its_checkpoint():
    with serving("policy", model=_policy(1), weights_redis_url=f"redis://127.0.0.1:{free_port()}/0") as a:
        assert _served_version(a.address) == 1


def test_a_policy_server_refuses_a_negative_weights_version():
    from worldenv.client.errors import ServiceError

    with serving("policy", model=_policy(1)) as a, PolicyClient(a.address) as client:
        with pytest.raises(ServiceError, match="version"):
            client.load_weights(trainer.weights_bytes(_policy(1)), version=-3)
        assert client.load_weights(trainer.weights_bytes(_policy(1)), version=7) == 7
        assert client.refresh_spec().model_version == "7" and client.spec.extra["instance"]


# ---- a run that cannot learn -------------------------------------------------------------------

def test_a_run_whose_rollouts_are_all_stale_exits_non_zero_naming_the_cause(
        run_files, redis_client, redis_url, key_prefix, capsys):
    # The workers act on a policy server the trainer does not publish to: every episode is
    # sampled by weights that are not the trainer's (version 1, below the run's first).
    with serving("policy", model=_policy(1)) as published, serving("policy", model=_policy(2)) as other, \
            PolicyPool(other.address) as policy, _worker(redis_client, key_prefix, policy):
        config = _config(run_files, redis_url, key_prefix, published.address, "hopeless", iterations=6,
                         max_hopeless=2, weights_store=False)
        code = cli.main(["train", "rl", *argv(config)])
    err = capsys.readouterr().err
    assert code != 0
    assert "no usable group in 2 consecutive iterations, cause: stale" in err and "version(s) [1]" in err
    rows = [r for r in redis_lib.Redis.from_url(redis_url).hgetall(f"{key_prefix}:run:hopeless").values()]
    assert len(rows) == 2, "it stopped after the second hopeless iteration"


def test_the_watch_counts_one_cause_in_a_row():
    watch = progress.Watch(limit=2)
    assert watch.see({"no_update_cause": "stale"})["hopeless_streak"] == 1
    assert watch.see({"no_update_cause": "failed"})["hopeless_streak"] == 1, "another cause starts again"
    assert watch.see({"no_update_cause": "no_reward_spread"})["hopeless_streak"] == 0, "learning, not broken"
    watch.see({"no_update_cause": "unreachable"})
    row = watch.see({"no_update_cause": "unreachable", "drop_reason": "no policy replica"})
    with pytest.raises(progress.NoProgress, match="cause: unreachable"):
        watch.check(row)
    assert progress.cause_of(0, 0, {"dropped_stale": 1, "dropped_failed": 3}) == "failed"
    assert progress.cause_of(2, 0, {}) == "no_reward_spread" and progress.cause_of(2, 1, {}) is None
