"""Building the ModelSpec every service returns from GetSpec."""
from __future__ import annotations

import numpy as np

from worldenv.v1 import tensor_pb2
from worldenv.wire import codec


def tensor_spec(name: str, dtype: str, shape: tuple[int, ...], description: str) -> tensor_pb2.TensorSpec:
    """`shape` uses -1 for free dimensions (the batch B, history length T)."""
    return tensor_pb2.TensorSpec(name=name, dtype=codec.dtype_code(np.dtype(dtype)), shape=shape, description=description)


def model_spec(service: str, model, version: str, max_batch_size: int, inputs, outputs, **extra) -> tensor_pb2.ModelSpec:
    cfg = model.config
    return tensor_pb2.ModelSpec(
        service=service, model_name=cfg.name, model_version=version, image_size=cfg.image_size,
        chunk_length=getattr(cfg, "chunk_length", 0), action_dim=getattr(cfg, "action_dim", 0),
        proprio_dim=getattr(cfg, "proprio_dim", 0), max_batch_size=max_batch_size,
        inputs=[tensor_spec(*t) for t in inputs], outputs=[tensor_spec(*t) for t in outputs],
        extra={k: str(v) for k, v in extra.items()})
