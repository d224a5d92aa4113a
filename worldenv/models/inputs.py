"""Shape and dtype checks for model inputs, with errors that name the argument."""
from __future__ import annotations

import warnings

import numpy as np
import torch


# The services hand models read-only views of received messages, and torch warns on wrapping one
# (the tensor would be writable). Models only read their inputs: the warning is silenced once, at
# import, rather than per call (a catch_warnings block on every forward is slow and not thread-safe).
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


def _dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def _dtype_ok(x, dtype: str | None) -> bool:
    if dtype is None:
        return True
    if dtype == "float":
        return x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) or (
            isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating))
    return _dtype_name(x) == dtype


def _shape_ok(shape: tuple, spec: tuple, dims: dict[str, int]) -> bool:
    if len(shape) != len(spec):
        return False
    for size, want in zip(shape, spec):
        if isinstance(want, str):
            if dims.setdefault(want, size) != size:
                return False
        elif size != want:
            return False
    return True


def expect(name: str, x, spec: tuple, dtype: str | None = None, dims: dict[str, int] | None = None) -> None:
    """Raise ValueError unless `x` has shape `spec` and `dtype` ('uint8', 'float', ...).

    Strings in `spec` are named sizes ("B"); passing the same `dims` dict to several calls makes
    them agree across arguments.
    """
    dims = {} if dims is None else dims
    bound = dict(dims)
    if not hasattr(x, "shape") or not _dtype_ok(x, dtype) or not _shape_ok(tuple(x.shape), spec, dims):
        want = ", ".join(f"{s}={bound[s]}" if s in bound else str(s) for s in spec)
        got = f"{tuple(x.shape)} {_dtype_name(x)}" if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name}: expected ({want}){' ' + dtype if dtype else ''}, got {got}")


def expect_texts(name: str, texts, dims: dict[str, int]) -> None:
    """Raise ValueError unless `texts` is a list of B strings (B bound through `dims`)."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{name}: expected a list of strings")
    if dims.setdefault("B", len(texts)) != len(texts):
        raise ValueError(f"{name}: expected B={dims['B']} strings, got {len(texts)}")


def as_tensor(x, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """numpy array or tensor -> tensor on `device` (cast to `dtype` when given).

    Arrays the services decode are read-only views of the received message: they are wrapped
    without a copy (see the warning filter above)."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)
