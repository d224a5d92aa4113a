"""`worldenv train policy|world-model|reflector`: supervised training on recorded LIBERO episodes.

Each run directory holds model/ (the best checkpoint by validation loss, ready for
`worldenv serve ... --checkpoint`), history.jsonl and the state a killed run resumes from:
run the same command again.
"""
from __future__ import annotations

import json

from worldenv.client.errors import ServiceError
from worldenv.commands import flags
from worldenv.rl.progress import NoProgress
from worldenv.rl.settings import RLConfig
from worldenv.train import settings


def _policy(config: settings.PolicyTrainConfig) -> dict:
    from worldenv.train import policy
    return policy.train(config)


def _world_model(config: settings.WorldModelTrainConfig) -> dict:
    from worldenv.train import world_model
    return world_model.train(config)


def _reflector(config: settings.ReflectorTrainConfig) -> dict:
    from worldenv.train import reflector
    return reflector.train(config)


def _rl(config: RLConfig) -> dict:
    from worldenv.rl import trainer
    return trainer.run(config)


TRAINERS = {   # each imports its heavy module when its command runs
    "policy": (settings.PolicyTrainConfig, _policy, "the Laplace chunk policy (SFT)"),
    "world-model": (settings.WorldModelTrainConfig, _world_model, "the action-conditioned world model"),
    "reflector": (settings.ReflectorTrainConfig, _reflector, "the reflector, p(task done)"),
    "rl": (RLConfig, _rl, "the policy with LOOP in imagination (over a running stack)"),
}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on recorded LIBERO episodes (HDF5)")
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, (cls, train, what) in TRAINERS.items():
        # rl: a run that stops learning (NoProgress) or meets no policy replica ends with its cause, exit code 2
        errors = (ValueError, FileNotFoundError) + ((NoProgress, ServiceError) if name == "rl" else ())
        flags.command(models.add_parser(name, help=f"train {what}"), f"train {name}", cls, _runner(train), errors=errors)


def _runner(train):
    def run(config) -> int:
        summary = train(config)
        rows = summary.pop("history", None) or summary.pop("rows", None) or [{}]
        print(json.dumps(summary | {"last": rows[-1]}, indent=2))
        return 0
    return run
