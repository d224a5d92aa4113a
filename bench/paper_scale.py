"""Paper-scale smoke test: the three paper-scale archs, one batched call each, in process and
through their gRPC services, side by side in one run.

    policy       openvla-oft   Act at B = 8 (a 7B-class LLaVA-layout backbone at size "full")
    reflector    llava-reward  Judge at B = 8 of 32-frame videos (a LLaVA-class VLM at "full")
    world model  video-unet    Open + Step at B = 8 (a 256 px video U-Net at "full")

Random weights at the size asked for (built directly on the device, in the dtype), so the
figures are cost, not quality. Per role it records build time, parameters, latency of one
batched call in process and served (median of --reps after one warm-up), served/in-process
throughput, and peak memory (CUDA's allocator peak on a GPU, the process's peak RSS on a CPU).

On a GPU: `python bench/paper_scale.py` (size full, bfloat16). Without one the same script runs
at reduced width on the CPU (size small, float32) and the report says so.
Writes reports/paper-scale.md (and prints it), keeping its "## Notes" section.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import pathlib
import platform
import resource
import statistics
import time

import numpy as np
import torch

from worldenv import models
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.config import ServeConfig
from worldenv.models.roles import Observations, StartStates
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCHS = {"policy": "openvla-oft", "reflector": "llava-reward", "world_model": "video-unet"}
SERVICE = {"policy": "policy", "reflector": "reflector", "world_model": "world-model"}
INSTRUCTION = "put the bowl on the plate"
NOTES = "## Notes"


@dataclasses.dataclass
class Row:
    role: str
    arch: str
    params_m: float
    build_s: float
    in_process_ms: float
    served_ms: float
    peak_gb: float

    @property
    def ratio(self) -> float:
        return self.in_process_ms / self.served_ms


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def timed(calls: dict, reps: int) -> dict[str, float]:
    """Median wall time in ms of each call over `reps` rounds, after one warm-up round; the
    calls take turns within every round, so a change in the machine's load falls on all alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(reps + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if round_:
                times[name].append((time.perf_counter() - started) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def calls(role: str, model, batch: int, frames_per_video: int, rng: np.random.Generator):
    """(in-process call, served call given a connected client) for one batched request."""
    spec = model.spec
    s = spec.image_size
    frames = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    proprio = rng.standard_normal((batch, spec.proprio_dim or 8)).astype(np.float32)
    texts = [INSTRUCTION] * batch
    if role == "policy":
        obs = Observations(frames, proprio, texts)
        seeds = list(range(1, batch + 1))
        return (lambda: model.act(obs, seeds=seeds),
                lambda c: c.act(frames, proprio, texts, seed=seeds))
    if role == "reflector":
        videos = rng.integers(0, 256, (batch, frames_per_video, s, s, 3), dtype=np.uint8)
        return lambda: model.judge(videos, texts), lambda c: c.judge(videos, texts)
    actions = rng.uniform(-1, 1, (batch, spec.chunk_length, spec.action_dim)).astype(np.float32)
    states = model.start(StartStates(frames, proprio, texts))
    sessions: list[list[str]] = []

    def served(c):
        if not sessions:
            sessions.append(c.open(frames, proprio, texts))
        return c.step(sessions[0], actions)
    return lambda: model.step(states, actions), served


CLIENTS = {"policy": PolicyClient, "reflector": ReflectorClient, "world_model": WorldModelClient}


def measure(role: str, size: str, device: torch.device, dtype: str, batch: int, reps: int,
            frames_per_video: int) -> Row:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    started = time.perf_counter()
    model = models.build(ARCHS[role], device=device, dtype=dtype, size=size)
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters()) / 1e6
    local, remote = calls(role, model, batch, frames_per_video, np.random.default_rng(0))
    config = ServeConfig(host="127.0.0.1", device=str(device), dtype=dtype, max_delay_ms=0.0,
                         max_message_mb=512.0, max_request_items=max(256, batch))
    with RunningServer(create_service(SERVICE[role], config, model, "smoke"), config, port=0) as server, \
            CLIENTS[role](server.address, timeout_s=3600.0, max_message_mb=512.0) as client:
        ms = timed({"in_process": local, "served": lambda: remote(client)}, reps)
    row = Row(role, ARCHS[role], params, build_s, ms["in_process"], ms["served"], peak_gb(device))
    del model, local, remote
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "unknown CPU")
    return f"CPU only: {cpu}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def report(rows: list[Row], args, device: torch.device) -> str:
    lines = ["# Paper-scale smoke test", "",
             f"Machine: {machine(device)}.",
             f"Command: `python bench/paper_scale.py --size {args.size} --device {device} --dtype {args.dtype} "
             f"--batch {args.batch} --reps {args.reps} --frames {args.frames}`.", ""]
    if device.type != "cuda":
        lines += ["**No GPU was available for this run**, so the archs ran at reduced width (size "
                  f"`{args.size}`) on the CPU, in {args.dtype}. The figures show that the paper-scale "
                  "layouts build, serve and batch through the unchanged services; they say nothing "
                  "about GPU latency or memory at the real sizes.", ""]
    lines += ["Random weights; one batched request of B = "
              f"{args.batch} per role (the reflector judges {args.frames}-frame videos); median of "
              f"{args.reps} rounds after one warm-up round, in process and served taking turns. Served = through the role's gRPC service on "
              "127.0.0.1 (dynamic batcher, max delay 0). Peak memory: "
              + ("CUDA allocator peak since the role's build." if device.type == "cuda"
                 else "the process's peak RSS so far (cumulative over the rows)."), "",
              "| role | arch | parameters (M) | build (s) | in process (ms) | served (ms) | served / in-process throughput | peak memory (GiB) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.role} | {r.arch} | {r.params_m:,.1f} | {r.build_s:.1f} | {r.in_process_ms:,.1f} | "
                     f"{r.served_ms:,.1f} | {r.ratio:.3f} | {r.peak_gb:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="auto", choices=["auto", "full", "small", "tiny"],
                        help="auto: full on a GPU, small (reduced width) on the CPU")
    parser.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="auto: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32, help="frames per video the reflector judges")
    parser.add_argument("--roles", default="policy,reflector,world_model")
    parser.add_argument("--out", default=str(ROOT / "reports" / "paper-scale.md"), help="'' = print only")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if args.device == "auto" and gpu else "cpu" if args.device == "auto" else args.device)
    args.size = args.size if args.size != "auto" else "full" if device.type == "cuda" else "small"
    args.dtype = args.dtype if args.dtype != "auto" else "bfloat16" if device.type == "cuda" else "float32"
    rows = []
    for role in args.roles.split(","):
        rows.append(measure(role, args.size, device, args.dtype, args.batch, args.reps, args.frames))
        print(json.dumps({**dataclasses.asdict(rows[-1]), "ratio": round(rows[-1].ratio, 3)}), flush=True)
    text = report(rows, args, device)
    print(text)
    if args.out:
        out = pathlib.Path(args.out)
        old = out.read_text() if out.is_file() else ""
        notes = old[old.index(NOTES):] if NOTES in old else ""  # hand-written notes survive a rerun
        out.write_text(text + ("\n" + notes if notes else ""))


if __name__ == "__main__":
    main()
