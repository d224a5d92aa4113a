"""Checkpoint format shared by every model: a directory with `config.json` + `model.safetensors`.

`config.json` is the model's pydantic config dumped as JSON; its `"kind"` field ("policy",
"world_model" or "reflector") tells `worldenv.models.load_pretrained` which class to build.
`model.safetensors` holds the state dict. Loading is strict: every key of the model must be
present with its shape, and no other key may be, so a wrong checkpoint fails loudly with the
name of the first bad key instead of half-loading.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, ClassVar, TypeVar

import pydantic
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

M = TypeVar("M", bound="Pretrained")


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' | 'bfloat16' | 'float16' (or a torch.dtype) -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def read_config(path: str | pathlib.Path) -> dict[str, Any]:
    """The raw config dict of the checkpoint directory `path` (must carry a 'kind' field)."""
    file = pathlib.Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in checkpoint directory {path}")
    config = json.loads(file.read_text())
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"{file}: expected a JSON object with a 'kind' field")
    return config


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


class Pretrained:
    """Mixin for torch modules with a pydantic `config`: save/load in the checkpoint format."""

    config_class: ClassVar[type[pydantic.BaseModel]]
    config: pydantic.BaseModel

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters."""
        return next(self.parameters()).dtype

    def save_pretrained(self, path: str | pathlib.Path) -> None:
        """Write `config.json` and `model.safetensors` into the directory `path` (created)."""
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(self.config.model_dump(mode="json"), indent=2) + "\n")
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE), metadata={"kind": self.config.kind})

    @classmethod
    def from_pretrained(cls: type[M], path: str | pathlib.Path, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "float32") -> M:
        """Build the model from the config in `path`, load its weights, move to device/dtype."""
        raw = read_config(path)
        kind = cls.config_class.model_fields["kind"].default
        if raw["kind"] != kind:
            raise ValueError(f"checkpoint {path} holds a {raw['kind']!r}, not a {kind!r}")
        model = cls(cls.config_class.model_validate(raw))
        model.load_state(load_file(str(pathlib.Path(path) / WEIGHTS_FILE)))
        return model.to(device=torch.device(device), dtype=torch_dtype(dtype)).eval()

    def load_safetensors_bytes(self, data: bytes) -> int:
        """Load weights from the bytes of a safetensors file; strict; returns tensors loaded."""
        try:
            state = load_bytes(bytes(data))
        except Exception as exc:  # safetensors raises its own error types on bad headers
            raise ValueError(f"weights: not a safetensors file ({exc})") from exc
        return self.load_state(state)

    def load_state(self, state: dict[str, torch.Tensor]) -> int:
        """Strictly copy `state` into the model (cast to its device/dtype); returns tensors loaded."""
        own = self.state_dict()
        check_state(own, state)
        with torch.no_grad():
            for key, tensor in own.items():
                tensor.copy_(state[key])
        return len(own)
