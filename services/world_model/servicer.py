"""WorldModel gRPC servicer: thin validation + sessions around `model.predict`."""
from __future__ import annotations

import asyncio
import time

import numpy as np

from worldenv.services.common import validation as check
from worldenv.services.common.base import BatchedService
from worldenv.services.common.errors import InvalidArgument, rpc
from worldenv.services.common.server import timing
from worldenv.services.common.spec import model_spec
from worldenv.services.world_model.sessions import SessionStore
from worldenv.config import ServeConfig
from worldenv.v1 import world_model_pb2 as pb
from worldenv.v1 import world_model_pb2_grpc as pb_grpc
from worldenv.wire import codec


def predict_batch(model, batch: dict) -> dict:
    """Batcher callback: (B, T, H, W, 3) history + (B, P) proprio + (B, K, A) actions -> next."""
    frames, proprio = model.predict(batch["history"], batch["proprio"], batch["actions"])
    return {"frames": frames, "proprio": proprio}


class WorldModelService(BatchedService, pb_grpc.WorldModelServicer):
    name, full_name = "world-model", "worldenv.v1.WorldModel"
    register, batch_fn = pb_grpc.add_WorldModelServicer_to_server, predict_batch

    def __init__(self, model, version: str, config: ServeConfig):
        super().__init__(config)
        self.model, self.version = model, version
        cfg = model.config
        s, self.history = cfg.image_size, cfg.history
        self.frame_shape = (s, s, 3)
        self.sessions = SessionStore(config.session_ttl_s, config.max_sessions)
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        await super().start()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        await super().stop()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(self.config.session_ttl_s / 4, 30.0)))
            self.sessions.sweep()

    @rpc
    async def GetSpec(self, request, context):
        cfg, s = self.model.config, self.model.config.image_size
        return model_spec(
            "world_model", self.model, self.version, self.config.max_batch_size,
            inputs=[("frames", "uint8", (-1, s, s, 3), "Open: start frames (or (B, T, H, W, 3) history)"),
                    ("proprio", "float32", (-1, cfg.proprio_dim), "Open: start proprio"),
                    ("actions", "float32", (-1, cfg.chunk_length, cfg.action_dim), "Step: action chunks")],
            outputs=[("frames", "uint8", (-1, s, s, 3), "Step: predicted frame after the chunk"),
                     ("proprio", "float32", (-1, cfg.proprio_dim), "Step: predicted proprio")],
            history=cfg.history, mode=getattr(cfg, "mode", ""), session_ttl_s=self.config.session_ttl_s,
            max_sessions=self.config.max_sessions)

    def _start_history(self, request) -> np.ndarray:
        """(B, H, W, 3) start frames are repeated into a (B, T, H, W, 3) memory bank."""
        frames = check.tensor(request, "frames", "uint8", None)
        if frames.ndim == 4:
            check.check_shape(frames, "frames", ["B", *self.frame_shape])
            return np.repeat(frames[:, None], self.history, axis=1)
        if frames.ndim != 5:
            raise InvalidArgument(f"frames: expected shape (B, {', '.join(map(str, self.frame_shape))}) or "
                                  f"(B, T, {', '.join(map(str, self.frame_shape))}), got {list(frames.shape)}")
        check.check_shape(frames, "frames", ["B", None, *self.frame_shape])
        if frames.shape[1] < 1:
            raise InvalidArgument("frames: history length T must be >= 1")
        padded = np.concatenate([np.repeat(frames[:, :1], max(0, self.history - frames.shape[1]), axis=1), frames], axis=1)
        return padded[:, -self.history:]

    @rpc
    async def Open(self, request, context):
        received = time.perf_counter()
        history = self._start_history(request)
        batch = len(history)
        proprio = check.tensor(request, "proprio", "float32", ["B", self.model.config.proprio_dim], batch, finite=True)
        instructions = check.strings(request.instructions, "instructions", batch)
        ids = self.sessions.open(history, proprio, instructions)
        return pb.OpenResponse(session_ids=ids, timing={"total_ms": (time.perf_counter() - received) * 1000, "batch_size": batch})

    def _step_ids(self, request) -> list[str]:
        ids = list(request.session_ids)
        if not ids:
            raise InvalidArgument("session_ids: expected at least one session id")
        if len(set(ids)) != len(ids):
            raise InvalidArgument("session_ids: each session may appear once per Step")
        return ids

    @rpc
    async def Step(self, request, context):
        received = time.perf_counter()
        ids = self._step_ids(request)
        cfg = self.model.config
        actions = check.tensor(request, "actions", "float32", ["B", cfg.chunk_length, cfg.action_dim], len(ids), finite=True)
        sessions = self.sessions.acquire(ids)
        frames = proprio = None
        try:
            inputs = {"history": np.stack([s.history for s in sessions]),
                      "proprio": np.stack([s.proprio for s in sessions]), "actions": actions}
            out, info = await self.batcher.submit(inputs, len(ids), context=self.model)
            frames, proprio = out["frames"], out["proprio"]
        finally:
            self.sessions.release(sessions, frames, proprio)
        return pb.StepResponse(frames=codec.encode(frames, "frames"), proprio=codec.encode(proprio, "proprio"),
                               steps=[s.steps for s in sessions], timing=timing(info, received))

    @rpc
    async def Close(self, request, context):
        return pb.CloseResponse(closed=self.sessions.close(list(request.session_ids)))
