"""Training runs' metrics in Redis, where the debug API (another pod) can read them.

    {prefix}:runs            zset   run id -> time of its last row
    {prefix}:run:{run_id}    hash   iteration -> the metrics row as JSON (a resumed run
                                    overwrites the iterations it repeats: one curve)
"""
from __future__ import annotations

import json
import time

import redis

from worldenv.data.episodes import check_id


class RunLog:
    """Append and read per-iteration metrics rows of training runs."""

    def __init__(self, client: redis.Redis, prefix: str = "worldenv"):
        self._r, self._prefix = client, prefix

    def _key(self, run_id: str) -> str:
        return f"{self._prefix}:run:{check_id(run_id)}"

    def put(self, run_id: str, row: dict) -> None:
        """Store `row` (it has an "iteration") under `run_id`."""
        with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(run_id), str(int(row["iteration"])), json.dumps(row))
            pipe.zadd(f"{self._prefix}:runs", {run_id: time.time()})
            pipe.execute()

    def rows(self, run_id: str) -> list[dict] | None:
        """The run's rows by iteration, or None for an unknown run."""
        raw = self._r.hgetall(self._key(run_id))
        if not raw:
            return None
        return [json.loads(v) for _, v in sorted(raw.items(), key=lambda kv: int(kv[0]))]

    def runs(self, limit: int = 100) -> list[str]:
        """The most recently updated run ids, newest first."""
        return [r.decode() for r in self._r.zrevrange(f"{self._prefix}:runs", 0, limit - 1)]
