"""Dynamic batcher: merges concurrent requests into one model call.

Requests carry B items each. The batcher takes the first waiting request, then keeps adding
requests with the same key until `max_batch_size` items or `max_delay_ms` have passed, runs the
model once on the concatenation (in a worker thread, so the event loop keeps accepting), and
splits the outputs back. This is the pattern of Triton's dynamic batcher and Ray Serve's
@serve.batch: many workers each with a small batch is the normal case.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
Batch = dict[str, Any]  # field -> np.ndarray with leading B, or list of B items


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """How one request was served: what the server reports in ServerTiming."""

    queue_ms: float
    compute_ms: float
    batch_size: int
    batch_requests: int


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """One model call of the batcher, as its observer (the service's metrics) sees it."""

    queue_s: tuple[float, ...]   # per merged request: seconds from its arrival to the call
    compute_s: float             # the model call, merge and split included
    items: int                   # B summed over the merged requests
    requests: int


@dataclasses.dataclass
class _Request:
    inputs: Batch
    size: int
    key: Any
    future: asyncio.Future
    enqueued: float
    exclusive: Callable[[], Any] | None = None   # runs alone, between batches, instead of fn


def merge(batches: list[Batch]) -> Batch:
    """Concatenate per-request batches field by field."""
    first = batches[0]
    if len(batches) == 1:
        return first
    out = {}
    for name, value in first.items():
        parts = [b[name] for b in batches]
        out[name] = np.concatenate(parts) if isinstance(value, np.ndarray) else [x for p in parts for x in p]
    return out


def split(outputs: Batch, sizes: list[int]) -> list[Batch]:
    """Inverse of `merge`: slice each output field back into per-request batches."""
    result, start = [], 0
    for size in sizes:
        result.append({name: value[start:start + size] for name, value in outputs.items()})
        start += size
    return result


class DynamicBatcher:
    """Merge concurrent `submit` calls into calls of `fn(merged_inputs) -> outputs`.

    Requests run in arrival order, and only requests with equal `key` merge (the policy keys by
    weights version). A batch waits up to `max_delay_ms` for more requests only while requests
    overlap (the last batch merged several, or more arrived while it ran): a lone client, which
    sends its next request only after the answer, never waits for others that cannot come. `fn` runs in one dedicated thread: model calls never overlap and the event
    loop stays free. `exclusive(job)` runs a job in that thread between two batches, after every
    request submitted before it and before any submitted after it (the policy's weight swap).
    `observer(stats)`, when given, is called once per model call that succeeded.
    """

    def __init__(self, fn: Callable[[Batch], Batch], max_batch_size: int, max_delay_ms: float,
                 name: str = "batcher", observer: Callable[[BatchStats], None] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.fn, self.max_batch_size, self.max_delay_s = fn, max_batch_size, max_delay_ms / 1000.0
        self.observer = observer
        self._overlapping = False  # requests overlapped at the last batch: worth waiting for more
        self._queue: asyncio.Queue[_Request] | None = None
        self._carry: _Request | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, inputs: Batch, size: int, key: Any = None) -> tuple[Batch, BatchInfo]:
        """Queue B=`size` items and wait for their outputs."""
        return await self._enqueue(_Request(inputs, size, key, self._future(), time.perf_counter()))

    async def exclusive(self, job: Callable[[], Any]) -> Any:
        """Run `job()` alone in the model thread, in queue order; returns its result."""
        request = _Request({}, 0, object(), self._future(), time.perf_counter(), exclusive=job)
        return await self._enqueue(request)

    def _future(self) -> asyncio.Future:
        if self._queue is None:
            raise RuntimeError("batcher not started")
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, request: _Request):
        self._queue.put_nowait(request)  # unbounded: never suspends, so arrival order is queue order
        return await request.future

    async def _next(self, timeout: float | None) -> _Request | None:
        if self._carry is not None:
            request, self._carry = self._carry, None
            return request
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait() if not self._queue.empty() else None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _gather(self) -> list[_Request]:
        first = await self._next(None)
        batch, total = [first], first.size
        deadline = time.perf_counter() + (self.max_delay_s if self._overlapping else 0.0)
        while total < self.max_batch_size and first.exclusive is None:
            request = await self._next(deadline - time.perf_counter())
            if request is None:
                break
            if request.key != first.key or total + request.size > self.max_batch_size:
                self._carry = request  # starts the next batch
                break
            batch.append(request)
            total += request.size
        return batch

    async def _run_exclusive(self, request: _Request) -> None:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, request.exclusive)
        except Exception as exc:  # noqa: BLE001 - delivered to the caller
            if not request.future.done():
                request.future.set_exception(exc)
            return
        if not request.future.done():
            request.future.set_result(result)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if batch[0].exclusive is not None:
                await self._run_exclusive(batch[0])  # runs even if its caller went away
                continue
            live = [r for r in batch if not r.future.cancelled()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                merged = merge([r.inputs for r in live])
                outputs = await loop.run_in_executor(self._executor, self.fn, merged)
                parts = split(outputs, [r.size for r in live])
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            compute_s = time.perf_counter() - started
            self._overlapping = len(live) > 1 or self._carry is not None or not self._queue.empty()
            size = sum(r.size for r in live)
            for r, part in zip(live, parts):
                if not r.future.done():
                    info = BatchInfo((started - r.enqueued) * 1000, compute_s * 1000, size, len(live))
                    r.future.set_result((part, info))
            self._observe(BatchStats(tuple(started - r.enqueued for r in live), compute_s, size, len(live)))

    def _observe(self, stats: BatchStats) -> None:
        """Hand `stats` to the observer; its failure is logged and never stops the batcher."""
        if self.observer is None:
            return
        try:
            self.observer(stats)
        except Exception:  # noqa: BLE001 - metrics must not take the service down
            log.exception("batch observer failed")
