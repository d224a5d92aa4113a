"""One factory for the three model services: service name -> servicer around its role's model."""
from __future__ import annotations

import importlib

import torch

from worldenv import models
from worldenv.config import SERVICES, ServeConfig

# service name (a model service of `config.SERVICES`) -> its servicer class
SERVICERS = {
    "world-model": "worldenv.services.world_model.servicer:WorldModelService",
    "reflector": "worldenv.services.reflector.servicer:ReflectorService",
    "policy": "worldenv.services.policy.servicer:PolicyService",
}


def load_model(role: str, config: ServeConfig):
    """The model a service hosts -> (model, version): `config.checkpoint` through the registry
    (any arch of the role; 'shipped' = worldenv's trained one), else ('none', or 'shipped' in an
    install without it) the role's default arch, seeded with `config.seed`."""
    from worldenv import checkpoints
    if config.threads:
        torch.set_num_threads(config.threads)
    path = checkpoints.model(config.checkpoint, role)
    if path is not None:
        version = f"shipped-{path.name}" if config.checkpoint == checkpoints.SHIPPED else path.name
        model = models.load(path, role=role, device=config.device, dtype=config.dtype)
    else:
        torch.manual_seed(config.seed)
        model, version = models.build(role, device=config.device, dtype=config.dtype), f"init-seed{config.seed}"
    return with_layout(with_autocast(model, config.autocast), config.channels_last), version


def with_layout(model, channels_last: bool):
    """`model` set to run its convolutions channels-last in float32 too, where asked; refused for a
    model without that path."""
    if channels_last:
        if not hasattr(model, "use_channels_last"):
            raise ValueError(f"channels_last: {type(model).__name__} has no channels-last path; leave it off")
        model.use_channels_last(True)
    return model


def with_autocast(model, choice: str):
    """`model` set to run under `choice`'s autocast. 'none' leaves every model as it is, and so does
    'auto' a model without a mixed-precision path (a paper-scale one runs in its --dtype); a dtype
    named for such a model is refused."""
    if choice == "none":
        return model
    if not hasattr(model, "use_autocast"):
        if choice == "auto":
            return model
        raise ValueError(f"autocast: {type(model).__name__} has no mixed-precision path; use 'none' or 'auto'")
    model.use_autocast(choice)
    return model


def create_service(name: str, config: ServeConfig, model=None, version: str | None = None):
    """Build the named service around `model` (loaded from `config` when not given)."""
    if name not in SERVICERS:
        raise ValueError(f"service: unknown {name!r}; choose one of {sorted(SERVICERS)}")
    if model is None:
        model, version = load_model(SERVICES[name].role, config)
    else:
        model = with_layout(with_autocast(model, config.autocast), config.channels_last)
    module, _, cls = SERVICERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(model, version or "in-memory", config)
