"""Serve the debugging API with uvicorn: `main(DebugApiConfig) -> exit code`."""
from __future__ import annotations

import socket

import redis
import uvicorn

from worldenv.config import DebugApiConfig
from worldenv.data.episodes import EpisodeStore

from .app import create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 = any free port), ready before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections made before uvicorn runs wait in the backlog
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    """http://HOST:PORT of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main(config: DebugApiConfig) -> int:
    """Serve the episode store at config.redis_url until interrupted; prints the bound address."""
    store = EpisodeStore(redis.Redis.from_url(config.redis_url), prefix=config.prefix)
    app = create_app(store)
    sock = bind(config.host, config.port)
    print(f"debug-api listening on {address(sock)}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False)).run(sockets=[sock])
    return 0
