"""Prometheus metrics of the debug API, served by the app itself at `/metrics`.

- worldenv_http_requests_total{route,status}      counter: requests answered, by route template
- worldenv_http_request_duration_seconds{route}   histogram: receipt to the end of the answer
- process_* (CPU, resident memory, open files) of the API process

Routes are labelled by their template (`/episodes/{episode_id}`), never by the raw path, so the
series stay few whatever ids are asked for; requests no route matched share `route="<unmatched>"`.
"""
from __future__ import annotations

import time

import fastapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from worldenv.prometheus import LATENCY_BUCKETS, new_registry

UNMATCHED = "<unmatched>"


class HttpMetrics:
    def __init__(self):
        self.registry = reg = new_registry()
        self.requests = Counter("worldenv_http_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=reg)
        self.seconds = Histogram("worldenv_http_request_duration_seconds", "Seconds from receipt to the end of the answer",
                                 ["route"], registry=reg, buckets=LATENCY_BUCKETS)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.seconds.labels(route).observe(seconds)


class _Measured:
    """ASGI middleware: each HTTP request's route template, status and duration into `metrics`."""

    def __init__(self, app, metrics: HttpMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500  # unless a response starts

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe(route, status, time.perf_counter() - started)


def install(app: fastapi.FastAPI) -> HttpMetrics:
    """Measure every request of `app` and serve the metrics at /metrics; returns them."""
    metrics = HttpMetrics()
    app.add_middleware(_Measured, metrics=metrics)

    @app.get("/metrics", response_class=Response, include_in_schema=False)
    def exposition():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
