"""One registry: architecture name -> the class that builds and loads it, and the role it plays.

A checkpoint is a directory whose `config.json` names its `role` (policy, world_model,
reflector) and its `arch`; everything else in the directory (one safetensors file or shards
with an index, tokenizer or processor files, extra head files) is the arch's own business.
Where `config.json` belongs to someone else (a Hugging Face backbone's, in a paper-scale
layout), a `worldenv.json` beside it names the role, the arch and the arch's options, and
wins over `config.json`.
An arch class provides

    build(device, dtype, **config_overrides) -> model   # fresh, seeded by torch's RNG
    from_pretrained(path, device, dtype) -> model       # from a checkpoint directory

and implements its role's interface (`worldenv.models.roles`). Built-in archs are named by
"module:Class" and imported when first used (the world model imports diffusers, which takes
seconds); `register` adds more, e.g. a paper-scale arch or a test's.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
from typing import Any

import torch

from worldenv.models.roles import ROLES, Role

CONFIG_FILE = "config.json"
MARKER_FILE = "worldenv.json"  # role + arch of a directory whose config.json is a backbone's


@dataclasses.dataclass(frozen=True)
class Arch:
    """A registered architecture: its name, its role and its class (or "module:Class")."""

    name: str
    role: Role
    target: str | type

    def cls(self) -> type:
        if isinstance(self.target, type):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


ARCHS: dict[str, Arch] = {}
DEFAULT_ARCH: dict[Role, str] = {}


def register(name: str, role: Role, target: str | type, default: bool = False) -> Arch:
    """Add (or replace) arch `name`; `default=True` makes it what `build(role)` builds."""
    if role not in ROLES:
        raise ValueError(f"role: expected one of {list(ROLES)}, got {role!r}")
    ARCHS[name] = arch = Arch(name, role, target)
    if default:
        DEFAULT_ARCH[role] = name
    return arch


def arch(name: str) -> Arch:
    """The registered arch `name`, or a role's default arch when `name` is a role."""
    name = DEFAULT_ARCH.get(name, name)  # type: ignore[call-overload]
    if name not in ARCHS:
        raise ValueError(f"arch: unknown {name!r}; registered: {sorted(ARCHS)} (or a role: {list(ROLES)})")
    return ARCHS[name]


def read_config(path: str | pathlib.Path) -> dict[str, Any]:
    """The checkpoint's own config as a dict (`worldenv.json` if present, else `config.json`);
    it must name its role and arch."""
    path = pathlib.Path(path)
    file = path / MARKER_FILE if (path / MARKER_FILE).is_file() else path / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint: no {CONFIG_FILE} (or {MARKER_FILE}) in {path}")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{file}: expected a JSON object")
    for key in ("role", "arch"):
        if not isinstance(config.get(key), str):
            raise ValueError(f"{file}: field {key!r} missing; a checkpoint names its role "
                             f"({', '.join(ROLES)}) and its arch ({', '.join(sorted(ARCHS))}), "
                             f"in {MARKER_FILE} where {CONFIG_FILE} is a backbone's")
    return config


def build(role_or_arch: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
          **config_overrides):
    """A freshly initialised model of an arch (or of a role's default arch), in eval mode."""
    return arch(role_or_arch).cls().build(device=device, dtype=dtype, **config_overrides)


def load(path: str | pathlib.Path, role: Role | None = None, device: str | torch.device = "cpu",
         dtype: str | torch.dtype = "float32"):
    """Load the checkpoint directory `path` with its arch's loader; `role` is checked when given."""
    config = read_config(path)
    found = arch(config["arch"])
    if found.role != config["role"]:
        raise ValueError(f"checkpoint {path}: role {config['role']!r} but arch {found.name!r} is a {found.role!r}")
    if role is not None and found.role != role:
        raise ValueError(f"checkpoint {path} holds a {found.role!r} ({found.name}), not a {role!r}")
    return found.cls().from_pretrained(path, device=device, dtype=dtype)


register("tiny-laplace-policy", "policy", "worldenv.models.policy:LaplacePolicy", default=True)
register("tiny-unet", "world_model", "worldenv.models.world_model:ActionConditionedWorldModel", default=True)
register("tiny-reflector", "reflector", "worldenv.models.reflector:Reflector", default=True)
# Paper-scale archs: Hugging Face / diffusers directories in their own layouts (worldenv.json beside).
register("openvla-oft", "policy", "worldenv.models.oft_policy:OFTPolicy")
register("llava-reward", "reflector", "worldenv.models.llava_reflector:LlavaReflector")
register("video-unet", "world_model", "worldenv.models.video_world_model:VideoWorldModel")
