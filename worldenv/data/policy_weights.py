"""The newest published policy weights in Redis, where every policy replica can fetch them.

    {prefix}:policy:weights   hash   version -> int, note -> text, data -> safetensors bytes

The trainer writes each version it publishes; a policy server started with a weights store
(`--weights-redis-url`) loads the newest version before it reports SERVING and then polls for
newer ones, so a replica that starts late, or restarts, serves the trainer's weights by itself.
One hash set in one command: a reader sees a whole version or the one before.
"""
from __future__ import annotations

import dataclasses

import redis


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    version: int
    note: str
    data: bytes      # a safetensors file of the policy's publishable state


class PolicyWeightsStore:
    """Put and read the newest published weights under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str = "worldenv"):
        self._r, self.key = client, f"{prefix}:policy:weights"

    def put(self, weights: PublishedWeights) -> None:
        self._r.hset(self.key, mapping={"version": weights.version, "note": weights.note, "data": weights.data})

    def version(self) -> int:
        """The newest published version; 0 when nothing was published."""
        raw = self._r.hget(self.key, "version")
        return int(raw) if raw else 0

    def get(self) -> PublishedWeights | None:
        raw = self._r.hgetall(self.key)
        if not raw or b"data" not in raw:
            return None
        return PublishedWeights(int(raw[b"version"]), raw.get(b"note", b"").decode(errors="replace"), raw[b"data"])
