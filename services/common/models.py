"""Loading the model a service hosts: a checkpoint directory, or a seeded random init."""
from __future__ import annotations

import pathlib

import torch

from worldenv.config import ServeConfig


def load_model(kind: str, config: ServeConfig) -> tuple[torch.nn.Module, str]:
    """Returns (model in eval mode, version string)."""
    from worldenv import models

    if config.threads:
        torch.set_num_threads(config.threads)
    if config.checkpoint:
        path = pathlib.Path(config.checkpoint)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"checkpoint: {path} has no config.json")
        model = models.load_pretrained(path, device=config.device, dtype=config.dtype)
        if model.config.kind != kind:
            raise ValueError(f"checkpoint: {path} holds a {model.config.kind!r}, this service needs a {kind!r}")
        version = path.name
    else:
        torch.manual_seed(config.seed)
        model = models.build(kind).to(device=config.device, dtype=getattr(torch, config.dtype))
        version = f"init-seed{config.seed}"
    return model.eval(), version
