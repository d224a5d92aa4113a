"""The checkpoint format of our own archs: `config.json` + safetensors weights in a directory.

`config.json` is the model's pydantic config dumped as JSON, with its `role` and `arch` (what
`worldenv.models.registry.load` dispatches on). Weights are one `model.safetensors`, or shards
listed by `model.safetensors.index.json` (Hugging Face's layout, for large models). Files are
written atomically (a temporary file, then a rename), so a reader never sees half a
checkpoint file. Loading is strict: every key of the model must be present with its shape and
no other key may be, so a wrong checkpoint fails with the name of the first bad key.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
from typing import Any, ClassVar, TypeVar

import pydantic
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file, save_file

from worldenv.models import registry

CONFIG_FILE = registry.CONFIG_FILE
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

M = TypeVar("M", bound="Pretrained")


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' | 'bfloat16' | 'float16' (or a torch.dtype) -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


@contextlib.contextmanager
def creating_on(device: str | torch.device, dtype: str | torch.dtype):
    """Modules constructed inside are created directly on `device` in `dtype` (a 7B build in
    bfloat16 on a GPU never makes a float32 CPU copy first). Changes torch's process-wide
    default dtype for the duration: build models one at a time."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(dtype))
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def check_state(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> None:
    """Raise ValueError naming the first key that is missing, unexpected or of the wrong shape."""
    for key, tensor in expected.items():
        if key not in given:
            raise ValueError(f"weights: missing key {key!r}")
        if tuple(given[key].shape) != tuple(tensor.shape):
            raise ValueError(f"weights: key {key!r} has shape {tuple(given[key].shape)}, "
                             f"expected {tuple(tensor.shape)}")
    for key in given:
        if key not in expected:
            raise ValueError(f"weights: unexpected key {key!r}")


def write_atomic(path: pathlib.Path, write) -> None:
    """Call `write(tmp_path)`, then rename the result onto `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_weights(state: dict[str, torch.Tensor], path: str | pathlib.Path, metadata: dict[str, str] | None = None,
                 max_shard_bytes: int = 0) -> None:
    """Write `state` into directory `path`: one file, or shards + index past `max_shard_bytes`."""
    path = pathlib.Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    shards = _shard(state, max_shard_bytes) if max_shard_bytes else [state]
    if len(shards) == 1:
        write_atomic(path / WEIGHTS_FILE, lambda f: save_file(shards[0], str(f), metadata=metadata))
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_atomic(path / name, lambda f, s=shard: save_file(s, str(f), metadata=metadata))
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    write_atomic(path / INDEX_FILE, lambda f: f.write_text(json.dumps(index, indent=2) + "\n"))


def _shard(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def read_weights(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """The state dict of directory `path`: `model.safetensors`, or the shards its index lists."""
    path = pathlib.Path(path)
    if (path / WEIGHTS_FILE).is_file():
        return load_file(str(path / WEIGHTS_FILE))
    if not (path / INDEX_FILE).is_file():
        raise FileNotFoundError(f"checkpoint: neither {WEIGHTS_FILE} nor {INDEX_FILE} in {path}")
    weight_map = json.loads((path / INDEX_FILE).read_text()).get("weight_map", {})
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (path / shard).is_file():
            raise FileNotFoundError(f"checkpoint: shard {shard} listed in {INDEX_FILE} is missing from {path}")
        state.update(load_file(str(path / shard)))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"checkpoint: {INDEX_FILE} lists key {missing[0]!r}, which no shard holds")
    return state


def state_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """The state dict in the bytes of a safetensors file (ValueError if it is not one)."""
    try:
        return load_bytes(bytes(data))
    except Exception as exc:  # safetensors raises its own error types on bad headers
        raise ValueError(f"weights: not a safetensors file ({exc})") from exc


class Pretrained:
    """Mixin for our torch modules with a pydantic `config` carrying `role` and `arch`."""

    config_class: ClassVar[type[pydantic.BaseModel]]
    config: Any

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters."""
        return next(self.parameters()).dtype

    @classmethod
    def build(cls: type[M], device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
              **config_overrides) -> M:
        """A freshly initialised model, its config defaults overridden by keyword."""
        model = cls(cls.config_class(**config_overrides))
        return model.to(device=torch.device(device), dtype=torch_dtype(dtype)).eval()

    def save_pretrained(self, path: str | pathlib.Path, max_shard_bytes: int = 0) -> None:
        """Write `config.json` and the weights into the directory `path` (created)."""
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.config.model_dump(mode="json"), indent=2) + "\n"
        write_atomic(path / CONFIG_FILE, lambda f: f.write_text(text))
        save_weights(self.state_dict(), path, {"role": self.config.role, "arch": self.config.arch}, max_shard_bytes)

    @classmethod
    def from_pretrained(cls: type[M], path: str | pathlib.Path, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "float32") -> M:
        """Build the model from the config in `path`, load its weights, move to device/dtype."""
        raw = registry.read_config(path)
        arch = cls.config_class.model_fields["arch"].default
        if raw["arch"] != arch:
            raise ValueError(f"checkpoint {path} holds arch {raw['arch']!r}, not {arch!r}")
        model = cls(cls.config_class.model_validate(raw))
        model.load_weights(read_weights(path))
        return model.to(device=torch.device(device), dtype=torch_dtype(dtype)).eval()

    def publishable_state(self) -> dict[str, torch.Tensor]:
        """What `load_weights` takes: the whole state dict (a small model is trained whole; a
        paper-scale arch overrides this with its trained part). The tensors share the model's
        storage."""
        return self.state_dict()

    def check_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Raise ValueError naming the first key missing, unexpected or of the wrong shape."""
        check_state(self.publishable_state(), state)

    def load_weights(self, state: dict[str, torch.Tensor]) -> int:
        """Strictly copy `state` (the publishable set) into the model in place, cast to its
        device/dtype; returns the tensors loaded."""
        own = self.publishable_state()
        check_state(own, state)
        with torch.no_grad():
            for key, tensor in own.items():
                tensor.copy_(state[key])
        return len(own)
