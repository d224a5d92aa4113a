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
    "policy": (settings.PolicyTrainConfig, "worldenv.train.policy", "the Laplace chunk policy (SFT)"),
    "world-model": (settings.WorldModelTrainConfig, "worldenv.train.world_model", "the action-conditioned world model"),
    "reflector": (settings.ReflectorTrainConfig, "worldenv.train.reflector", "the reflector, p(task done)"),
}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on recorded LIBERO episodes (HDF5)")
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, (cls, module, what) in TRAINERS.items():
        flags.command(models.add_parser(name, help=f"train {what}"), f"train {name}", cls, _runner(module),
                      errors=(ValueError, FileNotFoundError))


def _runner(module: str):
    def run(config) -> int:
        summary = importlib.import_module(module).train(config)
        last = summary["history"][-1] if summary["history"] else {}
        print(json.dumps({k: v for k, v in summary.items() if k != "history"} | {"last": last}, indent=2))
        return 0
    return run
