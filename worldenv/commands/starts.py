"""`worldenv starts build`: a start-state bank rendered from LIBERO's init states."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.sim.starts import StartsConfig, build_starts
from worldenv.sim.job_settings import BadArguments


def register(sub) -> None:
    starts = sub.add_parser("starts", help="start-state bank for imagined rollouts")
    actions = starts.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="render the first observation of LIBERO init states")
    flags.command(build, "starts build", StartsConfig, build_starts, errors=(BadArguments,))
