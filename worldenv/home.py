"""Where this machine's worldenv state lives: $WORLDENV_HOME, default ~/.worldenv. A running
`worldenv up` records its addresses there (up.json), which is how commands find its Redis."""
from __future__ import annotations

import json
import os
import pathlib

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("WORLDENV_HOME", pathlib.Path.home() / ".worldenv"))


def stack_file() -> pathlib.Path:
    return path() / "up.json"


def stack() -> dict | None:
    """What the running `worldenv up` recorded (addresses, Redis, start bank), or None."""
    try:
        recorded = json.loads(stack_file().read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def redis_url() -> str:
    """$REDIS_URL, else the Redis a running `worldenv up` recorded, else the local default."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    url = (stack() or {}).get("redis_url")
    return url if isinstance(url, str) and url else DEFAULT_REDIS_URL


def service_address(name: str, default: str) -> str:
    """host:port of service `name` as a running `worldenv up` recorded it (it may have taken free
    ports), else `default`."""
    recorded = stack() or {}
    address = recorded.get(name)
    return address if isinstance(address, str) and address else default
