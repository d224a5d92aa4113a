"""Serving benchmark: ratios measured side by side in one run on this machine.

(a) served vs in-process WorldModel.Step throughput at B=8            (target >= 0.9)
(b) 8 concurrent clients at B=1 vs 1 client at B=8, batcher on        (target >= 0.8)
(c) codec encode+decode vs msgpack-numpy (openpi-client) on frames    (target > 1)

Usage: .venv/bin/python bench/serving.py [--steps 40] [--threads 1]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import time

import numpy as np
import torch

from worldenv import models
from worldenv.client.clients import WorldModelClient
from worldenv.config import ServeConfig
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer
from worldenv.wire import codec

RNG = np.random.default_rng(0)


def start_inputs(b: int, s: int = 64):
    return (RNG.integers(0, 256, (b, s, s, 3), dtype=np.uint8), RNG.standard_normal((b, 8)).astype(np.float32),
            RNG.uniform(-1, 1, (b, 8, 7)).astype(np.float32))


def in_process(model, steps: int, b: int = 8) -> float:
    """Steps/s of model.predict with a B=8 memory bank kept by the caller."""
    frames, proprio, actions = start_inputs(b)
    history = np.repeat(frames[:, None], model.config.history, axis=1)
    model.predict(history, proprio, actions)  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        frame, proprio = model.predict(history, proprio, actions)
        history = np.concatenate([history[:, 1:], frame[:, None]], axis=1)
    return steps / (time.perf_counter() - started)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for both sides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = models.build("world_model")
    config = ServeConfig(host="127.0.0.1", max_delay_ms=5.0, max_batch_size=32)
    print(f"world model {model.config.name} ({model.config.mode}), 64 px, torch threads {args.threads}")
    with RunningServer(create_service("world-model", config, model, "bench"), config) as server:
        local = in_process(model, args.steps)
        remote = served(server.address, args.steps, 8)
        one_b8 = remote * 8
        many_b1, mean_batch = concurrent_clients(server.address, args.steps, 8)
    print(f"(a) WorldModel.Step B=8: in-process {local:.2f} steps/s, served {remote:.2f} steps/s "
          f"-> ratio {remote / local:.3f} (target >= 0.9)")
    print(f"(b) 8 clients x B=1: {many_b1:.1f} items/s (mean merged batch {mean_batch:.1f}); "
          f"1 client x B=8: {one_b8:.1f} items/s -> ratio {many_b1 / one_b8:.3f} (target >= 0.8)")
    for shape, repeats in (((8, 64, 64, 3), 2000), ((8, 256, 256, 3), 200)):
        fast, proto, us = codec_ratio(shape, repeats)
        print(f"(c) codec {shape}: encode+decode {us:.1f} us; vs msgpack-numpy: fast path {fast:.2f}x, "
              f"protobuf message path {proto:.2f}x (target > 1)")


if __name__ == "__main__":
    main()
