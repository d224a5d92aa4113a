"""`worldenv serve <world-model|reflector|policy|debug-api>`: run one service."""
from __future__ import annotations

import asyncio
import logging

from worldenv.commands import flags
from worldenv.config import SERVICES, DebugApiConfig, ServeConfig


def register(sub) -> None:
    p = sub.add_parser("serve", help="run one service (gRPC model service or the REST debug API)")
    p.add_argument("service", choices=sorted(SERVICES), help="which service")
    flags.add_settings(p, ServeConfig)
    flags.add_settings(p, DebugApiConfig, skip=("host", "port"))  # the debug API's own: --redis-url, --prefix
    p.set_defaults(func=flags.guarded("serve", main))


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.service == "debug-api":
        from worldenv.services.debug_api import server

        return server.main(flags.settings_from(DebugApiConfig, args))
    config = flags.settings_from(ServeConfig, args)
    return serve(args.service, config)


def serve(name: str, config: ServeConfig) -> int:
    from worldenv.services.common.factory import create_service
    from worldenv.services.common.server import serve_forever

    service = create_service(name, config)
    asyncio.run(serve_forever(service, config, config.port or SERVICES[name].port))
    return 0
