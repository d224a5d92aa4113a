"""The three models behind small interfaces: policy, world model, reflector.

`build(kind, **overrides)` makes a freshly initialised model (seed with torch.manual_seed
first); `load_pretrained(dir)` reads the checkpoint's `"kind"` and returns the right class.
The world model imports diffusers, which takes seconds, so it is imported only when asked for.
"""
from __future__ import annotations

import importlib
import pathlib

import torch

from worldenv.models import checkpoint

# kind -> (module, config class, model class)
KINDS = {
    "policy": ("worldenv.models.policy", "PolicyConfig", "LaplacePolicy"),
    "world_model": ("worldenv.models.world_model", "WorldModelConfig", "ActionConditionedWorldModel"),
    "reflector": ("worldenv.models.reflector", "ReflectorConfig", "Reflector"),
}
_EXPORTS = {name: module for module, *names in KINDS.values() for name in names}

__all__ = ["KINDS", "build", "load_pretrained", *sorted(_EXPORTS)]


def _classes(kind: str) -> tuple[type, type]:
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {sorted(KINDS)}, got {kind!r}")
    module_name, config_name, model_name = KINDS[kind]
    module = importlib.import_module(module_name)
    return getattr(module, config_name), getattr(module, model_name)


def build(kind: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
          **config_overrides) -> torch.nn.Module:
    """A freshly initialised model of `kind`, its config defaults overridden by keyword."""
    config_class, model_class = _classes(kind)
    model = model_class(config_class(**config_overrides))
    return model.to(device=torch.device(device), dtype=checkpoint.torch_dtype(dtype)).eval()


def load_pretrained(path: str | pathlib.Path, device: str | torch.device = "cpu",
                    dtype: str | torch.dtype = "float32") -> torch.nn.Module:
    """Load the checkpoint directory `path` as the model class its config.json `"kind"` names."""
    _, model_class = _classes(checkpoint.read_config(path)["kind"])
    return model_class.from_pretrained(path, device=device, dtype=dtype)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
