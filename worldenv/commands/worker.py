"""`worldenv worker`: a rollout worker serving the Redis job queue."""
from __future__ import annotations

import contextlib
import logging
import signal
import threading

from worldenv import prometheus
from worldenv.commands import flags
from worldenv.config import WorkerConfig


def register(sub) -> None:
    p = sub.add_parser("worker", help="run a rollout worker: jobs from Redis through Policy -> WorldModel -> Reflector")
    flags.command(p, "worker", WorkerConfig, main)


@contextlib.contextmanager
def open_worker(config: WorkerConfig):
    """Connect to Redis and the three services; yields a ready RolloutWorker."""
    import redis

    from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
    from worldenv.client.queue import RolloutQueue, default_consumer
    from worldenv.client.worker import RolloutWorker
    from worldenv.data.episodes import EpisodeStore

    client = redis.Redis.from_url(config.redis_url)
    kw = {"auth_token": config.auth_token}
    with PolicyClient(config.policy_addr, **kw) as policy, WorldModelClient(config.world_model_addr, **kw) as wm, \
            ReflectorClient(config.reflector_addr, **kw) as reflector:
        yield RolloutWorker(RolloutQueue(client, config.prefix), EpisodeStore(client, config.prefix, config.max_episodes),
                            policy, wm, reflector, batch_size=config.batch_size,
                            consumer=config.consumer or default_consumer(),
                            reclaim_idle_ms=int(config.reclaim_idle_s * 1000), block_ms=config.block_ms)
    client.close()


def main(config: WorkerConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with open_worker(config) as worker, \
            prometheus.serving(worker.metrics.registry, config.metrics_host, config.metrics_port) as endpoint:
        print(f"worker {worker.consumer} serving {config.redis_url} prefix {config.prefix!r} "
              f"(batch {config.batch_size})", flush=True)
        if endpoint is not None:
            print(f"worker metrics on http://{endpoint.host}:{endpoint.port}/metrics", flush=True)
        handled = worker.run(max_jobs=config.max_jobs, stop=stop)
    print(f"worker stopped after {handled} jobs", flush=True)
    return 0
