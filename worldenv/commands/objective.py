"""`worldenv objective`: RL's own objective in imagination (mean and sampled imagined success)."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.measure.objective import ObjectiveConfig, run


def register(sub) -> None:
    p = sub.add_parser("objective", help="imagined success of policies, mean and sampled, on one fixed draw of "
                       "start states: which exploration scale keeps success, did RL raise what it optimises")
    flags.command(p, "objective", ObjectiveConfig, run, errors=(ValueError, FileNotFoundError))
