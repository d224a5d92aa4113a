"""`worldenv align`: imagined vs real outcomes of one policy from the same first frames."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.measure.align import AlignConfig, align
from worldenv.sim.job_settings import BadArguments


def register(sub) -> None:
    p = sub.add_parser("align", help="does imagination decide outcomes as LIBERO does? (agreement, recall, "
                       "false positives, per task)")
    flags.command(p, "align", AlignConfig, align, errors=(BadArguments, ValueError, FileNotFoundError))
