"""`worldenv models inspect|build|attach-head`: checkpoint directories of any registered arch.

    worldenv models inspect DIR                       load it through the registry (every missing or
                                                      mismatched file or key refused by name); print
                                                      role, arch, spec, parameters, files
    worldenv models build DIR --arch video-unet --size small
                                                      random weights in the arch's layout
    worldenv models attach-head DIR --arch llava-reward [--options '{"max_frames": 32}']
                                                      our head + worldenv.json beside a backbone's
                                                      own files (a LLaVA, an OpenVLA-OFT directory),
                                                      without loading the backbone
"""
from __future__ import annotations

import json
import pathlib
from typing import Literal

from pydantic import Field

from worldenv.commands import flags
from worldenv.config import Settings


class InspectConfig(Settings):
    """Load a checkpoint directory and describe it."""

    path: str = Field(description="checkpoint directory", json_schema_extra=flags.POSITIONAL)
    device: str = Field("cpu", description="torch device to load it on, e.g. cpu or cuda:0")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model dtype")


class BuildConfig(Settings):
    """Save a freshly initialised model of an arch in its layout."""

    path: str = Field(description="directory to write (created)", json_schema_extra=flags.POSITIONAL)
    arch: str = Field(description="registered arch, or a role for its default arch")
    size: str | None = Field(None, description="paper-scale archs: tiny | small | full")
    device: str = Field("cpu", description="torch device to build it on")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model dtype")
    seed: int = Field(0, description="torch seed of the initialisation")


class AttachHeadConfig(Settings):
    """Our trainable head and worldenv.json beside a backbone directory's files."""

    path: str = Field(description="the backbone directory", json_schema_extra=flags.POSITIONAL)
    arch: Literal["openvla-oft", "llava-reward"] = Field(description="openvla-oft: a scale head; "
                                                         "llava-reward: a reward head")
    options: str = Field("{}", description="worldenv.json options as a JSON object, e.g. "
                         "'{\"unnorm_key\": \"libero_object_no_noops\"}'")
    scale: float = Field(0.05, gt=0, description="openvla-oft: the scale head's starting b")
    seed: int = Field(0, description="llava-reward: torch seed of the head")


def register(sub) -> None:
    p = sub.add_parser("models", help="inspect, build or complete a checkpoint directory of any arch")
    commands = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    errors = (ValueError, FileNotFoundError, OSError)
    flags.command(commands.add_parser("inspect", help="load a checkpoint and describe it"), "models inspect",
                  InspectConfig, inspect, errors)
    flags.command(commands.add_parser("build", help="random weights of an arch, saved in its layout"),
                  "models build", BuildConfig, build, errors)
    flags.command(commands.add_parser("attach-head", help="our head + worldenv.json beside a backbone's files"),
                  "models attach-head", AttachHeadConfig, attach_head, errors)


def describe(model, path: pathlib.Path) -> dict:
    spec = model.spec
    published = model.publishable_state()
    return {"path": str(path), "role": spec.role, "arch": spec.arch, "name": spec.name,
            "image_size": spec.image_size, "chunk_length": spec.chunk_length, "action_dim": spec.action_dim,
            "proprio_dim": spec.proprio_dim, **spec.extra,
            "parameters": sum(p.numel() for p in model.parameters()),
            "publishable_tensors": len(published), "publishable_parameters": sum(t.numel() for t in published.values()),
            "device": str(next(model.parameters()).device), "dtype": str(next(model.parameters()).dtype),
            "files": sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file())}


def inspect(config: InspectConfig) -> int:
    from worldenv import models
    path = pathlib.Path(config.path)
    print(json.dumps(describe(models.load(path, device=config.device, dtype=config.dtype), path), indent=2))
    return 0


def build(config: BuildConfig) -> int:
    import torch

    from worldenv import models
    torch.manual_seed(config.seed)
    extra = {"size": config.size} if config.size else {}
    model = models.build(config.arch, device=config.device, dtype=config.dtype, **extra)
    path = pathlib.Path(config.path)
    model.save_pretrained(path)
    print(json.dumps(describe(model, path), indent=2))
    return 0


def attach_head(config: AttachHeadConfig) -> int:
    try:
        options = json.loads(config.options)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--options: not JSON ({exc})") from None
    if not isinstance(options, dict):
        raise ValueError("--options: expected a JSON object")
    if config.arch == "openvla-oft":
        from worldenv.models.oft_policy import attach_scale_head
        file = attach_scale_head(config.path, config.scale, **options)
    else:
        from worldenv.models.llava_reflector import attach_reward_head
        file = attach_reward_head(config.path, seed=config.seed, **options)
    print(json.dumps({"head": str(file), "marker": str(pathlib.Path(config.path) / "worldenv.json")}))
    return 0
