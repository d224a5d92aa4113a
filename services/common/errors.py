"""Domain errors of the services and their gRPC status codes, mapped in one place."""
from __future__ import annotations

import functools
import logging
import time

import grpc

from worldenv.wire.codec import CodecError

log = logging.getLogger(__name__)


class ServiceFault(Exception):
    """Base: an error that crosses the wire as a status code with this message."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceFault):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceFault):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ServiceFault):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ServiceFault):
    code = grpc.StatusCode.FAILED_PRECONDITION


def out_of_memory(exc: BaseException) -> bool:
    """The model ran out of host or device memory (torch reports it as a RuntimeError)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()))


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a raised exception becomes on the wire."""
    if isinstance(exc, ServiceFault):
        return exc.code, str(exc)
    if isinstance(exc, CodecError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if out_of_memory(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of memory serving this request ({exc}); send fewer items"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def rpc(method):
    """Wrap an async unary servicer method: domain errors become status codes; the server
    keeps serving whatever the request did. Each answer is counted in the servicer's
    `metrics` (a ServiceMetrics), when it has them, with its status code and latency."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        received, code = time.perf_counter(), grpc.StatusCode.CANCELLED  # unless it returns or fails
        try:
            reply = await method(self, request, context)
            code = grpc.StatusCode.OK
            return reply
        except Exception as exc:  # noqa: BLE001 - every failure must become a status
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__name__)
            await context.abort(code, message)
        finally:
            metrics = getattr(self, "metrics", None)
            if metrics is not None:
                metrics.observe_rpc(method.__name__, code.name, time.perf_counter() - received)

    return wrapper
