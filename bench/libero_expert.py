"""Scripted expert success per LIBERO suite, on the standard init states (env pool, no rendering cost).

Usage: python bench/libero_expert.py [--suites libero_object,libero_spatial,libero_goal] [--inits 5] [--env-processes 2]
Prints one line per suite and a JSON summary; tasks the expert has no script for are listed and skipped.
"""
from __future__ import annotations

import argparse
import json
import time

from worldenv.sim import env as env_mod, episode, expert, policies, pool, suites


def supported_tasks(suite: str) -> tuple[list[int], list[int]]:
    ok, skipped = [], []
    for t in range(suites.num_tasks(suite)):
        try:
            expert.check_tasks(suite, [t])
            ok.append(t)
        except expert.UnsupportedTask:
            skipped.append(t)
    return ok, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="libero_object,libero_spatial,libero_goal")
    parser.add_argument("--inits", type=int, default=5, help="init states 0..n-1 per task")
    parser.add_argument("--env-processes", type=int, default=2)
    args = parser.parse_args()
    summary = {}
    with pool.EnvPool(args.env_processes) as envs:
        for suite in args.suites.split(","):
            tasks, skipped = supported_tasks(suite)
            specs = [episode.EpisodeSpec(env_mod.EnvConfig(suite, t), i, suites.MAX_EPISODE_STEPS[suite])
                     for t in tasks for i in range(args.inits)]
            started = time.perf_counter()
            results = envs.map(lambda w, s: episode.run(w, s, policies.ExpertSource()), specs)
            ok = sum(r.success for r in results)
            per_task = {t: sum(r.success for r in results if r.spec.config.task == t) for t in tasks}
            summary[suite] = {"successes": ok, "episodes": len(results), "rate": ok / len(results),
                              "per_task": per_task, "skipped_tasks": skipped,
                              "failures": [f"{r.spec.id}: {r.outcome}" for r in results if not r.success],
                              "wall_s": round(time.perf_counter() - started, 1)}
            print(f"{suite}: {ok}/{len(results)} = {100 * ok / len(results):.0f} % "
                  f"(tasks {tasks}, skipped {skipped}); per task {per_task}", flush=True)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
