"""Mixed precision at inference: which dtype a model's heavy layers run in under `torch.autocast`.

A runtime choice, not part of a checkpoint: the weights stay in the dtype they were loaded in
(`ServeConfig.dtype`), and autocast runs the convolutions and matmuls inside in a lower one.
'auto' picks bfloat16 where the device computes it natively (a CUDA GPU with bf16, a CPU whose
oneDNN has bf16 kernels: AVX512-BF16 or AMX), else none; elsewhere bf16 would be emulated and
slower than float32.
"""
from __future__ import annotations

import contextlib
from typing import get_args

import torch

from worldenv.config import Autocast

CHOICES = get_args(Autocast)


def native_bfloat16(device: str | torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (else torch emulates it, slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve(choice: str, device: str | torch.device) -> torch.dtype | None:
    """'none' | 'auto' | 'bfloat16' | 'float16' -> the autocast dtype on `device` (None: off)."""
    if choice not in CHOICES:
        raise ValueError(f"autocast: expected one of {list(CHOICES)}, got {choice!r}")
    if choice == "auto":
        return torch.bfloat16 if native_bfloat16(device) else None
    return None if choice == "none" else getattr(torch, choice)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast on `device`'s type in `dtype`; a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
