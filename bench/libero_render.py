"""Simulator cost per step: rendering at every step vs once per action chunk, measured in one run.

Usage: python bench/libero_render.py [--suite libero_object --task 0 --size 64 --chunk 8 --steps 64 --rounds 3]
The setups alternate within each round (A, B, C, A, B, C, ...) so that load from other processes
on the machine hits them alike; the median over rounds is reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from worldenv.sim import env as env_mod

SETUPS = {  # name -> (render every n steps, cameras)
    "every step, agentview + wrist (LIBERO default)": (1, ("agentview", "robot0_eye_in_hand")),
    "every step, agentview": (1, ("agentview",)),
    "once per chunk, agentview": ("chunk", ("agentview",)),
    "once per chunk, agentview + wrist": ("chunk", ("agentview", "robot0_eye_in_hand")),
    "no rendering": (None, ()),
}


def ms_per_step(env: env_mod.LiberoEnv, steps: int, every, cameras, chunk: int, rng) -> float:
    env.reset(0, render=False)
    every = chunk if every == "chunk" else every
    started = time.perf_counter()
    for t in range(steps):
        env.step(np.concatenate([rng.uniform(-0.3, 0.3, 6), [-1.0]]))
        if every and (t + 1) % every == 0:
            for camera in cameras:
                env.render(camera)
    return (time.perf_counter() - started) * 1000 / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    env = env_mod.LiberoEnv(env_mod.EnvConfig(args.suite, args.task, args.size, wrist=True))
    times: dict[str, list[float]] = {name: [] for name in SETUPS}
    for r in range(args.rounds):
        for name, (every, cams) in SETUPS.items():
            times[name].append(ms_per_step(env, args.steps, every, cams, args.chunk, np.random.default_rng(r)))
    env.close()
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["every step, agentview"]
    print(f"{args.suite} task {args.task}, {args.size} px, chunk {args.chunk}, {args.steps} steps x {args.rounds} rounds")
    print("| setup | ms / step (median) | vs every step, agentview |\n|---|---|---|")
    for name, ms in med.items():
        print(f"| {name} | {ms:.1f} | {base / ms:.2f}x |")
    print(json.dumps({"config": vars(args), "ms_per_step": med, "all": times}))


if __name__ == "__main__":
    main()
