"""Bootstrap shared by the three gRPC model services: options, auth, health, reflection,
graceful shutdown, and a background-thread runner for tests and benchmarks."""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from worldenv.services.common.auth import BearerTokenInterceptor
from worldenv.services.common.batching import BatchInfo
from worldenv.config import ServeConfig
from worldenv.v1 import tensor_pb2

log = logging.getLogger(__name__)


class ModelService(Protocol):
    """What a service module hands to the bootstrap."""

    name: str        # "world-model" | "reflector" | "policy"
    full_name: str   # proto service name, e.g. "worldenv.v1.WorldModel"

    def add_to(self, server: grpc.aio.Server) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def timing(info: BatchInfo, received: float) -> tensor_pb2.ServerTiming:
    """ServerTiming for a reply; `received` is time.perf_counter() at receipt."""
    return tensor_pb2.ServerTiming(queue_ms=info.queue_ms, compute_ms=info.compute_ms,
                                   total_ms=(time.perf_counter() - received) * 1000,
                                   batch_size=info.batch_size, batch_requests=info.batch_requests)


def message_options(limit: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


async def start_server(service: ModelService, config: ServeConfig, port: int) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build, bind and start the server; returns it with the bound port."""
    interceptors = [BearerTokenInterceptor(config.auth_token)] if config.auth_token else []
    server = grpc.aio.server(options=message_options(config.max_message_bytes), interceptors=interceptors)
    service.add_to(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [service.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{config.host}:{port}")
    if bound == 0:
        raise OSError(f"port: could not bind {config.host}:{port}")
    await service.start()
    await server.start()
    for name in ("", service.full_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health_servicer


async def shutdown(server: grpc.aio.Server, health_servicer, service: ModelService, grace_s: float = 5.0) -> None:
    """Report NOT_SERVING, let in-flight calls finish, then release the model."""
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_s)
    await service.stop()


async def serve_forever(service: ModelService, config: ServeConfig, port: int) -> None:
    """Run until SIGINT/SIGTERM."""
    server, bound, health_servicer = await start_server(service, config, port)
    print(f"{service.name} listening on {config.host}:{bound}", flush=True)
    endpoint = getattr(service, "metrics_endpoint", None)
    if endpoint is not None:
        print(f"{service.name} metrics on http://{endpoint.host}:{endpoint.port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("%s shutting down", service.name)
    await shutdown(server, health_servicer, service)


class RunningServer:
    """A service on a real gRPC server in a background thread (tests, benchmarks, `up`)."""

    def __init__(self, service: ModelService, config: ServeConfig, port: int = 0):
        self.service = service
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(config, port), daemon=True)
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        self.address = f"127.0.0.1:{self.port}"

    def _run(self, config: ServeConfig, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server, self.port, self._health = self._loop.run_until_complete(start_server(self.service, config, port))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._error is None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(shutdown(self._server, self._health, self.service, 1.0), self._loop)
            future.result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
