"""Building the ModelSpec every service returns from GetSpec, from the model's own `Spec`."""
from __future__ import annotations

import numpy as np

from worldenv.models.roles import Spec
from worldenv.v1 import tensor_pb2
from worldenv.wire import codec


def tensor_spec(name: str, dtype: str, shape: tuple[int, ...], description: str) -> tensor_pb2.TensorSpec:
    """`shape` uses -1 for free dimensions (the batch B, history length T)."""
    return tensor_pb2.TensorSpec(name=name, dtype=codec.dtype_code(np.dtype(dtype)), shape=shape, description=description)


def model_spec(service: str, spec: Spec, version: str, max_batch_size: int, inputs, outputs,
               **extra) -> tensor_pb2.ModelSpec:
    """`extra` (server settings) joins the model's own extras, plus its arch."""
    merged = {"arch": spec.arch, **spec.extra, **extra}
    return tensor_pb2.ModelSpec(
        service=service, model_name=spec.name, model_version=version, image_size=spec.image_size,
        chunk_length=spec.chunk_length, action_dim=spec.action_dim, proprio_dim=spec.proprio_dim,
        max_batch_size=max_batch_size, inputs=[tensor_spec(*t) for t in inputs],
        outputs=[tensor_spec(*t) for t in outputs], extra={k: str(v) for k, v in merged.items()})
