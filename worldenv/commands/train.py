"""`worldenv train policy|world-model|reflector`: supervised training on recorded LIBERO episodes.

Each run directory holds model/ (the best checkpoint by validation loss, ready for
`worldenv serve ... --checkpoint`), history.jsonl and the state a killed run resumes from:
run the same command again.
"""
from __future__ import annotations

import importlib
import json

from worldenv.commands import flags
from worldenv.train import settings

TRAINERS = {
    "policy": (settings.PolicyTrainConfig, "worldenv.train.policy:train", "the Laplace chunk policy (SFT)"),
    "world-model": (settings.WorldModelTrainConfig, "worldenv.train.world_model:train", "the action-conditioned world model"),
    "reflector": (settings.ReflectorTrainConfig, "worldenv.train.reflector:train", "the reflector, p(task done)"),
    "rl": (settings.RLConfig, "worldenv.client.trainer:run", "the policy with LOOP in imagination (over a running stack)"),
}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on recorded LIBERO episodes (HDF5)")
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, (cls, module, what) in TRAINERS.items():
        flags.command(models.add_parser(name, help=f"train {what}"), f"train {name}", cls, _runner(module),
                      errors=(ValueError, FileNotFoundError))


def _runner(target: str):
    module, _, function = target.partition(":")

    def run(config) -> int:
        summary = getattr(importlib.import_module(module), function)(config)
        rows = summary.pop("history", None) or summary.pop("rows", None) or [{}]
        print(json.dumps(summary | {"last": rows[-1]}, indent=2))
        return 0
    return run
