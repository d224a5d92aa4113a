"""The models: one small interface per role (`roles`), a registry arch -> class (`registry`).

    from worldenv import models
    policy = models.build("policy")                    # a role's default arch, freshly initialised
    world_model = models.load("ckpt/world_model")      # whatever arch the directory's config names

Seed with torch.manual_seed before `build`. The model classes import lazily (the world model
imports diffusers, which takes seconds).
"""
from __future__ import annotations

from worldenv.models.roles import (ROLES, ActionChunks, Observations, Policy, Prediction, Reflector, Spec,
                                   StartStates, WorldModel)

__all__ = ["ARCHS", "ROLES", "ActionChunks", "Observations", "Policy", "Prediction", "Reflector", "Spec",
           "StartStates", "WorldModel", "arch", "build", "load", "register"]

_REGISTRY = ("ARCHS", "arch", "build", "load", "register")


def __getattr__(name: str):
    """The registry's names, imported when first used: the role interfaces alone need no torch."""
    if name in _REGISTRY:
        from worldenv.models import registry
        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
