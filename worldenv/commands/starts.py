"""`worldenv starts build`: a start-state bank rendered from LIBERO's init states."""
from __future__ import annotations

from worldenv.commands import libero
from worldenv.sim import jobs


def register(sub) -> None:
    starts = sub.add_parser("starts", help="start-state bank for imagined rollouts")
    actions = starts.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="render the first observation of LIBERO init states")
    libero.add_common(build)
    build.add_argument("--inits", default="0-9", help="init state indices per task: '0-49', '0,3', 'all'")
    build.add_argument("--out", required=True, help="output .npz (worldenv.data.start_bank.StartBank)")
    build.set_defaults(func=libero.handler(jobs.build_starts, jobs.StartsConfig))
