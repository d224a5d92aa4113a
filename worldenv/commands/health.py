"""`worldenv health grpc|http|redis TARGET`: exit 0 iff the target is healthy (container probes)."""
from __future__ import annotations

import sys

from worldenv.commands.probes import check


def register(sub) -> None:
    p = sub.add_parser("health", help="probe a service: exit 0 when healthy")
    p.add_argument("kind", choices=["grpc", "http", "redis"], help="grpc: standard health service; http: 2xx; redis: PING")
    p.add_argument("target", help="HOST:PORT (grpc), URL (http, redis)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds")
    p.set_defaults(func=main)


def main(args) -> int:
    try:
        print(check(args.kind, args.target, args.timeout))
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
