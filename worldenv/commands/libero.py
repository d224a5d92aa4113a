"""Flags and the handler shared by the LIBERO commands (`demos collect`, `starts build`,
`explore`, `eval`).

Every handler checks its arguments (suite, task indices, pool size, policy reachability)
before any env process starts, and returns 2 with a one-line message when they are wrong.
"""
from __future__ import annotations

import argparse
import sys

from worldenv.sim import jobs


def add_common(p: argparse.ArgumentParser, tasks_default: str = "all", image_size: int = 64) -> None:
    """Suite, tasks, frame size, wrist camera, env processes."""
    p.add_argument("--suite", default="libero_object", help="libero_object | libero_spatial | libero_goal | libero_10 | libero_90")
    p.add_argument("--tasks", default=tasks_default, help="'all', '3', '0,2,5' or '0-4' (LIBERO's task order)")
    p.add_argument("--image-size", type=int, default=image_size, help="square frame side in pixels")
    p.add_argument("--wrist", action=argparse.BooleanOptionalAction, default=False, help="also render the wrist camera")
    p.add_argument("--env-processes", "--workers", type=int, default=0, dest="env_processes",
                   help="LIBERO env processes run in parallel (0 = what fits the machine, at most 2)")


def add_policy(p: argparse.ArgumentParser) -> None:
    """The policy a run acts with, and how many episodes it runs."""
    p.add_argument("--policy", required=True, help="host:port of a Policy server, a checkpoint directory, or 'expert'")
    p.add_argument("--auth-token", default=None, help="bearer token for a remote policy")
    p.add_argument("--episodes-per-task", type=int, default=50, help="episodes per task (init states 0, 1, ... wrap at 50)")
    p.add_argument("--init-offset", type=int, default=0, help="first init state index")
    p.add_argument("--max-steps", type=int, default=0, help="policy steps per episode (0 = the suite's standard)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for a checkpoint policy")


def handler(main, config_class):
    """Handler: Namespace -> typed config -> main(config); bad input -> exit code 2 and a message."""
    def handle(args: argparse.Namespace) -> int:
        try:
            config = config_class.from_args(args)
            return int(main(config) or 0)
        except jobs.BadArguments as exc:
            print(f"worldenv {args.command}: error: {exc}", file=sys.stderr)
            return 2
    return handle
