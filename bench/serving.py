"""Serving benchmark: ratios measured side by side in one run on this machine.

(a) served vs in-process WorldModel.Step throughput at B=8            (target >= 0.95)
(b) 8 concurrent clients at B=1 vs 1 client at B=8, batcher on        (target >= 0.8)
(c) codec encode+decode vs msgpack-numpy (openpi-client) on frames    (target > 1); and a gRPC
    echo round trip (a real grpc.aio server on a free port, the array decoded and sent back) with
    the wire codec, protobuf's message path and msgpack-numpy as the (de)serializers
    (target: wire codec >= 3x msgpack-numpy on (8, 256, 256, 3) uint8, >= 1x on (64, 8, 7) float32)
(d) served vs in-process Policy.Act throughput at B=8, seeded items
(e) LoadWeights: the server's peak memory during a swap, as a multiple of the weights' size
    (the weights are loaded in place; a copy of the model would add 1x more)
(f) Reflector bytes per episode of T steps: Judge resending the whole video every step (grows
    with T^2) vs sessions (Open, then Observe sends one frame per step: grows with T)

Usage: .venv/bin/python bench/serving.py [--steps 40] [--threads 1]
(the image runs with MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=33554432; under glibc's
dynamic default the copies of 1.5 MB messages can fault fresh pages and the (c) figures move)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import functools
import gc
import os
import pathlib
import time

import grpc
import numpy as np
import torch

from safetensors.torch import save as save_bytes

from worldenv import models
from worldenv.client.clients import PolicyClient, WorldModelClient
from worldenv.models.roles import Observations, StartStates
from worldenv.config import ServeConfig
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer
from worldenv.v1 import reflector_pb2, reflector_pb2_grpc
from worldenv.wire import codec

RNG = np.random.default_rng(0)


def start_inputs(b: int, s: int = 64):
    return (RNG.integers(0, 256, (b, s, s, 3), dtype=np.uint8), RNG.standard_normal((b, 8)).astype(np.float32),
            RNG.uniform(-1, 1, (b, 8, 7)).astype(np.float32))


def in_process(model, steps: int, b: int = 8) -> float:
    """Steps/s of the WorldModel interface (start, then step) with the states kept by the caller."""
    frames, proprio, actions = start_inputs(b)
    states = model.start(StartStates(frames, proprio, [""] * b))
    _, states = model.step(states, actions)  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        _, states = model.step(states, actions)
    return steps / (time.perf_counter() - started)


def policy_ratio(steps: int, b: int = 8) -> tuple[float, float]:
    """Act calls/s at B, seeded, in-process through the Policy interface and served."""
    torch.manual_seed(0)
    model = models.build("policy")
    frames, proprio, _ = start_inputs(b)
    obs, seeds = Observations(frames, proprio, ["pick up the bowl"] * b), list(range(1, b + 1))
    model.act(obs, seeds=seeds)
    started = time.perf_counter()
    for _ in range(steps):
        model.act(obs, seeds=seeds)
    local = steps / (time.perf_counter() - started)
    config = ServeConfig(host="127.0.0.1", max_delay_ms=0.0)  # one client: waiting for others only adds latency
    with RunningServer(create_service("policy", config, model, "bench"), config) as server, \
            PolicyClient(server.address) as client:
        client.act(frames, proprio, obs.instructions, seed=seeds)
        started = time.perf_counter()
        for _ in range(steps):
            client.act(frames, proprio, obs.instructions, seed=seeds)
        remote = steps / (time.perf_counter() - started)
    return local, remote


def _status_mb(field: str) -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def swap_peak(width: int = 1536) -> tuple[float, float]:
    """(weights MiB, peak RSS above the pre-swap RSS during one LoadWeights, MiB)."""
    torch.manual_seed(0)
    model = models.build("policy", width=width)
    state = {k: torch.randn_like(v).contiguous() for k, v in model.state_dict().items()}
    weights_mb = sum(t.numel() * t.element_size() for t in state.values()) / 2**20
    data = save_bytes(state)
    del state
    config = ServeConfig(host="127.0.0.1", max_message_mb=weights_mb * 2)
    with RunningServer(create_service("policy", config, model, "bench"), config) as server, \
            PolicyClient(server.address) as client:
        gc.collect()
        base = _status_mb("VmRSS")
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        client.load_weights(data, chunk_bytes=4 << 20)
        peak = _status_mb("VmHWM")
    return weights_mb, peak - base


def served(address: str, steps: int, b: int) -> float:
    """Requests/s of one client stepping B sessions."""
    frames, proprio, actions = start_inputs(b)
    with WorldModelClient(address) as client:
        ids = client.open(frames, proprio, [""] * b)
        client.step(ids, actions)  # warm-up
        started = time.perf_counter()
        for _ in range(steps):
            client.step(ids, actions)
        elapsed = time.perf_counter() - started
        client.close_sessions(ids)
    return steps / elapsed


def concurrent_clients(address: str, steps: int, clients: int) -> tuple[float, float]:
    """Items/s of `clients` threads each stepping one session; also the mean merged batch size."""
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        frames, proprio, actions = start_inputs(1)

        def run(_):
            with WorldModelClient(address) as client:
                ids = client.open(frames, proprio, [""])
                client.step(ids, actions)
                sizes = [client.step(ids, actions).timing.batch_size for _ in range(steps)]
                return sizes

        started = time.perf_counter()
        sizes = [s for part in pool.map(run, range(clients)) for s in part]
        elapsed = time.perf_counter() - started
    return clients * steps / elapsed, float(np.mean(sizes))


def codec_ratio(shape, repeats: int) -> tuple[float, float, float]:
    import msgpack
    from openpi_client import msgpack_numpy

    frames = RNG.integers(0, 256, shape, dtype=np.uint8)

    def ours():
        return codec.from_bytes(codec.to_bytes(frames))

    def proto():
        from worldenv.v1 import tensor_pb2
        return codec.decode(tensor_pb2.Tensor.FromString(codec.encode(frames).SerializeToString()))

    def theirs():
        return msgpack_numpy.unpackb(msgpack_numpy.packb(frames))

    for fn in (ours, proto, theirs):
        assert np.array_equal(fn(), frames)
    times = {}
    for name, fn in (("ours", ours), ("proto", proto), ("theirs", theirs)):
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            best = min(best, (time.perf_counter() - started) / repeats)
        times[name] = best
    _ = msgpack
    return times["theirs"] / times["ours"], times["theirs"] / times["proto"], times["ours"] * 1e6


class EchoCodec:
    """How one codec carries an array over gRPC: `wrap`/`unwrap` between the array and the
    message, `serialize`/`parse` between the message and its bytes (the channel's and the
    handler's (de)serializers)."""

    def __init__(self, wrap, unwrap, serialize, parse):
        self.wrap, self.unwrap, self.serialize, self.parse = wrap, unwrap, serialize, parse

    def round_trip(self, arr: np.ndarray) -> np.ndarray:
        """What a call costs in (de)serialization alone: request out and in, reply out and in."""
        for _ in range(2):
            arr = self.unwrap(self.parse(self.serialize(self.wrap(arr))))
        return arr


def echo_codecs() -> dict[str, EchoCodec]:
    """The wire codec, protobuf's message path and msgpack-numpy, each echoing a StepResponse-
    shaped message (any Tensor field carries any array) or msgpack-numpy's bytes."""
    from openpi_client import msgpack_numpy

    from worldenv.v1 import world_model_pb2
    from worldenv.wire.grpc_codec import MessageCodec, WireMessage

    reply = world_model_pb2.StepResponse
    wire = MessageCodec(reply)
    return {
        "wire codec": EchoCodec(lambda a: WireMessage(reply(), frames=a), lambda m: m.array("frames"),
                                wire.serialize, wire.parse),
        "protobuf": EchoCodec(lambda a: reply(frames=codec.encode(a)), lambda m: codec.decode(m.frames),
                              reply.SerializeToString, reply.FromString),
        "msgpack-numpy": EchoCodec(lambda a: a, lambda a: a, msgpack_numpy.packb, msgpack_numpy.unpackb),
    }


ECHO_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


class EchoServer:
    """A grpc.aio server on 127.0.0.1:<free port> in a background thread, one method per codec
    that decodes the array and sends it back encoded (the work of a service, no model)."""

    def __init__(self, codecs: dict[str, EchoCodec], options=ECHO_OPTIONS):
        import asyncio
        import threading

        import grpc

        self._loop, ready = asyncio.new_event_loop(), threading.Event()
        handlers = {name.replace(" ", "_"): grpc.unary_unary_rpc_method_handler(
            self._echo(c), request_deserializer=c.parse, response_serializer=c.serialize) for name, c in codecs.items()}

        async def start():
            self.server = grpc.aio.server(options=options)
            self.server.add_registered_method_handlers("bench.Echo", handlers)
            self.port = self.server.add_insecure_port("127.0.0.1:0")
            await self.server.start()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(30)

    @staticmethod
    def _echo(c: EchoCodec):
        async def echo(request, context):
            return c.wrap(c.unwrap(request))
        return echo

    def stop(self) -> None:
        import asyncio
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


def _best_times(fns: dict, repeats: int, rounds: int = 9) -> dict[str, float]:
    """Seconds per call of each function: the best of `rounds`, the functions taking turns in
    every round, in a rotating order, so that the load of the machine falls on all of them alike."""
    best, names = dict.fromkeys(fns, float("inf")), list(fns)
    for turn in range(rounds):
        for name in names[turn % len(names):] + names[:turn % len(names)]:  # each goes first in turn
            fn = fns[name]
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            best[name] = min(best[name], (time.perf_counter() - started) / repeats)
    return best


def _call(c: EchoCodec, fn, arr: np.ndarray) -> np.ndarray:
    return c.unwrap(fn(c.wrap(arr), timeout=60))


def grpc_round_trip(shapes_repeats, options=ECHO_OPTIONS) -> list[tuple[tuple, dict[str, float], dict[str, float]]]:
    """Per shape: seconds per served echo call and per (de)serialization alone, by codec."""
    import grpc

    codecs = echo_codecs()
    server = EchoServer(codecs, options)
    results = []
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as ch:
        calls = {name: ch.unary_unary(f"/bench.Echo/{name.replace(' ', '_')}", request_serializer=c.serialize,
                                      response_deserializer=c.parse, _registered_method=True)
                 for name, c in codecs.items()}
        for shape, repeats in shapes_repeats:
            arr = (RNG.integers(0, 256, shape, dtype=np.uint8) if len(shape) == 4
                   else RNG.standard_normal(shape).astype(np.float32))
            served = {name: functools.partial(_call, c, calls[name], arr) for name, c in codecs.items()}
            alone = {name: functools.partial(c.round_trip, arr) for name, c in codecs.items()}
            for name in codecs:
                assert np.array_equal(served[name](), arr) and np.array_equal(alone[name](), arr)
            results.append((shape, _best_times(served, repeats), _best_times(alone, repeats)))
    server.stop()
    return results


def reflector_episode(stub, video: np.ndarray, sessions: bool) -> tuple[int, float]:
    """One episode's reflector traffic for a video (1, T + 1, H, W, 3): protobuf bytes of every
    request and reply (a stock protobuf stub; the server's wire codec writes the same bytes), and
    wall ms. Judge: the whole video so far at each of the T steps; sessions: Open with the first
    frame, one Observe per step with the new frame, Close."""
    total, started = 0, time.perf_counter()

    def call(method, request):
        nonlocal total
        reply = getattr(stub, method)(request)
        total += request.ByteSize() + reply.ByteSize()
        return reply

    if not sessions:
        for t in range(1, video.shape[1]):
            call("Judge", reflector_pb2.JudgeRequest(frames=codec.encode(video[:, :t + 1]), instructions=["task"]))
        return total, (time.perf_counter() - started) * 1000
    ids = call("Open", reflector_pb2.OpenVideosRequest(frames=codec.encode(video[:, 0]), instructions=["task"])).session_ids
    for t in range(1, video.shape[1]):
        call("Observe", reflector_pb2.ObserveRequest(session_ids=ids, frames=codec.encode(video[:, t])))
    call("Close", reflector_pb2.CloseVideosRequest(session_ids=ids))
    return total, (time.perf_counter() - started) * 1000


def reflector_bytes(lengths=(8, 16, 32), s: int = 64) -> list[tuple[int, int, int, float, float]]:
    """(T, Judge bytes, sessions bytes, Judge ms, sessions ms) per episode of T steps at s px."""
    torch.manual_seed(0)
    config = ServeConfig(host="127.0.0.1", max_delay_ms=0.0)
    rows = []
    with RunningServer(create_service("reflector", config, models.build("reflector"), "bench"), config) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = reflector_pb2_grpc.ReflectorStub(channel)
        reflector_episode(stub, RNG.integers(0, 256, (1, 3, s, s, 3), dtype=np.uint8), True)  # warm-up
        for length in lengths:
            video = RNG.integers(0, 256, (1, length + 1, s, s, 3), dtype=np.uint8)
            (judge_b, judge_ms), (session_b, session_ms) = (reflector_episode(stub, video, sessions)
                                                            for sessions in (False, True))
            rows.append((length, judge_b, session_b, judge_ms, session_ms))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for both sides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = models.build("world_model")
    config = ServeConfig(host="127.0.0.1", max_delay_ms=5.0, max_batch_size=32)
    allocator = os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc's dynamic default")
    print(f"world model {model.config.name} ({model.config.mode}), 64 px, torch threads {args.threads}, "
          f"malloc mmap threshold {allocator}")
    with RunningServer(create_service("world-model", config, model, "bench"), config) as server:
        local = in_process(model, args.steps)
        remote = served(server.address, args.steps, 8)
        one_b8 = remote * 8
        many_b1, mean_batch = concurrent_clients(server.address, args.steps, 8)
    print(f"(a) WorldModel.Step B=8: in-process {local:.2f} steps/s, served {remote:.2f} steps/s "
          f"-> ratio {remote / local:.3f} (target >= 0.95)")
    print(f"(b) 8 clients x B=1: {many_b1:.1f} items/s (mean merged batch {mean_batch:.1f}); "
          f"1 client x B=8: {one_b8:.1f} items/s -> ratio {many_b1 / one_b8:.3f} (target >= 0.8)")
    for shape, repeats in (((8, 64, 64, 3), 2000), ((8, 256, 256, 3), 200)):
        fast, proto, us = codec_ratio(shape, repeats)
        print(f"(c) codec {shape}: encode+decode {us:.1f} us; vs msgpack-numpy: fast path {fast:.2f}x, "
              f"protobuf message path {proto:.2f}x (target > 1)")
    for shape, served_s, alone_s in grpc_round_trip((((8, 256, 256, 3), 40), ((64, 8, 7), 400))):
        ratio = {name: served_s["msgpack-numpy"] / t for name, t in served_s.items()}
        codec_only = {name: alone_s["msgpack-numpy"] / t for name, t in alone_s.items()}
        print(f"(c) gRPC echo round trip {shape} {np.dtype('uint8' if len(shape) == 4 else 'float32').name}: "
              f"wire codec {served_s['wire codec'] * 1e6:.0f} us, protobuf {served_s['protobuf'] * 1e6:.0f} us, "
              f"msgpack-numpy {served_s['msgpack-numpy'] * 1e6:.0f} us -> vs msgpack-numpy: wire codec "
              f"{ratio['wire codec']:.2f}x, protobuf {ratio['protobuf']:.2f}x; (de)serialization alone: wire codec "
              f"{codec_only['wire codec']:.2f}x, protobuf {codec_only['protobuf']:.2f}x")
    local, remote = policy_ratio(args.steps * 4)
    print(f"(d) Policy.Act B=8 seeded: in-process {local:.1f} calls/s, served {remote:.1f} calls/s "
          f"-> ratio {remote / local:.3f}")
    weights_mb, extra_mb = swap_peak()
    print(f"(e) LoadWeights of {weights_mb:.0f} MiB: peak RSS +{extra_mb:.0f} MiB during the swap "
          f"= {extra_mb / weights_mb:.2f}x the weights (received bytes + decoded tensors; no model copy)")
    print("(f) Reflector bytes per episode (protobuf requests + replies), 64 px, one episode of T steps:")
    print(f"    {'T':>3} {'Judge, whole video':>19} {'sessions':>10} {'ratio':>7} {'Judge ms':>9} {'sessions ms':>12}")
    for length, judge_b, session_b, judge_ms, session_ms in reflector_bytes():
        print(f"    {length:>3} {judge_b / 2**20:>15.2f} MiB {session_b / 2**20:>6.2f} MiB {judge_b / session_b:>6.1f}x "
              f"{judge_ms:>9.0f} {session_ms:>12.0f}")


if __name__ == "__main__":
    main()
