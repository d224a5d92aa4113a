"""Prometheus exposition shared by the model services and the rollout worker.

Each instance keeps its metrics in a registry of its own (never the process-wide default), so
several services in one process (`worldenv up`, the tests) do not clash, and serves it at
`/metrics` on the port its settings name (`--metrics-port`; 0 = any free port).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_http_server

# Seconds: from a sub-millisecond policy step on CPU to a video U-Net step of a minute.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Items or requests per merged batch: powers of two up to the largest batch a server allows.
SIZE_BUCKETS = tuple(float(2 ** k) for k in range(13))


def new_registry() -> CollectorRegistry:
    """A registry with the process's CPU, memory and file-descriptor gauges (`process_*`)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsEndpoint:
    """`registry` served over HTTP at http://host:port/metrics from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int):
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host, self.port = host, self._server.server_address[1]

    def stop(self) -> None:
        """Stop serving and release the port (blocks until the serving thread has ended)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def serve(registry: CollectorRegistry, host: str, port: int | None) -> MetricsEndpoint | None:
    """The endpoint for `port` (0 = any free port), or None when metrics are off (port None)."""
    return None if port is None else MetricsEndpoint(registry, host, port)


@contextlib.contextmanager
def serving(registry: CollectorRegistry, host: str, port: int | None) -> Iterator[MetricsEndpoint | None]:
    """`serve`, stopped on exit."""
    endpoint = serve(registry, host, port)
    try:
        yield endpoint
    finally:
        if endpoint is not None:
            endpoint.stop()
