"""`worldenv serve <world-model|reflector|policy|debug-api>`: run one service."""
from __future__ import annotations

import asyncio
import logging

from worldenv.commands.flags import add_settings, settings_from
from worldenv.config import SERVICES, DebugApiConfig, ServeConfig


def register(sub) -> None:
    p = sub.add_parser("serve", help="run one service (gRPC model service or the REST debug API)")
    p.add_argument("service", choices=sorted(SERVICES), help="which service")
    add_settings(p, ServeConfig)
    p.add_argument("--redis-url", default=None, help="debug-api: Redis with the episode store (default $REDIS_URL)")
    p.add_argument("--prefix", default=None, help="debug-api: key prefix in Redis")
    p.set_defaults(func=main)


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.service == "debug-api":
        from worldenv.services.debug_api import server

        return server.main(settings_from(DebugApiConfig, args))
    config = settings_from(ServeConfig, args)
    return serve(args.service, config)


def serve(name: str, config: ServeConfig) -> int:
    from worldenv.services.common.factory import create_service
    from worldenv.services.common.server import serve_forever

    service = create_service(name, config)
    asyncio.run(serve_forever(service, config, config.port or SERVICES[name].port))
    return 0
