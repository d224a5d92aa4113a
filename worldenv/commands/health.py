"""`worldenv health grpc|http|redis TARGET`: exit 0 iff the target is healthy (container probes)."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("health", help="probe a service: exit 0 when healthy")
    p.add_argument("kind", choices=["grpc", "http", "redis"], help="grpc: standard health service; http: 2xx; redis: PING")
    p.add_argument("target", help="HOST:PORT (grpc), URL (http, redis)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds")
    p.set_defaults(func=main)


def check(kind: str, target: str, timeout: float = 3.0) -> str:
    """Returns a status line; raises on an unhealthy target."""
    if kind == "grpc":
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if status != "SERVING":
            raise RuntimeError(status)
        return status
    if kind == "http":
        import httpx

        reply = httpx.get(target, timeout=timeout)
        reply.raise_for_status()
        return str(reply.status_code)
    import redis

    redis.Redis.from_url(target, socket_timeout=timeout, socket_connect_timeout=timeout).ping()
    return "PONG"


def main(args) -> int:
    try:
        print(check(args.kind, args.target, args.timeout))
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
