"""What every model servicer shares: one dynamic batcher and its lifecycle."""
from __future__ import annotations

from collections.abc import Callable

from worldenv.config import ServeConfig
from worldenv.services.common.batching import DynamicBatcher


class BatchedService:
    """Mixin for a servicer: `batch_fn(context, inputs) -> outputs` runs behind a DynamicBatcher.

    Subclasses set `name`, `full_name`, `register` (the generated add_*Servicer_to_server)
    and `batch_fn`.
    """

    name: str
    full_name: str
    register: Callable
    batch_fn: Callable

    def __init__(self, config: ServeConfig):
        self.config = config
        self.batcher = DynamicBatcher(type(self).batch_fn, config.max_batch_size, config.max_delay_ms, self.name)

    def add_to(self, server) -> None:
        type(self).register(self, server)

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
