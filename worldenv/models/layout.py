"""Reading checkpoint directories in other projects' layouts (the paper-scale archs).

A paper-scale checkpoint is a Hugging Face or diffusers directory plus extra files beside it
(OpenVLA-OFT's `action_head--150000_checkpoint.pt`, its `dataset_statistics.json`, our scale
or reward head). The recurring failures with such directories are a file that is not there,
two candidates for one file, and keys renamed between conversions; each helper here fails
with the path of the file and, for weights, the first key that does not match.

    file = layout.find_one(path, "action_head", "OFT action head")
    layout.load_into(head, file)                 # strict; "module." prefixes (DDP) stripped
    layout.save_tensors(head.state_dict(), path / "scale_head.safetensors")
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from worldenv.models import checkpoint, registry

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
# A transformers backbone's config and weights (one file, or shards + index), as save_pretrained writes them.
BACKBONE_FILES = ("config.json", "generation_config.json", "model.safetensors", "model-*-of-*.safetensors",
                  "model.safetensors.index.json")


def marker(path: str | pathlib.Path) -> dict[str, Any]:
    """The directory's `worldenv.json` (role, arch, the arch's options); its absence is an error
    that says what to write."""
    file = pathlib.Path(path) / registry.MARKER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no {registry.MARKER_FILE}; a paper-scale checkpoint names "
                                f"its role and arch there, e.g. {{\"role\": \"policy\", \"arch\": \"openvla-oft\"}}")
    return registry.read_config(path)


def find_one(path: str | pathlib.Path, stem: str, what: str) -> pathlib.Path:
    """The one weights file in `path` whose name starts with `stem` (e.g. OFT's
    `action_head--150000_checkpoint.pt`, or `action_head.safetensors`)."""
    path = pathlib.Path(path)
    found = sorted(f for f in path.iterdir() if f.is_file() and f.name.startswith(stem)
                   and f.name.endswith(WEIGHT_SUFFIXES)) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(f"checkpoint {path}: the {what} is missing: no file {stem}*"
                                f"{{{','.join(WEIGHT_SUFFIXES)}}}")
    if len(found) > 1:
        raise ValueError(f"checkpoint {path}: {len(found)} files could be the {what} "
                         f"({', '.join(f.name for f in found)}); keep one")
    return found[0]


def read_json(file: str | pathlib.Path, what: str) -> Any:
    """A JSON file that must exist, its path named in every error."""
    file = pathlib.Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {file.parent}: the {what} is missing: no {file.name}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from exc


def text_width(path: str | pathlib.Path) -> int:
    """The language model's hidden size from a LLaVA-family directory's config.json (its text_config),
    read without loading the backbone."""
    path = pathlib.Path(path)
    raw = read_json(path / registry.CONFIG_FILE, "backbone config")
    width = (raw.get("text_config") or {}).get("hidden_size") if isinstance(raw, dict) else None
    if not isinstance(width, int):
        raise ValueError(f"{path / registry.CONFIG_FILE}: text_config.hidden_size missing; not a LLaVA-family config")
    return width


def load_tensors(file: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch pickle (read with weights_only: no code runs);
    the `module.` prefix DDP training leaves on every key is removed."""
    file = pathlib.Path(file)
    try:
        if file.suffix == ".safetensors":
            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise their own types on a bad file
        raise ValueError(f"{file}: not a readable weights file ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file}: expected a flat dict of tensors (a state dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(module: torch.nn.Module, file: str | pathlib.Path) -> None:
    """Strictly load the weights in `file` into `module`; a mismatch names the file and key."""
    state = load_tensors(file)
    try:
        checkpoint.check_state(module.state_dict(), state)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None
    module.load_state_dict(state)


def save_tensors(state: dict[str, torch.Tensor], file: str | pathlib.Path) -> None:
    """Write a state dict as safetensors, atomically."""
    file = pathlib.Path(file)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    checkpoint.write_atomic(file, lambda f: save_file(state, str(f)))


def write_marker(path: str | pathlib.Path, config: dict[str, Any]) -> None:
    """Write `worldenv.json` (must name role and arch) into the directory `path`."""
    for key in ("role", "arch"):
        if not isinstance(config.get(key), str):
            raise ValueError(f"{registry.MARKER_FILE}: field {key!r} missing")
    text = json.dumps(config, indent=2) + "\n"
    checkpoint.write_atomic(pathlib.Path(path) / registry.MARKER_FILE, lambda f: f.write_text(text))


def backbone_files(path: str | pathlib.Path) -> list[pathlib.Path]:
    """The backbone's config and weight files in directory `path`."""
    path = pathlib.Path(path)
    return sorted({f for pattern in BACKBONE_FILES for f in path.glob(pattern) if f.is_file()})


def clear_backbone(path: str | pathlib.Path) -> None:
    """Remove the backbone files in `path` before new ones are written there (one may be a hard
    link to another checkpoint's file, which writing in place would change too)."""
    for f in backbone_files(path):
        f.unlink()


def reuse_backbone(source: pathlib.Path | None, dest: str | pathlib.Path) -> bool:
    """Give `dest` the frozen backbone of the checkpoint it was loaded from, `source`, without
    writing it again (a 7B backbone is 14 GB, and the RL trainer saves its policy every
    iteration): nothing to do when dest is source, else hard links (copies across file
    systems). False when there is no source (a fresh build): the caller writes the weights."""
    if source is None or not any(f.name.startswith("model") for f in backbone_files(source)):
        return False
    dest = pathlib.Path(dest)
    if dest.resolve() == source.resolve():
        return True
    clear_backbone(dest)
    for f in backbone_files(source):
        tmp = dest / f".{f.name}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(f, tmp)
        except OSError:
            shutil.copy2(f, tmp)
        os.replace(tmp, dest / f.name)
    return True
