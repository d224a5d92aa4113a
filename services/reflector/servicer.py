"""Reflector gRPC servicer: any `Reflector`; p(task done) per video, done = p > eta.

`Judge` takes whole videos. `Open` / `Observe` / `Close` keep each episode's video server-side
in a session (the model's own state, from `Reflector.start` / `observe`), so a caller sends
each frame once instead of the whole growing video every step.
"""
from __future__ import annotations

import time

import numpy as np

from worldenv.config import SERVICES, ServeConfig
from worldenv.models.roles import Reflector
from worldenv.services.common import validation as check
from worldenv.services.common.base import SessionService
from worldenv.services.common.errors import InvalidArgument, ResourceExhausted, rpc
from worldenv.services.common.server import timing
from worldenv.services.common.sessions import SESSION_ID_BYTES
from worldenv.services.common.spec import model_spec
from worldenv.v1 import reflector_pb2 as pb
from worldenv.v1 import reflector_pb2_grpc as pb_grpc
from worldenv.wire.grpc_codec import WireMessage

JUDGED_BYTES = 5    # per item of a Judge reply: p_done float32 and done bool
OBSERVED_BYTES = 10  # per item of an Observe reply: p_done, done and the video's length
OBSERVE = "observe"  # batcher key of Observe calls; Judge calls are keyed by their video length


class ReflectorService(SessionService, pb_grpc.ReflectorServicer):
    name = "reflector"
    full_name = SERVICES[name].proto
    service = pb.DESCRIPTOR.services_by_name["Reflector"]

    def __init__(self, model: Reflector, version: str, config: ServeConfig):
        super().__init__(config)
        self.model, self.spec, self.version = model, model.spec, version

    def admit_frames(self, count: int) -> None:
        """RESOURCE_EXHAUSTED when keeping `count` more frames would take the sessions' videos
        past --max-video-mb (a bound by construction: sessions can only grow by Observe)."""
        frame_bytes = 3 * self.spec.image_size ** 2
        limit = int(self.config.max_video_mb * 2**20 // frame_bytes)
        held = self.sessions.held()
        if held + count > limit:
            raise ResourceExhausted(f"max_video_mb: open sessions hold {held} frames "
                                    f"({held * frame_bytes / 2**20:.1f} MiB), {count} more requested, limit "
                                    f"{limit} frames ({self.config.max_video_mb:g} MiB); close sessions or wait "
                                    f"for the idle TTL")

    def run_batch(self, batch: dict) -> dict:
        if "states" in batch:  # Observe: sessions' videos, one new frame each
            p_done, states = self.model.observe(batch["states"], batch["frames"])
            return {"p_done": np.asarray(p_done, np.float32), "states": states}
        return {"p_done": np.asarray(self.model.judge(batch["frames"], batch["instructions"]), np.float32)}

    @rpc
    async def GetSpec(self, request, context):
        s = self.spec.image_size
        return model_spec("reflector", self.spec, self.version, self.config.max_batch_size,
                          inputs=[("frames", "uint8", (-1, -1, s, s, 3), "Judge: videos, oldest frame first"),
                                  ("frames", "uint8", (-1, s, s, 3), "Open: first frames; Observe: next frames")],
                          outputs=[("p_done", "float32", (-1,), "probability the task is done")],
                          eta=self.config.eta, max_request_items=self.config.max_request_items,
                          session_ttl_s=self.config.session_ttl_s, max_sessions=self.config.max_sessions,
                          max_video_mb=self.config.max_video_mb)

    @rpc
    async def Judge(self, request, context):
        received, s = time.perf_counter(), self.spec.image_size
        frames = check.tensor(request, "frames", "uint8", ["B", None, s, s, 3])
        if frames.shape[1] < 1:
            raise InvalidArgument("frames: expected at least one frame per video (T >= 1)")
        batch = len(frames)
        self.admit(batch, "frames", JUDGED_BYTES)
        instructions = check.strings(request.instructions, "instructions", batch)
        eta = check.probability(request.eta, "eta", self.config.eta)
        # Videos of different lengths cannot be concatenated: merge only equal T.
        out, info = await self.batcher.submit({"frames": frames, "instructions": instructions}, batch,
                                             key=frames.shape[1])
        p_done = out["p_done"]
        reply = pb.JudgeResponse(done=(p_done > eta).tolist(), eta=eta, timing=timing(info, received))
        return WireMessage(reply, p_done=p_done)

    @rpc
    async def Open(self, request, context):
        received, s = time.perf_counter(), self.spec.image_size
        frames = check.tensor(request, "frames", "uint8", ["B", s, s, 3])
        batch = len(frames)
        self.admit(batch, "frames", SESSION_ID_BYTES)
        instructions = check.strings(request.instructions, "instructions", batch)
        self.admit_frames(batch)
        states = await self.batcher.exclusive(lambda: self.model.start(frames, instructions))  # in the model's thread
        ids = self.sessions.open(states)
        return pb.OpenVideosResponse(session_ids=ids, timing={"total_ms": (time.perf_counter() - received) * 1000,
                                                              "batch_size": batch})

    @rpc
    async def Observe(self, request, context):
        received, s = time.perf_counter(), self.spec.image_size
        ids = check.session_ids(request.session_ids, "Observe")
        self.admit(len(ids), "session_ids", OBSERVED_BYTES)
        frames = check.tensor(request, "frames", "uint8", ["B", s, s, 3], len(ids))
        eta = check.probability(request.eta, "eta", self.config.eta)
        self.admit_frames(len(ids))
        sessions, out = self.sessions.acquire(ids), None
        try:
            out, info = await self.batcher.submit({"states": [x.state for x in sessions], "frames": frames}, len(ids),
                                                 key=OBSERVE)
        finally:
            self.sessions.release(sessions, out and out["states"])
        p_done = out["p_done"]
        reply = pb.ObserveResponse(done=(p_done > eta).tolist(), eta=eta, lengths=[x.steps + 1 for x in sessions],
                                   timing=timing(info, received))
        return WireMessage(reply, p_done=p_done)

    @rpc
    async def Close(self, request, context):
        return pb.CloseVideosResponse(closed=self.sessions.close(list(request.session_ids)))
