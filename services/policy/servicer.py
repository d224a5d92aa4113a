"""Policy gRPC servicer: any `Policy` model; action chunks with log-probs, in-place weight swaps."""
from __future__ import annotations

import asyncio
import time

from worldenv.config import SERVICES, ServeConfig
from worldenv.models import checkpoint
from worldenv.models.roles import Observations, Policy
from worldenv.services.common import validation as check
from worldenv.services.common.base import BatchedService
from worldenv.services.common.errors import InvalidArgument, rpc
from worldenv.services.common.server import timing
from worldenv.services.common.spec import model_spec
from worldenv.v1 import policy_pb2 as pb
from worldenv.v1 import policy_pb2_grpc as pb_grpc
from worldenv.wire.grpc_codec import WireMessage

OUTPUTS = ("loc", "scale", "actions", "log_probs")


class PolicyService(BatchedService, pb_grpc.PolicyServicer):
    """Weights are versioned: a request is tagged with the version it arrives under, runs on it
    (the batcher merges only equal versions), and a swap runs between batches, after every
    request that arrived before it - so the model is never copied."""

    name = "policy"
    full_name = SERVICES[name].proto
    service = pb.DESCRIPTOR.services_by_name["Policy"]

    def __init__(self, model: Policy, version: str, config: ServeConfig):
        super().__init__(config)
        self.model, self.spec, self.base_version = model, model.spec, version
        self.version, self.note = 1, f"initial: {version}"
        self.metrics.gauge("worldenv_policy_version", "Version of the weights new Act calls run on",
                           lambda: self.version)
        self._load_lock = asyncio.Lock()

    def run_batch(self, batch: dict) -> dict:
        obs = Observations(batch["frames"], batch["proprio"], batch["instructions"])
        return self.model.act(obs, batch["deterministic"], batch["seeds"]).as_dict()

    @rpc
    async def GetSpec(self, request, context):
        s, sp = self.spec.image_size, self.spec
        return model_spec("policy", sp, str(self.version), self.config.max_batch_size,
                          inputs=[("frames", "uint8", (-1, s, s, 3), "current observation"),
                                  ("proprio", "float32", (-1, sp.proprio_dim), "eef pos, axis-angle, gripper")],
                          outputs=[("actions", "float32", (-1, sp.chunk_length, sp.action_dim), "sampled chunk"),
                                   ("log_probs", "float32", (-1,), "log-density summed over the chunk")],
                          base=self.base_version, note=self.note, max_request_items=self.config.max_request_items)

    @rpc
    async def Act(self, request, context):
        received, s = time.perf_counter(), self.spec.image_size
        frames = check.tensor(request, "frames", "uint8", ["B", s, s, 3])
        batch = len(frames)
        self.admit(batch, "frames", 3 * self.spec.chunk_length * self.spec.action_dim * 4 + 4)  # 3 chunks, log-prob
        proprio = check.tensor(request, "proprio", "float32", ["B", self.spec.proprio_dim], batch, finite=True)
        instructions = check.strings(request.instructions, "instructions", batch)
        seeds = list(request.seeds) or [0] * batch
        if len(seeds) != batch:
            raise InvalidArgument(f"seeds: expected {batch} entries (one per batch item) or none, got {len(seeds)}")
        inputs = {"frames": frames, "proprio": proprio, "instructions": instructions, "seeds": seeds,
                  "deterministic": [request.deterministic] * batch}
        version = self.version  # read and queued with no await between: the swap cannot slip in
        out, info = await self.batcher.submit(inputs, batch, key=version)
        reply = pb.ActResponse(policy_version=version, timing=timing(info, received))
        return WireMessage(reply, {k: out[k] for k in OUTPUTS})

    @rpc
    async def LoadWeights(self, request_iterator, context):
        data, note = await _receive(request_iterator)
        received = len(data)
        state = await asyncio.get_running_loop().run_in_executor(None, self._checked_state, data)
        del data
        async with self._load_lock:
            version = self.version + 1
            self.version, self.note = version, note
            loaded = await self.batcher.exclusive(lambda: self.model.load_weights(state))
        return pb.LoadWeightsResponse(policy_version=version, bytes_received=received, tensors_loaded=loaded)

    def _checked_state(self, data: bytes) -> dict:
        try:
            state = checkpoint.state_from_bytes(data)
            self.model.check_weights(state)
        except ValueError as exc:
            raise InvalidArgument(f"data: not a loadable safetensors file for this policy: {exc}") from exc
        return state


async def _receive(request_iterator) -> tuple[bytes, str]:
    """The streamed safetensors bytes (one copy) and the note of the first chunk."""
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
    return data, note
