"""The `worldenv` console script: one subcommand per job.

Each command module exposes `register(subparsers)`; heavy imports happen inside the handlers so
`worldenv --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [f"worldenv.commands.{name}" for name in (
    "up", "serve", "worker", "rollout", "health",   # the serving backbone
    "demos", "starts", "explore", "eval",           # LIBERO, the ground truth
)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldenv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue  # a command group not present in this checkout
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
