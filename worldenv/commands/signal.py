"""`worldenv signal`: how much of one RL update is signal, in imagination only."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.measure.update_signal import SignalConfig, run


def register(sub) -> None:
    p = sub.add_parser("signal", help="signal and noise of LOOP's policy gradient on one batch of imagined groups, "
                       "true rewards against shuffled: how many groups an update needs to point somewhere")
    flags.command(p, "signal", SignalConfig, run, errors=(ValueError, FileNotFoundError))
