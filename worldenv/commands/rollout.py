"""`worldenv rollout --episodes N`: enqueue N imagined episodes, wait, print throughput."""
from __future__ import annotations

import os

from pydantic import AliasChoices, Field, field_validator

from worldenv.commands import flags, home
from worldenv.config import Settings


class RolloutConfig(Settings):
    """N imagined episodes through the Redis queue of a running stack."""

    episodes: int = Field(16, ge=1, description="episodes to imagine")
    starts: str | None = Field(None, description="start-state bank (.npz from `worldenv starts build`); none = synthetic")
    horizon: int = Field(12, ge=1, description="max action chunks per episode")
    group_size: int = Field(8, ge=1, description="rollouts per start state")
    seed: int = Field(1, ge=0, description="sampling seed base; 0 = unseeded")
    eta: float = Field(0.0, ge=0, lt=1, description="done threshold; 0 = the reflector's default")
    redis_url: str | None = Field(None, validation_alias=AliasChoices("redis_url", "REDIS_URL", "WORLDENV_REDIS_URL"),
                                  description="Redis of the stack; none = $REDIS_URL, else the one `worldenv up` recorded")
    prefix: str = Field("worldenv", description="key prefix in Redis")
    run_id: str | None = Field(None, description="id of this run; none = a new unique id")
    timeout: float = Field(900.0, gt=0, description="seconds to wait for all results")

    @field_validator("starts")
    @classmethod
    def _starts_exist(cls, starts: str | None) -> str | None:
        if starts and not os.path.isfile(starts):
            raise ValueError(f"no such file {starts}")
        return starts


def register(sub) -> None:
    p = sub.add_parser("rollout", help="enqueue N imagined episodes, wait for them, print throughput and latency")
    flags.command(p, "rollout", RolloutConfig, main)


def main(config: RolloutConfig) -> int:
    import redis

    from worldenv.client import rollout
    from worldenv.client.queue import RolloutQueue
    from worldenv.data.episodes import EpisodeStore
    from worldenv.data.start_bank import StartBank, synthetic

    url = config.redis_url or home.redis_url()
    bank = StartBank.load(config.starts) if config.starts else synthetic(n=max(1, -(-config.episodes // config.group_size)))
    client = redis.Redis.from_url(url)
    run_id = config.run_id or rollout.new_run_id()
    jobs = rollout.make_jobs(bank, config.episodes, run_id, config.horizon, config.group_size, config.seed, config.eta)
    print(f"enqueued {len(jobs)} episodes from {len(bank)} start states ({bank.meta.get('source', config.starts)}) on {url}",
          flush=True)
    report = rollout.run(RolloutQueue(client, config.prefix), EpisodeStore(client, config.prefix), jobs, config.timeout)
    print("\n".join(report.lines()), flush=True)
    return 0
