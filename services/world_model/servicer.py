"""WorldModel gRPC servicer: any `WorldModel`; session ids map to the model's opaque states."""
from __future__ import annotations

import time

from worldenv.config import SERVICES, ServeConfig
from worldenv.models.roles import StartStates, WorldModel
from worldenv.services.common import validation as check
from worldenv.services.common.base import SessionService
from worldenv.services.common.errors import InvalidArgument, rpc
from worldenv.services.common.server import timing
from worldenv.services.common.spec import model_spec
from worldenv.services.common.sessions import SESSION_ID_BYTES
from worldenv.v1 import world_model_pb2 as pb
from worldenv.v1 import world_model_pb2_grpc as pb_grpc
from worldenv.wire.grpc_codec import WireMessage


class WorldModelService(SessionService, pb_grpc.WorldModelServicer):
    name = "world-model"
    full_name = SERVICES[name].proto
    service = pb.DESCRIPTOR.services_by_name["WorldModel"]

    def __init__(self, model: WorldModel, version: str, config: ServeConfig):
        super().__init__(config)
        self.model, self.spec, self.version = model, model.spec, version

    def run_batch(self, batch: dict) -> dict:
        prediction, states = self.model.step(batch["states"], batch["actions"])
        return {"frames": prediction.frames, "proprio": prediction.proprio, "states": states}

    @rpc
    async def GetSpec(self, request, context):
        sp, s = self.spec, self.spec.image_size
        return model_spec(
            "world_model", sp, self.version, self.config.max_batch_size,
            inputs=[("frames", "uint8", (-1, s, s, 3), "Open: start frames (or (B, T, H, W, 3) history)"),
                    ("proprio", "float32", (-1, sp.proprio_dim), "Open: start proprio"),
                    ("actions", "float32", (-1, sp.chunk_length, sp.action_dim), "Step: action chunks")],
            outputs=[("frames", "uint8", (-1, s, s, 3), "Step: predicted frame after the chunk"),
                     ("proprio", "float32", (-1, sp.proprio_dim), "Step: predicted proprio")],
            session_ttl_s=self.config.session_ttl_s, max_sessions=self.config.max_sessions,
            max_request_items=self.config.max_request_items)

    @rpc
    async def Open(self, request, context):
        received, s = time.perf_counter(), self.spec.image_size
        frames = check.tensor(request, "frames", "uint8", None)
        check.check_shape(frames, "frames", ["B", s, s, 3] if frames.ndim != 5 else ["B", None, s, s, 3])
        if frames.ndim == 5 and frames.shape[1] < 1:
            raise InvalidArgument("frames: history length T must be >= 1")
        batch = len(frames)
        self.admit(batch, "frames", SESSION_ID_BYTES)
        proprio = check.tensor(request, "proprio", "float32", ["B", self.spec.proprio_dim], batch, finite=True)
        instructions = check.strings(request.instructions, "instructions", batch)
        starts = StartStates(frames, proprio, instructions)
        states = await self.batcher.exclusive(lambda: self.model.start(starts))  # in the model's thread
        ids = self.sessions.open(states)
        return pb.OpenResponse(session_ids=ids, timing={"total_ms": (time.perf_counter() - received) * 1000,
                                                        "batch_size": batch})

    @rpc
    async def Step(self, request, context):
        received, ids = time.perf_counter(), check.session_ids(request.session_ids, "Step")
        sp = self.spec
        self.admit(len(ids), "session_ids", sp.image_size ** 2 * 3 + sp.proprio_dim * 4 + 10)  # frame, proprio, steps
        actions = check.tensor(request, "actions", "float32", ["B", sp.chunk_length, sp.action_dim], len(ids),
                               finite=True)
        sessions, out = self.sessions.acquire(ids), None
        try:
            out, info = await self.batcher.submit({"states": [s.state for s in sessions], "actions": actions}, len(ids))
        finally:
            self.sessions.release(sessions, out and out["states"])
        reply = pb.StepResponse(steps=[s.steps for s in sessions], timing=timing(info, received))
        return WireMessage(reply, frames=out["frames"], proprio=out["proprio"])

    @rpc
    async def Close(self, request, context):
        return pb.CloseResponse(closed=self.sessions.close(list(request.session_ids)))
