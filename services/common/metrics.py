"""Prometheus metrics of one model service: its batches, its RPCs and its state.

Names follow Prometheus conventions (seconds, `_total` counters); every series carries the
service's name in a `service` label, so one dashboard covers the three services.

- worldenv_batch_items{service}                  histogram: items (B summed) per model call
- worldenv_batch_requests{service}               histogram: requests merged per model call
- worldenv_batch_queue_seconds{service}          histogram: per request, arrival to its model call
- worldenv_batch_compute_seconds{service}        histogram: per model call
- worldenv_rpc_requests_total{service,method,code}   counter: RPCs answered, by status code
- worldenv_rpc_duration_seconds{service,method}  histogram: receipt to answer, every status
- worldenv_sessions_open{service}                gauge: world model sessions open now
- worldenv_policy_version{service}               gauge: the policy's weights version
- process_* (CPU, resident memory, open files) of the serving process
"""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from worldenv.prometheus import LATENCY_BUCKETS, SIZE_BUCKETS, new_registry
from worldenv.services.common.batching import BatchStats


class ServiceMetrics:
    """The metrics of the service named `service`, in a registry of their own."""

    def __init__(self, service: str):
        self.service = service
        self.registry = new_registry()
        labels, reg = ["service"], self.registry
        self.batch_items = Histogram("worldenv_batch_items", "Items (B summed over requests) per merged model call",
                                     labels, registry=reg, buckets=SIZE_BUCKETS).labels(service)
        self.batch_requests = Histogram("worldenv_batch_requests", "Requests merged into one model call",
                                        labels, registry=reg, buckets=SIZE_BUCKETS).labels(service)
        self.queue_seconds = Histogram("worldenv_batch_queue_seconds", "Seconds a request waited for its model call",
                                       labels, registry=reg, buckets=LATENCY_BUCKETS).labels(service)
        self.compute_seconds = Histogram("worldenv_batch_compute_seconds", "Seconds of one merged model call",
                                         labels, registry=reg, buckets=LATENCY_BUCKETS).labels(service)
        self.rpc_requests = Counter("worldenv_rpc_requests", "RPCs answered, by method and status code",
                                    ["service", "method", "code"], registry=reg)
        self.rpc_seconds = Histogram("worldenv_rpc_duration_seconds", "Seconds from an RPC's receipt to its answer",
                                     ["service", "method"], registry=reg, buckets=LATENCY_BUCKETS)

    def observe_batch(self, stats: BatchStats) -> None:
        """One model call of the service's batcher (its `observer`)."""
        self.batch_items.observe(stats.items)
        self.batch_requests.observe(stats.requests)
        self.compute_seconds.observe(stats.compute_s)
        for waited in stats.queue_s:
            self.queue_seconds.observe(waited)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """One answered RPC: its method, status code name (e.g. 'OK') and total latency."""
        self.rpc_requests.labels(self.service, method, code).inc()
        self.rpc_seconds.labels(self.service, method).observe(seconds)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is `read()` at every scrape (open sessions, weights version)."""
        Gauge(name, documentation, ["service"], registry=self.registry).labels(self.service).set_function(read)
