"""What every model servicer shares: one dynamic batcher around `run_batch`, its metrics, and
their lifecycle."""
from __future__ import annotations

import asyncio

from google.protobuf.descriptor import ServiceDescriptor

from worldenv import prometheus
from worldenv.config import ServeConfig
from worldenv.services.common import validation as check
from worldenv.services.common.batching import Batch, DynamicBatcher
from worldenv.services.common.metrics import ServiceMetrics
from worldenv.services.common.sessions import SessionStore
from worldenv.wire import grpc_codec

REPLY_OVERHEAD = 1024  # bytes of a reply besides its per-item payload: tensor headers, timing, version


class BatchedService:
    """Mixin for a servicer: `run_batch(merged_inputs) -> outputs` runs behind a DynamicBatcher.

    Subclasses set `name`, `full_name` and `service` (the proto's ServiceDescriptor; its methods
    are registered with the wire codecs, Tensors as numpy views) and define `run_batch`, which calls their model. `metrics` count the batches and (through
    the `rpc` decorator) the calls; they are served while the service runs when
    `config.metrics_port` is set.
    """

    name: str
    full_name: str
    service: ServiceDescriptor

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = ServiceMetrics(self.name)
        self.batcher = DynamicBatcher(self.run_batch, config.max_batch_size, config.max_delay_ms, self.name,
                                      observer=self.metrics.observe_batch)
        self.metrics_endpoint: prometheus.MetricsEndpoint | None = None

    def run_batch(self, inputs: Batch) -> Batch:
        raise NotImplementedError

    def admit(self, batch: int, field: str, reply_item_bytes: int) -> None:
        """Refuse a request of `batch` items (counted in `field`) that is over the per-request
        limit, or whose reply (`reply_item_bytes` per item, from the model's spec) could not be
        sent, before it costs any compute."""
        reply = REPLY_OVERHEAD + batch * reply_item_bytes
        check.request_size(batch, field, self.config.max_request_items, reply, self.config.max_message_bytes)

    def add_to(self, server) -> None:
        grpc_codec.add_servicer(self, server, self.service)

    async def start(self) -> None:
        self.metrics_endpoint = prometheus.serve(self.metrics.registry, self.config.host, self.config.metrics_port)
        await self.batcher.start()

    async def stop(self) -> None:
        if self.metrics_endpoint is not None:
            await asyncio.to_thread(self.metrics_endpoint.stop)
            self.metrics_endpoint = None
        await self.batcher.stop()


class SessionService(BatchedService):
    """A BatchedService whose episodes live in server-side sessions (`--session-ttl-s`,
    `--max-sessions`), swept in the background while the service runs."""

    def __init__(self, config: ServeConfig):
        super().__init__(config)
        self.sessions = SessionStore(config.session_ttl_s, config.max_sessions)
        self.metrics.gauge("worldenv_sessions_open", "Sessions open now", lambda: len(self.sessions))
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        await super().start()
        self._sweeper = asyncio.create_task(self.sessions.sweep_forever())

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        await super().stop()
