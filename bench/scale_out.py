"""Scale-out benchmark: world-model replicas, each its own process with one torch thread, behind
the client's per-pod balancing (sessions open on the replicas in turn and stay there).

(g) Step throughput with 2 replicas vs 1, the same clients and time      (target >= 1.8x)
(h) a bounded load test: many concurrent clients for a fixed time on the 2 replicas, in rounds:
    Step latency p50/p99, errors, and each server's RSS before and after each round (it should
    level off after the first round, not climb)

Usage: .venv/bin/python bench/scale_out.py [--seconds 20] [--clients 4] [--load-clients 16]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import pathlib
import subprocess
import sys
import time

import numpy as np

from worldenv.client.clients import ServiceError, WorldModelClient
from worldenv.local import probes
from worldenv.local.stack import free_port

B, STEPS_PER_EPISODE = 8, 10


def start_replica(checkpoint: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "worldenv.cli", "serve", "world-model", "--host", "127.0.0.1",
                             "--port", str(port), "--threads", "1", "--checkpoint", checkpoint],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            probes.check("grpc", address, timeout=1.0)
            return proc, address
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    proc.kill()
    raise TimeoutError(f"world model at {address} not healthy")


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def episodes(client: WorldModelClient, until: float, seed: int) -> tuple[int, list[float], int]:
    """Episodes of B sessions x STEPS_PER_EPISODE steps until `until`: items stepped, Step latencies (ms), errors."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (B, 64, 64, 3), dtype=np.uint8)
    proprio = rng.standard_normal((B, 8)).astype(np.float32)
    items, latencies, errors = 0, [], 0
    while time.monotonic() < until:
        try:
            ids = client.open(frames, proprio, ["pick up the bowl"] * B)
            for _ in range(STEPS_PER_EPISODE):
                started = time.perf_counter()
                client.step(ids, rng.uniform(-1, 1, (B, 8, 7)).astype(np.float32))
                latencies.append((time.perf_counter() - started) * 1000)
                items += B
            client.close_sessions(ids)
        except ServiceError:
            errors += 1
    return items, latencies, errors


def drive(address: str, clients: int, seconds: float) -> dict:
    """`clients` threads sharing one client (so their sessions alternate over the replicas)."""
    with WorldModelClient(address) as client, concurrent.futures.ThreadPoolExecutor(clients) as pool:
        until = time.monotonic() + seconds
        started = time.perf_counter()
        results = list(pool.map(lambda i: episodes(client, until, i + 1), range(clients)))
        wall = time.perf_counter() - started
    latencies = [ms for _, lat, _ in results for ms in lat]
    return {"items_per_s": sum(r[0] for r in results) / wall, "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)), "errors": sum(r[2] for r in results), "steps": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4, help="client threads for (g)")
    parser.add_argument("--load-clients", type=int, default=16, help="client threads for (h)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the load test (h)")
    parser.add_argument("--checkpoint", default="shipped", help="world-model checkpoint the replicas serve")
    args = parser.parse_args()
    replicas = [start_replica(args.checkpoint) for _ in range(2)]
    try:
        drive(replicas[0][1], 1, 3.0)                                                     # warm-up
        one = drive(replicas[0][1], args.clients, args.seconds)
        both = ",".join(address for _, address in replicas)
        drive(both, 2, 3.0)
        two = drive(both, args.clients, args.seconds)
        print(f"(g) {args.clients} clients x B={B}: 1 replica {one['items_per_s']:.1f} items/s, 2 replicas "
              f"{two['items_per_s']:.1f} items/s -> {two['items_per_s'] / one['items_per_s']:.2f}x (target >= 1.8x)")
        for round_ in range(1, args.rounds + 1):       # the same load again: RSS should level off, not climb
            before = [rss_mb(p.pid) for p, _ in replicas]
            load = drive(both, args.load_clients, args.seconds)
            after = [rss_mb(p.pid) for p, _ in replicas]
            print(f"(h) round {round_}: {args.load_clients} clients for {args.seconds:.0f} s on 2 replicas: "
                  f"{load['steps']} Steps, {load['items_per_s']:.1f} items/s, latency p50 {load['p50']:.0f} ms p99 "
                  f"{load['p99']:.0f} ms, {load['errors']} errors; server RSS "
                  + ", ".join(f"{b:.0f} -> {a:.0f} MB" for b, a in zip(before, after)))
    finally:
        for proc, _ in replicas:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
