"""`worldenv worker`: a rollout worker serving the Redis job queue."""
from __future__ import annotations

import logging
import signal
import threading

from worldenv import prometheus
from worldenv.commands import flags
from worldenv.config import WorkerConfig


def register(sub) -> None:
    p = sub.add_parser("worker", help="run a rollout worker: jobs from Redis through Policy -> WorldModel -> Reflector")
    flags.command(p, "worker", WorkerConfig, main)


def main(config: WorkerConfig) -> int:
    from worldenv.rl.worker import open_worker

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
