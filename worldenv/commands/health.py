"""`worldenv health grpc|http|redis TARGET`: exit 0 iff the target is healthy (container probes)."""
from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field

from worldenv.commands import flags
from worldenv.local.probes import check
from worldenv.config import Settings


class HealthCheckConfig(Settings):
    """One probe of one target."""

    kind: Literal["grpc", "http", "redis"] = Field(
        description="grpc: standard health service; http: 2xx; redis: PING", json_schema_extra=flags.POSITIONAL)
    target: str = Field(description="HOST:PORT (grpc), URL (http, redis)", json_schema_extra=flags.POSITIONAL)
    timeout: float = Field(3.0, gt=0, description="seconds")


def register(sub) -> None:
    p = sub.add_parser("health", help="probe a service: exit 0 when healthy")
    flags.command(p, "health", HealthCheckConfig, main)


def main(config: HealthCheckConfig) -> int:
    try:
        print(check(config.kind, config.target, config.timeout))
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
