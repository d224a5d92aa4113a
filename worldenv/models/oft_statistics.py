"""OpenVLA-OFT's BOUNDS_Q99 normalisation, read from a checkpoint's dataset_statistics.json:
`Bounds` for one quantity (q01, q99, mask), `Statistics` for the action and proprio of one
`unnorm_key` entry (kept whole: written back as read)."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import torch

from worldenv.models import registry

STATS_FILE = "dataset_statistics.json"
EPS = 1e-8                             # OFT's guard in (q99 - q01 + eps)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """OFT's BOUNDS_Q99 normalisation of one quantity: q01, q99 (D,) float32 and mask (D,) bool;
    dims where mask is false pass unchanged."""

    q01: torch.Tensor
    q99: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def parse(cls, entry: Any, where: str, dim: int, dim_name: str) -> Bounds:
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with q01 and q99")
        values = {}
        for field in ("q01", "q99", "mask"):
            if field not in entry and field == "mask":
                continue
            value = entry.get(field)
            if not isinstance(value, list) or len(value) != dim:
                got = (f"{len(value)} values" if isinstance(value, list)
                       else "missing" if value is None else "not a list")
                raise ValueError(f"{where}[{field!r}]: {got}, expected {dim} ({dim_name})")
            values[field] = torch.tensor(value, dtype=torch.bool if field == "mask" else torch.float32)
        return cls(values["q01"], values["q99"], values.get("mask", torch.ones(dim, dtype=torch.bool)))

    def half_range(self, device: torch.device) -> torch.Tensor:
        """d x_env / d x_norm per dim (D,): (q99 - q01) / 2 where masked, else 1."""
        half = (self.q99 - self.q01 + EPS) / 2
        return torch.where(self.mask, half, torch.ones_like(half)).to(device)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D) env units -> [-1, 1], clipped (as OFT's inputs)."""
        low, half = self.q01.to(x.device), self.half_range(x.device)
        return torch.where(self.mask.to(x.device), (x - low) / half - 1, x).clamp(-1, 1)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., D) normalised -> env units (not clipped)."""
        low, half = self.q01.to(x.device), self.half_range(x.device)
        return torch.where(self.mask.to(x.device), (x + 1) * half + low, x)


@dataclasses.dataclass(frozen=True)
class Statistics:
    """The `unnorm_key` entry of dataset_statistics.json (kept whole: it is written back as read)."""

    entry: dict[str, Any]
    action: Bounds
    proprio: Bounds

    @classmethod
    def parse(cls, raw: Any, key: str, file: pathlib.Path, action_dim: int, proprio_dim: int) -> Statistics:
        if not isinstance(raw, dict) or key not in raw:
            present = sorted(raw) if isinstance(raw, dict) else []
            raise ValueError(f"{file}: no entry for unnorm_key {key!r} (from {registry.MARKER_FILE}); "
                             f"keys present: {present}")
        entry = raw[key]
        if not isinstance(entry, dict):
            raise ValueError(f"{file}: [{key!r}] is not an object")
        return cls(entry, Bounds.parse(entry.get("action"), f"{file}: [{key!r}]['action']", action_dim, "action_dim"),
                   Bounds.parse(entry.get("proprio"), f"{file}: [{key!r}]['proprio']", proprio_dim, "proprio_dim"))

    @classmethod
    def neutral(cls, action_dim: int, proprio_dim: int) -> Statistics:
        """A fresh build's: q01 = -1, q99 = 1 (identity), the last action dim (gripper) unmasked."""
        action = {"q01": [-1.0] * action_dim, "q99": [1.0] * action_dim,
                  "mask": [True] * (action_dim - 1) + [False]}
        proprio = {"q01": [-1.0] * proprio_dim, "q99": [1.0] * proprio_dim}
        return cls.parse({"k": {"action": action, "proprio": proprio}}, "k", pathlib.Path(STATS_FILE),
                         action_dim, proprio_dim)
