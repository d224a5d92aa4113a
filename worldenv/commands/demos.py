"""`worldenv demos collect`: scripted-expert demonstrations in LIBERO's HDF5 layout."""
from __future__ import annotations

import argparse

from worldenv.commands import libero
from worldenv.sim import jobs


def register(sub) -> None:
    demos = sub.add_parser("demos", help="scripted expert demonstrations (LIBERO HDF5)")
    actions = demos.add_subparsers(dest="action", required=True, metavar="ACTION")
    collect = actions.add_parser("collect", help="run the scripted expert, keep successful demos")
    libero.add_common(collect, image_size=128)
    collect.add_argument("--per-task", type=int, default=5, help="successful demos to keep per task")
    collect.add_argument("--max-attempts", type=int, default=50, help="init states tried per task at most")
    collect.add_argument("--every-step", action=argparse.BooleanOptionalAction, default=True,
                         help="frames at every step (LIBERO's layout); --no-every-step = once per chunk")
    collect.add_argument("--out", required=True, help="output directory: <out>/<suite>/<task>_demo.hdf5")
    collect.set_defaults(func=libero.handler(jobs.collect_demos, jobs.CollectConfig), wrist=True)
