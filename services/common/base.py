"""What every model servicer shares: one dynamic batcher around `run_batch`, and its lifecycle."""
from __future__ import annotations

from collections.abc import Callable

from worldenv.config import ServeConfig
from worldenv.services.common.batching import Batch, DynamicBatcher


class BatchedService:
    """Mixin for a servicer: `run_batch(merged_inputs) -> outputs` runs behind a DynamicBatcher.

    Subclasses set `name`, `full_name` and `register` (the generated add_*Servicer_to_server)
    and define `run_batch`, which calls their model.
    """

    name: str
    full_name: str
    register: Callable

    def __init__(self, config: ServeConfig):
        self.config = config
        self.batcher = DynamicBatcher(self.run_batch, config.max_batch_size, config.max_delay_ms, self.name)

    def run_batch(self, inputs: Batch) -> Batch:
        raise NotImplementedError

    def add_to(self, server) -> None:
        type(self).register(self, server)

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
