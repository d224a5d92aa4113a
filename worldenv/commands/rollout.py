"""`worldenv rollout --episodes N`: enqueue N imagined episodes, wait, print throughput."""
from __future__ import annotations

import os

from pydantic import AliasChoices, Field, field_validator

from worldenv.commands import flags, home
from worldenv.config import Settings


class RolloutOptions(Settings):
    """How a rollout makes its imagined episodes (shared by `worldenv rollout` and `worldenv up --rollout`)."""

    starts: str | None = Field(None, description="start-state bank (.npz from `worldenv starts build`); "
                                                 "none = synthetic start states")
    horizon: int = Field(30, ge=1, description="max action chunks per episode (LIBERO-Object allows 280 steps = 35 chunks)")
    group_size: int = Field(8, ge=1, description="rollouts per start state")
    seed: int = Field(1, ge=0, description="sampling seed base; 0 = unseeded")
    eta: float = Field(0.0, ge=0, lt=1, description="done threshold; 0 = the reflector's default")
    timeout: float = Field(900.0, gt=0, description="seconds to wait for all results")

    @field_validator("starts")
    @classmethod
    def _starts_exist(cls, starts: str | None) -> str | None:
        if starts and not os.path.isfile(starts):
            raise ValueError(f"no such file {starts}")
        return starts


class RolloutConfig(RolloutOptions):
    """N imagined episodes through the Redis queue of a running stack."""

    episodes: int = Field(16, ge=1, description="episodes to imagine")
    redis_url: str | None = Field(None, validation_alias=AliasChoices("redis_url", "REDIS_URL", "WORLDENV_REDIS_URL"),
                                  description="Redis of the stack; none = the one `worldenv up` recorded")
    prefix: str = Field("worldenv", description="key prefix in Redis")
    run_id: str | None = Field(None, description="id of this run; none = a new unique id")


def register(sub) -> None:
    p = sub.add_parser("rollout", help="enqueue N imagined episodes, wait for them, print throughput and latency")
    flags.command(p, "rollout", RolloutConfig, main)


def main(config: RolloutConfig) -> int:
    report = imagine(config.redis_url or home.redis_url(), config.prefix, config.episodes, config, config.run_id)
    print("\n".join(report.lines()), flush=True)
    return 0


def imagine(redis_url: str, prefix: str, episodes: int, options: RolloutOptions, run_id: str | None = None):
    """Enqueue `episodes` imagined episodes as `options` say, wait for them; returns the RolloutReport."""
    import redis

    from worldenv.client import rollout
    from worldenv.client.queue import RolloutQueue
    from worldenv.data.episodes import EpisodeStore

    bank = _start_bank(options, episodes)
    jobs = rollout.make_jobs(bank, episodes, run_id or rollout.new_run_id(), options.horizon, options.group_size,
                             options.seed, options.eta)
    print(f"enqueued {len(jobs)} episodes from {len(bank)} start states ({bank.meta.get('source', options.starts)}) "
          f"on {redis_url}", flush=True)
    client = redis.Redis.from_url(redis_url)
    return rollout.run(RolloutQueue(client, prefix), EpisodeStore(client, prefix), jobs, options.timeout)


def _start_bank(options: RolloutOptions, episodes: int):
    """The --starts bank, else synthetic start states: one per group of rollouts."""
    from worldenv.data.start_bank import StartBank, synthetic_bank

    if options.starts:
        return StartBank.load(options.starts)
    return synthetic_bank(n=max(1, -(-episodes // options.group_size)))
