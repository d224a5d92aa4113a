"""`worldenv rollout --episodes N`: enqueue N imagined episodes, wait, print throughput."""
from __future__ import annotations

from pydantic import Field

from worldenv.commands import flags
from worldenv.config import redis_url_field
from worldenv.rl.settings import RolloutOptions


class RolloutConfig(RolloutOptions):
    """N imagined episodes through the Redis queue of a running stack."""

    episodes: int = Field(16, ge=1, description="episodes to imagine")
    redis_url: str = redis_url_field("Redis of the stack")
    prefix: str = Field("worldenv", description="key prefix in Redis")
    run_id: str | None = Field(None, description="id of this run; none = a new unique id")


def register(sub) -> None:
    p = sub.add_parser("rollout", help="enqueue N imagined episodes, wait for them, print throughput and latency")
    flags.command(p, "rollout", RolloutConfig, main)


def main(config: RolloutConfig) -> int:
    from worldenv.rl import rollout

    report = rollout.request(config.redis_url, config.prefix, config.episodes, config, config.run_id)
    print("\n".join(report.lines()), flush=True)
    return 0
