"""One factory for the three model services: kind name -> service instance with its model."""
from __future__ import annotations

import importlib

from worldenv.config import ServeConfig
from worldenv.services.common.models import load_model

# service name -> (model kind, module, class)
SERVICES = {
    "world-model": ("world_model", "worldenv.services.world_model.servicer", "WorldModelService"),
    "reflector": ("reflector", "worldenv.services.reflector.servicer", "ReflectorService"),
    "policy": ("policy", "worldenv.services.policy.servicer", "PolicyService"),
}


def create_service(name: str, config: ServeConfig, model=None, version: str | None = None):
    """Build the named service around `model` (loaded from `config` when not given)."""
    if name not in SERVICES:
        raise ValueError(f"service: unknown {name!r}; choose one of {sorted(SERVICES)}")
    kind, module, cls = SERVICES[name]
    if model is None:
        model, version = load_model(kind, config)
    return getattr(importlib.import_module(module), cls)(model, version or "in-memory", config)
