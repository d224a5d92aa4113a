"""`worldenv compare`: LIBERO evaluations of policies on the same init states, paired."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.measure.compare import CompareConfig, run


def register(sub) -> None:
    p = sub.add_parser("compare", help="policies evaluated on the same init states, paired: McNemar, bootstrap, "
                       "per task; several runs a side (seeds, controls) as groups with their spread")
    flags.command(p, "compare", CompareConfig, run, errors=(ValueError, FileNotFoundError))
