"""Reflector gRPC servicer: any `Reflector`; p(task done) per video, done = p > eta."""
from __future__ import annotations

import time

import numpy as np

from worldenv.config import SERVICES, ServeConfig
from worldenv.models.roles import Reflector
from worldenv.services.common import validation as check
from worldenv.services.common.base import BatchedService
from worldenv.services.common.errors import InvalidArgument, rpc
from worldenv.services.common.server import timing
from worldenv.services.common.spec import model_spec
from worldenv.v1 import reflector_pb2 as pb
from worldenv.v1 import reflector_pb2_grpc as pb_grpc
from worldenv.wire.grpc_codec import WireMessage


class ReflectorService(BatchedService, pb_grpc.ReflectorServicer):
    name = "reflector"
    full_name = SERVICES[name].proto
    service = pb.DESCRIPTOR.services_by_name["Reflector"]

    def __init__(self, model: Reflector, version: str, config: ServeConfig):
        super().__init__(config)
        self.model, self.spec, self.version = model, model.spec, version

    def run_batch(self, batch: dict) -> dict:
        return {"p_done": np.asarray(self.model.judge(batch["frames"], batch["instructions"]), np.float32)}

    @rpc
    async def GetSpec(self, request, context):
        s = self.spec.image_size
        return model_spec("reflector", self.spec, self.version, self.config.max_batch_size,
                          inputs=[("frames", "uint8", (-1, -1, s, s, 3), "videos, oldest frame first")],
                          outputs=[("p_done", "float32", (-1,), "probability the task is done")],
                          eta=self.config.eta, max_request_items=self.config.max_request_items)

    @rpc
    async def Judge(self, request, context):
        received, s = time.perf_counter(), self.spec.image_size
        frames = check.tensor(request, "frames", "uint8", ["B", None, s, s, 3])
        if frames.shape[1] < 1:
            raise InvalidArgument("frames: expected at least one frame per video (T >= 1)")
        batch = len(frames)
        self.admit(batch, "frames", 5)  # p_done float32 and done bool
        instructions = check.strings(request.instructions, "instructions", batch)
        eta = check.probability(request.eta, "eta", self.config.eta)
        # Videos of different lengths cannot be concatenated: merge only equal T.
        out, info = await self.batcher.submit({"frames": frames, "instructions": instructions}, batch,
                                             key=frames.shape[1])
        p_done = out["p_done"]
        reply = pb.JudgeResponse(done=(p_done > eta).tolist(), eta=eta, timing=timing(info, received))
        return WireMessage(reply, p_done=p_done)
