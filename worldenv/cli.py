"""The `worldenv` console script: one subcommand per job.

Each command module exposes `register(subparsers)`; heavy imports happen inside the handlers so
`worldenv --help` stays fast. The gRPC stubs are not a command: `python -m worldenv.wire.gen`
writes them (every install runs it).
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [f"worldenv.commands.{name}" for name in (
    "up", "serve", "worker", "rollout", "health",   # the serving backbone
    "demos", "starts", "explore", "eval", "compare",  # LIBERO, the ground truth
    "train", "pipeline", "experiment", "align",     # the models, trained on LIBERO episodes; RL measured
    "objective", "signal", "sensitivity",           # RL's own objective, its update's signal, the outcome's answer to an action
    "models",                                       # checkpoint directories of any arch
    "export",                                       # episodes for other projects' tools (LeRobot)
)]


def build_parser() -> argparse.ArgumentParser:
    """The `worldenv` parser with every command of COMMAND_MODULES."""
    parser = argparse.ArgumentParser(prog="worldenv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)  # a missing module is an error, never skipped
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` names; returns its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
