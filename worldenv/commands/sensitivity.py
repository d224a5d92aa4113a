"""`worldenv sensitivity`: how the imagined outcome answers a small change of one action chunk."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.measure.sensitivity import SensitivityConfig, run


def register(sub) -> None:
    p = sub.add_parser("sensitivity", help="how often a fixed offset of one chunk, by size, changes the imagined "
                       "outcome of the policy's mean episode: whether the outcome has a direction to follow")
    flags.command(p, "sensitivity", SensitivityConfig, run, errors=(ValueError, FileNotFoundError))
