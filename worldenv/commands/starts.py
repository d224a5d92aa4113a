"""`worldenv starts build`: a start-state bank rendered from LIBERO's init states."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.sim import jobs


def register(sub) -> None:
    starts = sub.add_parser("starts", help="start-state bank for imagined rollouts")
    actions = starts.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="render the first observation of LIBERO init states")
    flags.command(build, "starts build", jobs.StartsConfig, jobs.build_starts, errors=(jobs.BadArguments,))
