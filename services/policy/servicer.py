"""Policy gRPC servicer: any `Policy` model; action chunks with log-probs, in-place weight swaps
(pushed with LoadWeights, or pulled from the weights store the trainer publishes to)."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import redis

from worldenv.config import SERVICES, ServeConfig
from worldenv.data.policy_weights import PolicyWeightsStore, PublishedWeights
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

log = logging.getLogger(__name__)
OUTPUTS = ("loc", "scale", "actions", "log_probs")


class PolicyService(BatchedService, pb_grpc.PolicyServicer):
    """Weights are versioned: a request is tagged with the version it arrives under, runs on it
    (the batcher merges only equal versions), and a swap runs between batches, after every
    request that arrived before it - so the model is never copied.

    `instance` is new each time a server starts: with `base` (its checkpoint) in GetSpec, it lets
    the trainer tell a replica that restarted on its initial weights from one it published to."""

    name = "policy"
    full_name = SERVICES[name].proto
    service = pb.DESCRIPTOR.services_by_name["Policy"]

    def __init__(self, model: Policy, version: str, config: ServeConfig):
        super().__init__(config)
        self.model, self.spec, self.base_version = model, model.spec, version
        self.version, self.note = 1, f"initial: {version}"
        self.instance = uuid.uuid4().hex[:12]
        self.metrics.gauge("worldenv_policy_version", "Version of the weights new Act calls run on",
                           lambda: self.version)
        self._load_lock = asyncio.Lock()
        self._poller: asyncio.Task | None = None

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
                          base=self.base_version, note=self.note, instance=self.instance,
                          max_request_items=self.config.max_request_items)

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
        data, note, wanted = await _receive(request_iterator)
        received = len(data)
        state = await asyncio.get_running_loop().run_in_executor(None, self._checked_state, data)
        del data
        version, loaded = await self._swap(state, wanted, note)
        return pb.LoadWeightsResponse(policy_version=version, bytes_received=received, tensors_loaded=loaded)

    async def _swap(self, state: dict, version: int, note: str, only_newer: bool = False) -> tuple[int, int]:
        """Serve `state` as `version` (0 = the current one + 1); returns it and the tensors loaded.
        `only_newer`: keep the served weights if a push made them as new meanwhile."""
        async with self._load_lock:
            if only_newer and version <= self.version:
                return self.version, 0
            version = version or self.version + 1
            self.version, self.note = version, note
            loaded = await self.batcher.exclusive(lambda: self.model.load_weights(state))
        return version, loaded

    async def start(self) -> None:
        await super().start()
        if self.config.weights_redis_url:
            client = redis.Redis.from_url(self.config.weights_redis_url, socket_timeout=10)
            store = PolicyWeightsStore(client, self.config.weights_prefix)
            await self._catch_up(store)   # before the server reports SERVING
            self._poller = asyncio.create_task(self._poll(store, client))

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        await super().stop()

    async def _poll(self, store: PolicyWeightsStore, client: redis.Redis) -> None:
        try:
            while True:
                await asyncio.sleep(self.config.weights_poll_s)
                await self._catch_up(store)
        finally:
            client.close()

    async def _catch_up(self, store: PolicyWeightsStore) -> None:
        """Load the store's newest weights if they are newer than those served; a store that
        cannot be read or weights that do not fit are logged, and the served ones kept."""
        try:
            newer = await asyncio.to_thread(self._newer, store)
            if newer is None:
                return
            state = await asyncio.to_thread(self._checked_state, newer.data)
        except (redis.RedisError, InvalidArgument) as exc:
            log.warning("weights store %s: %s", store.key, exc)
            return
        _, loaded = await self._swap(state, newer.version, newer.note, only_newer=True)
        if loaded:
            log.info("loaded policy version %d from the weights store (%s)", newer.version, newer.note)

    def _newer(self, store: PolicyWeightsStore) -> PublishedWeights | None:
        if store.version() <= self.version:
            return None
        weights = store.get()
        return weights if weights is not None and weights.version > self.version else None

    def _checked_state(self, data: bytes) -> dict:
        try:
            state = checkpoint.state_from_bytes(data)
            self.model.check_weights(state)
        except ValueError as exc:
            raise InvalidArgument(f"data: not a loadable safetensors file for this policy: {exc}") from exc
        return state


async def _receive(request_iterator) -> tuple[bytes, str, int]:
    """The streamed safetensors bytes (one copy), the note and the version of the first chunk."""
    chunks, note, total, version = [], "", 0, 0
    async for chunk in request_iterator:
        if not chunks:
            note, total, version = chunk.note, chunk.total_bytes, chunk.version
        chunks.append(chunk.data)
    data = b"".join(chunks)
    if not data:
        raise InvalidArgument("data: the stream carried no safetensors bytes")
    if total and total != len(data):
        raise InvalidArgument(f"total_bytes: announced {total} bytes, received {len(data)}")
    if version < 0:
        raise InvalidArgument(f"version: must be 0 (the current version + 1) or a positive version, got {version}")
    return data, note, version
