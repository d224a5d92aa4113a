"""Prometheus metrics, scraped over real HTTP from real servers on free ports: the three model
services (`--metrics-port`), the rollout worker and the debug API's /metrics."""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers import serving
from worldenv import prometheus
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.client.errors import ServiceError
from worldenv.rl.queue import Job, RolloutQueue
from worldenv.rl.worker import RolloutWorker
from worldenv.data.episodes import EpisodeStore
from worldenv.data.start_bank import synthetic_bank

RNG = np.random.default_rng(0)


class Scrape:
    """One scrape of http://host:port/metrics, parsed; `value(sample, **labels)` reads a sample."""

    def __init__(self, url: str):
        reply = httpx.get(url, timeout=10)
        assert reply.status_code == 200, reply.text
        self.samples = [s for family in text_string_to_metric_families(reply.text) for s in family.samples]

    def value(self, name: str, **labels) -> float:
        """The sample `name` whose labels include `labels` (0 when there is none yet)."""
        found = [s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()]
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
        return found[0] if found else 0.0

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


def scrape(server) -> Scrape:
    endpoint = server.service.metrics_endpoint
    return Scrape(f"http://127.0.0.1:{endpoint.port}/metrics")


def frames(b: int, t: int | None = None) -> np.ndarray:
    return RNG.integers(0, 256, (b, 64, 64, 3) if t is None else (b, t, 64, 64, 3), dtype=np.uint8)


def proprio(b: int) -> np.ndarray:
    return RNG.standard_normal((b, 8)).astype(np.float32)


def actions(b: int) -> np.ndarray:
    return RNG.uniform(-1, 1, (b, 8, 7)).astype(np.float32)


def invalid(call) -> None:
    with pytest.raises(ServiceError) as info:
        call()
    assert info.value.code.name == "INVALID_ARGUMENT", info.value


# ---- model services -------------------------------------------------------------------------------

def test_world_model_counts_its_calls_batches_and_sessions():
    with serving("world-model", metrics_port=0) as server, WorldModelClient(server.address) as client:
        ids = client.open(frames(3), proprio(3), ["a", "b", "c"])
        client.step(ids, actions(3))
        client.step(ids[:2], actions(2))
        invalid(lambda: client.step(ids, actions(2)))  # 3 sessions, 2 action chunks
        before_close = scrape(server)
        assert client.close_sessions(ids[:1]) == 1
        m = scrape(server)
    svc = {"service": "world-model"}
    assert m.value("worldenv_rpc_requests_total", method="Open", code="OK", **svc) == 1
    assert m.value("worldenv_rpc_requests_total", method="Step", code="OK", **svc) == 2
    assert m.value("worldenv_rpc_requests_total", method="Step", code="INVALID_ARGUMENT", **svc) == 1
    assert m.value("worldenv_rpc_requests_total", method="Close", code="OK", **svc) == 1
    assert m.value("worldenv_rpc_duration_seconds_count", method="Step", **svc) == 3
    assert m.value("worldenv_rpc_duration_seconds_sum", method="Step", **svc) > 0
    # Only the two valid Steps reached the batcher (Open runs as an exclusive job, not a batch).
    assert m.value("worldenv_batch_items_sum", **svc) == 5
    assert m.value("worldenv_batch_requests_sum", **svc) == 2
    assert m.value("worldenv_batch_queue_seconds_count", **svc) == 2
    assert m.value("worldenv_batch_compute_seconds_count", **svc) == m.value("worldenv_batch_items_count", **svc) == 2
    assert before_close.value("worldenv_sessions_open", **svc) == 3
    assert m.value("worldenv_sessions_open", **svc) == 2
    assert m.value("process_resident_memory_bytes") > 0


def test_merged_batches_report_their_size():
    with serving("world-model", metrics_port=0, max_delay_ms=300, max_batch_size=32) as server, \
            WorldModelClient(server.address) as client:
        groups = [client.open(frames(b), proprio(b), ["x"] * b) for b in (1, 2, 3, 4)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda ids: client.step(ids, actions(len(ids))), groups))
        m = scrape(server)
    merged = {r.timing.batch_requests for r in replies}
    assert max(merged) > 1, "the four concurrent Steps were not merged at all"
    assert m.value("worldenv_batch_items_sum") == 10 and m.value("worldenv_batch_requests_sum") == 4
    assert m.value("worldenv_batch_items_count") < 4  # fewer model calls than requests
    assert m.value("worldenv_batch_queue_seconds_count") == 4


def test_policy_counts_acts_and_reports_its_weights_version():
    import torch
    from safetensors.torch import save

    from worldenv import models

    torch.manual_seed(0)
    served = models.build("policy")  # its own: the load writes into it
    torch.manual_seed(7)
    data = save({k: v.contiguous() for k, v in models.build("policy").state_dict().items()})
    with serving("policy", model=served, metrics_port=0) as server, PolicyClient(server.address) as client:
        client.act(frames(2), proprio(2), ["a", "b"])
        client.act(frames(1), proprio(1), ["a"])
        invalid(lambda: client.act(frames(2), proprio(1), ["a", "b"]))
        before = scrape(server)
        assert client.load_weights(data, note="metrics test") == 2
        after = scrape(server)
    svc = {"service": "policy"}
    assert before.value("worldenv_policy_version", **svc) == 1
    assert after.value("worldenv_policy_version", **svc) == 2
    assert after.value("worldenv_rpc_requests_total", method="Act", code="OK", **svc) == 2
    assert after.value("worldenv_rpc_requests_total", method="Act", code="INVALID_ARGUMENT", **svc) == 1
    assert after.value("worldenv_rpc_requests_total", method="LoadWeights", code="OK", **svc) == 1
    assert after.value("worldenv_batch_items_sum", **svc) == 3
    assert after.value("worldenv_batch_requests_sum", **svc) == 2


def test_reflector_counts_judges_and_two_services_keep_their_own_metrics():
    with serving("reflector", metrics_port=0) as reflector, serving("policy", metrics_port=0) as policy, \
            ReflectorClient(reflector.address) as client:
        client.judge(frames(2, t=3), ["a", "b"])
        client.judge(frames(1, t=2), ["a"])
        invalid(lambda: client.judge(frames(2, t=3), ["only one"]))
        m, other = scrape(reflector), scrape(policy)
    svc = {"service": "reflector"}
    assert m.value("worldenv_rpc_requests_total", method="Judge", code="OK", **svc) == 2
    assert m.value("worldenv_rpc_requests_total", method="Judge", code="INVALID_ARGUMENT", **svc) == 1
    assert m.value("worldenv_batch_items_sum", **svc) == 3
    assert "worldenv_sessions_open" in m.names() and m.value("worldenv_sessions_open", **svc) == 0, \
        "Judge is stateless: it opens no reflector session"
    assert "worldenv_policy_version" not in m.names()
    # The policy's own registry saw none of it.
    assert other.value("worldenv_batch_items_sum") == 0
    assert all(s.labels.get("service") in (None, "policy") for s in other.samples)


def test_metrics_are_off_by_default_and_the_port_is_released_on_stop():
    with serving("reflector") as server:
        assert server.service.metrics_endpoint is None
    with serving("reflector", metrics_port=0) as server:
        port = server.service.metrics_endpoint.port
        assert Scrape(f"http://127.0.0.1:{port}/metrics").value("worldenv_batch_items_count") == 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the metrics port still answers after stop"


# ---- rollout worker -------------------------------------------------------------------------------

def job(i: int, horizon: int = 2) -> Job:
    bank = synthetic_bank(2)
    return Job(id=f"m-{i}", frame=bank.frames[i % 2], proprio=bank.proprio[i % 2], instruction=bank.instructions[i % 2],
               start_id=bank.ids[i % 2], run_id="m", group_id="m-g", horizon=horizon, seed=i + 1, eta=0.999)


def test_worker_counts_episodes_reclaims_and_batch_time(redis_client, key_prefix):
    queue = RolloutQueue(redis_client, key_prefix)
    for i in range(4):
        queue.enqueue(job(i))
    queue.claim("dead", 1, block_ms=10)  # m-0 is left pending by a worker that died
    time.sleep(0.2)
    with serving("world-model") as wm, serving("reflector") as rf, serving("policy") as po, \
            PolicyClient(po.address) as policy, WorldModelClient(wm.address) as world_model, \
            ReflectorClient(rf.address) as reflector:
        worker = RolloutWorker.served(queue, EpisodeStore(redis_client, key_prefix), policy, world_model, reflector,
                               batch_size=8, consumer="alive", reclaim_idle_ms=100, block_ms=200)
        with prometheus.serving(worker.metrics.registry, "127.0.0.1", 0) as endpoint:
            assert worker.run(max_jobs=4) == 4
            m = Scrape(f"http://127.0.0.1:{endpoint.port}/metrics")
    assert m.value("worldenv_worker_episodes_total", status="horizon") == 4  # eta 0.999: none ends early
    assert m.value("worldenv_worker_episodes_total", status="failed") == 0
    assert m.value("worldenv_worker_jobs_reclaimed_total") == 1
    assert m.value("worldenv_worker_batch_seconds_count") >= 1
    assert m.value("worldenv_worker_batch_seconds_sum") > 0


def test_worker_counts_a_given_up_job_as_failed(redis_client, key_prefix):
    queue = RolloutQueue(redis_client, key_prefix)
    queue.enqueue(job(0))
    for _ in range(3):  # three workers took it and died
        queue.claim("crashy", 1, block_ms=10, reclaim_idle_ms=0)
    with serving("world-model") as wm, serving("reflector") as rf, serving("policy") as po, \
            PolicyClient(po.address) as policy, WorldModelClient(wm.address) as world_model, \
            ReflectorClient(rf.address) as reflector:
        worker = RolloutWorker.served(queue, EpisodeStore(redis_client, key_prefix), policy, world_model, reflector,
                               consumer="alive", reclaim_idle_ms=0, block_ms=200)
        worker.run_once()
        with prometheus.serving(worker.metrics.registry, "127.0.0.1", 0) as endpoint:
            m = Scrape(f"http://127.0.0.1:{endpoint.port}/metrics")
    assert m.value("worldenv_worker_episodes_total", status="failed") == 1
    assert m.value("worldenv_worker_jobs_reclaimed_total") == 1
    assert m.value("worldenv_worker_batch_seconds_count") == 0  # nothing was imagined


# ---- debug API -------------------------------------------------------------------------------------

def test_debug_api_counts_requests_by_route_and_status(redis_server, redis_client, key_prefix, tmp_path):
    from test_debug_api import ApiProcess  # the real server: `python -m worldenv.services.debug_api --port 0`

    from worldenv.data import episodes

    EpisodeStore(redis_client, key_prefix).put(episodes.synthetic_episode("kept-1", steps=2, image_size=8, seed=1))
    server = ApiProcess(redis_server, key_prefix, tmp_path / "api.log").wait_ready()  # one GET /healthz, maybe more
    try:
        api = server.http
        ready = Scrape(f"{server.url}/metrics").value("worldenv_http_requests_total", route="/healthz", status="200")
        assert ready >= 1
        assert api.get("/healthz").status_code == 200
        assert api.get("/episodes/kept-1").status_code == 200
        assert api.get("/episodes/kept-2").status_code == 404
        assert api.get("/episodes", params={"limit": 0}).status_code == 422
        assert api.get("/no/such/page").status_code == 404
        m = Scrape(f"{server.url}/metrics")
    finally:
        server.stop()
    count = "worldenv_http_requests_total"
    assert m.value(count, route="/healthz", status="200") == ready + 1
    assert m.value(count, route="/episodes/{episode_id}", status="200") == 1
    assert m.value(count, route="/episodes/{episode_id}", status="404") == 1
    assert m.value(count, route="/episodes", status="422") == 1
    assert m.value(count, route="<unmatched>", status="404") == 1  # raw paths never become labels
    assert m.value(count, route="/metrics", status="200") == 1  # the first scrape; this one is counted after
    assert m.value("worldenv_http_request_duration_seconds_count", route="/episodes/{episode_id}") == 2
    assert m.value("worldenv_http_request_duration_seconds_sum", route="/episodes/{episode_id}") > 0


# ---- the commands: settings to endpoint --------------------------------------------------------------

class Command:
    """`python -m worldenv.cli ARGS` in a subprocess (its log in `log`); its printed lines are read
    until a pattern shows."""

    def __init__(self, args: list[str], env: dict[str, str], log: pathlib.Path):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "worldenv.cli", *args], env={**os.environ, **env},
                                     stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout_s: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no {pattern!r} in the output:\n{''.join(self.lines)}\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.proc.stdout.close()


def test_serve_exposes_metrics_from_the_environment_setting(tmp_path):
    from conftest import free_port

    cmd = Command(["serve", "reflector", "--host", "127.0.0.1", "--port", str(free_port()), "--checkpoint", "none"],
                  {"WORLDENV_METRICS_PORT": "0"}, tmp_path / "serve.log")
    try:
        url = cmd.wait_for(r"reflector metrics on (http://127\.0\.0\.1:\d+/metrics)").group(1)
        m = Scrape(url)
    finally:
        cmd.stop()
    assert "worldenv_batch_items_count" in m.names() and m.value("worldenv_batch_items_count") == 0
    assert m.value("process_resident_memory_bytes") > 0


def test_worker_command_counts_the_episodes_it_runs(redis_url, redis_client, key_prefix, tmp_path):
    queue = RolloutQueue(redis_client, key_prefix)
    cursor = queue.results_cursor()
    with serving("world-model") as wm, serving("reflector") as rf, serving("policy") as po:
        cmd = Command(["worker", "--redis-url", redis_url, "--prefix", key_prefix, "--world-model-addr", wm.address,
                       "--reflector-addr", rf.address, "--policy-addr", po.address, "--block-ms", "100",
                       "--metrics-host", "127.0.0.1", "--metrics-port", "0"], {}, tmp_path / "worker.log")
        try:
            url = cmd.wait_for(r"worker metrics on (http://127\.0\.0\.1:\d+/metrics)").group(1)
            idle = Scrape(url)
            for i in range(3):
                queue.enqueue(job(i))
            assert len(queue.wait_results("m", 3, after=cursor, timeout_s=60)) == 3
            m = Scrape(url)
        finally:
            cmd.stop()
    assert idle.value("worldenv_worker_episodes_total", status="horizon") == 0
    assert m.value("worldenv_worker_episodes_total", status="horizon") == 3
    assert m.value("worldenv_worker_batch_seconds_count") >= 1
