"""Health probes of the three kinds of target: gRPC health service, HTTP endpoint, Redis."""
from __future__ import annotations


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
