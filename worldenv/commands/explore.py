"""`worldenv explore`: a policy with sampled actions in LIBERO; every episode recorded."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.sim.policy_runs import ExploreConfig, explore
from worldenv.sim.job_settings import BadArguments


def register(sub) -> None:
    p = sub.add_parser("explore", help="run a policy with sampled actions in LIBERO, record all episodes")
    flags.command(p, "explore", ExploreConfig, explore, errors=(BadArguments,))
