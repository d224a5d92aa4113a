"""`worldenv eval`: success rate per task and suite in LIBERO (Wilson 95 % intervals)."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.sim.policy_runs import EvalConfig, evaluate
from worldenv.sim.job_settings import BadArguments


def register(sub) -> None:
    p = sub.add_parser("eval", help="success rate per task and suite (Wilson 95 %% CI)")
    flags.command(p, "eval", EvalConfig, evaluate, errors=(BadArguments,))
