"""`worldenv compare`: LIBERO evaluations of policies on the same init states, paired (or
`align` outputs by agreement, or `train rl` runs by on-policy imagined success)."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.measure.compare import CompareConfig, run


def register(sub) -> None:
    p = sub.add_parser("compare", help="policies evaluated on the same init states, paired: McNemar, bootstrap, "
                       "per task; several runs a side (seeds, controls) as groups with their spread; or an RL run against its control by on-policy imagined "
                       "success, iteration by iteration")
    flags.command(p, "compare", CompareConfig, run, errors=(ValueError, FileNotFoundError))
