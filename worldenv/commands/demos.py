"""`worldenv demos collect`: scripted-expert demonstrations in LIBERO's HDF5 layout."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.sim.demos import CollectConfig, collect_demos
from worldenv.sim.job_settings import BadArguments


def register(sub) -> None:
    demos = sub.add_parser("demos", help="scripted expert demonstrations (LIBERO HDF5)")
    actions = demos.add_subparsers(dest="action", required=True, metavar="ACTION")
    collect = actions.add_parser("collect", help="run the scripted expert, keep successful demos")
    flags.command(collect, "demos collect", CollectConfig, collect_demos, errors=(BadArguments,))
