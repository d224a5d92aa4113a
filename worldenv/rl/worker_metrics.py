"""Prometheus metrics of one rollout worker, in a registry of their own.

- worldenv_worker_episodes_total{status}    counter: episodes stored: done, horizon or failed
- worldenv_worker_jobs_reclaimed_total      counter: jobs taken over from a worker that went quiet
- worldenv_worker_batch_retries_total       counter: batches left pending for a retry (lost session or server)
- worldenv_worker_batch_seconds             histogram: wall time of one imagined batch
- process_* (CPU, resident memory, open files) of the worker process
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

from worldenv.prometheus import LATENCY_BUCKETS, new_registry

# A batch runs up to its horizon of Act -> Step -> Judge rounds: seconds to many minutes.
BATCH_BUCKETS = LATENCY_BUCKETS + (120.0, 300.0, 600.0, 1800.0)


class WorkerMetrics:
    def __init__(self):
        self.registry = reg = new_registry()
        self.episodes = Counter("worldenv_worker_episodes", "Episodes stored, by status (done, horizon, failed)",
                                ["status"], registry=reg)
        self.reclaimed = Counter("worldenv_worker_jobs_reclaimed", "Jobs reclaimed from a worker that went quiet",
                                 registry=reg)
        self.retries = Counter("worldenv_worker_batch_retries", "Batches left pending for another attempt",
                               registry=reg)
        self.batch_seconds = Histogram("worldenv_worker_batch_seconds", "Wall time of one imagined batch",
                                       registry=reg, buckets=BATCH_BUCKETS)
