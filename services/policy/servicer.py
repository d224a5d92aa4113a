"""Policy gRPC servicer: Laplace action chunks with log-probs; versioned hot weight swaps."""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import time

import numpy as np
import torch

from worldenv.services.common import validation as check
from worldenv.services.common.base import BatchedService
from worldenv.services.common.errors import InvalidArgument, rpc
from worldenv.services.common.server import timing
from worldenv.services.common.spec import model_spec
from worldenv.config import ServeConfig
from worldenv.v1 import policy_pb2 as pb
from worldenv.v1 import policy_pb2_grpc as pb_grpc
from worldenv.wire import codec


@dataclasses.dataclass(frozen=True)
class Weights:
    """One immutable policy version; requests hold a reference to the one they arrived under."""

    version: int
    model: torch.nn.Module
    note: str = ""


def act_batch(weights: Weights, batch: dict) -> dict:
    """Batcher callback on one weights version: (B, H, W, 3) frames, (B, P) proprio -> chunks.

    With no seed, the whole batch samples in one call; once any item is seeded, every item runs
    on its own (seeded or unseeded) generator, so merging requests never changes what a seeded
    request samples. Deterministic items answer loc as the action.
    """
    seeds = [int(s) for s in batch["seed"]]
    rows = [(slice(i, i + 1), s) for i, s in enumerate(seeds)] if any(seeds) else [(slice(None), 0)]
    parts = []
    for row, seed in rows:
        gen = torch.Generator().manual_seed(seed) if seed else None
        parts.append(weights.model.act(batch["frames"][row], batch["proprio"][row],
                                       batch["instructions"][row], deterministic=False, generator=gen))
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("loc", "scale", "actions", "log_probs")}
    det = np.asarray(batch["deterministic"], bool)
    if det.any():
        # Laplace log-density at its location: sum over (K, A) of -log(2 b).
        at_loc = (-np.log(2 * out["scale"])).sum(axis=(1, 2)).astype(np.float32)
        out["actions"] = np.where(det[:, None, None], out["loc"], out["actions"]).astype(np.float32)
        out["log_probs"] = np.where(det, at_loc, out["log_probs"]).astype(np.float32)
    return out


class PolicyService(BatchedService, pb_grpc.PolicyServicer):
    name, full_name = "policy", "worldenv.v1.Policy"
    register, batch_fn = pb_grpc.add_PolicyServicer_to_server, act_batch

    def __init__(self, model, version: str, config: ServeConfig):
        super().__init__(config)
        self.base_version = version
        self.weights = Weights(1, model, f"initial: {version}")
        s, c = model.config.image_size, model.config
        self.frame_shape, self.proprio_dim = (s, s, 3), c.proprio_dim
        self._load_lock = asyncio.Lock()

    @rpc
    async def GetSpec(self, request, context):
        w = self.weights
        c, s = w.model.config, w.model.config.image_size
        return model_spec("policy", w.model, str(w.version), self.config.max_batch_size,
                          inputs=[("frames", "uint8", (-1, s, s, 3), "current observation"),
                                  ("proprio", "float32", (-1, c.proprio_dim), "eef pos, axis-angle, gripper")],
                          outputs=[("actions", "float32", (-1, c.chunk_length, c.action_dim), "sampled chunk"),
                                   ("log_probs", "float32", (-1,), "log-density summed over the chunk")],
                          base=self.base_version, note=w.note)

    @rpc
    async def Act(self, request, context):
        received = time.perf_counter()
        weights = self.weights  # the version this request runs on, whatever loads meanwhile
        frames = check.tensor(request, "frames", "uint8", ["B", *self.frame_shape])
        batch = len(frames)
        proprio = check.tensor(request, "proprio", "float32", ["B", self.proprio_dim], batch, finite=True)
        instructions = check.strings(request.instructions, "instructions", batch)
        seeds = list(request.seeds) or [0] * batch
        if len(seeds) != batch:
            raise InvalidArgument(f"seeds: expected {batch} entries (one per batch item) or none, got {len(seeds)}")
        inputs = {"frames": frames, "proprio": proprio, "instructions": instructions,
                  "seed": seeds, "deterministic": [request.deterministic] * batch}
        out, info = await self.batcher.submit(inputs, batch, key=weights.version, context=weights)
        return pb.ActResponse(**{k: codec.encode(out[k], k) for k in ("loc", "scale", "actions", "log_probs")},
                              policy_version=weights.version, timing=timing(info, received))

    @rpc
    async def LoadWeights(self, request_iterator, context):
        chunks, note, total = [], "", 0
        async for chunk in request_iterator:
            if not chunks:
                note, total = chunk.note, chunk.total_bytes
            chunks.append(chunk.data)
        data = b"".join(chunks)
        if not data:
            raise InvalidArgument("data: the stream carried no safetensors bytes")
        if total and total != len(data):
            raise InvalidArgument(f"total_bytes: announced {total} bytes, received {len(data)}")
        async with self._load_lock:
            model = copy.deepcopy(self.weights.model)
            try:
                loaded = await asyncio.get_running_loop().run_in_executor(None, model.load_safetensors_bytes, data)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is the caller's input
                raise InvalidArgument(f"data: not a loadable safetensors file for this policy: {exc}") from exc
            self.weights = Weights(self.weights.version + 1, model.eval(), note)
        return pb.LoadWeightsResponse(policy_version=self.weights.version, bytes_received=len(data), tensors_loaded=loaded)
