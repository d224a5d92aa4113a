"""Subcommands of the backbone: serve, worker, rollout, up, health."""
from __future__ import annotations

from worldenv.commands import health, rollout, serve, up, worker


def register(sub) -> None:
    for module in (up, serve, worker, rollout, health):
        module.register(sub)
