"""`demos collect`: scripted-expert demonstrations, kept only when they succeed."""
from __future__ import annotations

import json
import pathlib
import time

from pydantic import Field, model_validator

from worldenv.sim import suites
from worldenv.sim.job_settings import LiberoJobConfig, check_expert, image_size_field


class CollectConfig(LiberoJobConfig):
    """Scripted expert demos: keep `per_task` successes per task, trying init states 0, 1, ..."""

    image_size: int = image_size_field(64)  # what eval renders: train on the pixels the policy sees
    wrist: bool = Field(True, description="also render the wrist camera")
    per_task: int = Field(5, ge=1, description="successful demos to keep per task")
    max_attempts: int = Field(50, ge=1, description="init states tried per task at most")
    init_offset: int = Field(0, ge=0, description="first init state tried: 0-49 LIBERO's fixed ones, >= 50 new ones "
                                                 "sampled with that seed (keep the fixed ones for evaluation)")
    every_step: bool = Field(True, description="frames at every step (LIBERO's layout); --no-every-step = once per chunk")
    out: str = Field(description="output directory: <out>/<suite>/<task>_demo.hdf5")

    @model_validator(mode="after")
    def _feasible(self) -> "CollectConfig":
        if self.per_task > self.max_attempts:
            raise ValueError(f"--per-task ({self.per_task}) must be <= --max-attempts ({self.max_attempts})")
        fixed = suites.INIT_STATES_PER_TASK
        if self.init_offset < fixed < self.init_offset + self.max_attempts:
            raise ValueError(f"--max-attempts: init states {self.init_offset}..{self.init_offset + self.max_attempts - 1} "
                             f"run past LIBERO's {fixed} fixed ones; start at --init-offset {fixed} or above for sampled ones")
        check_expert(self)
        return self


def collect_demos(config: CollectConfig) -> int:
    """Write <out>/<suite>/<task>_demo.hdf5 with successful expert demos; log the success rate."""
    from worldenv.data import hdf5
    from worldenv.sim import episode, policies, pool, recording
    source = policies.ExpertSource()
    stats, started = {}, time.perf_counter()
    with pool.EnvPool(config.env_processes) as envs:
        for task in config.task_ids:
            kept, tried = _collect_task(envs, config, task, source)
            info = suites.task(config.suite, task)
            path = pathlib.Path(config.out) / config.suite / f"{info.name}_demo.hdf5"
            hdf5.write(path, recording.task_attrs(info, {"image_size": config.image_size, "source": "scripted expert"}),
                       [r.episode for r in kept])
            stats[task] = {"instruction": info.instruction, "kept": len(kept), "tried": len(tried),
                           "successes": sum(r.success for r in tried), "file": str(path),
                           "failures": [r.outcome for r in tried if not r.success]}
            print(f"{config.suite} task {task}: {stats[task]['successes']}/{len(tried)} expert successes, "
                  f"kept {len(kept)} -> {path}", flush=True)
    successes, tried = sum(s["successes"] for s in stats.values()), sum(s["tried"] for s in stats.values())
    summary = {"suite": config.suite, "success_rate": successes / max(tried, 1), "successes": successes,
               "tried": tried, "wall_s": time.perf_counter() - started, "tasks": stats}
    (pathlib.Path(config.out) / config.suite / "collect_log.json").write_text(json.dumps(summary, indent=2))
    print(f"expert success {successes}/{tried} = {100 * summary['success_rate']:.1f} %; "
          f"{summary['wall_s']:.0f} s", flush=True)
    return 0 if all(s["kept"] == config.per_task for s in stats.values()) else 1


def _collect_task(envs, config: CollectConfig, task: int, source):
    """Probe init states 0, 1, ... cheaply (frames once per chunk, nothing kept) in waves of the
    still-missing size, then record only the successes with full frames. The expert and the
    simulator are deterministic, so a replayed success succeeds again; failures, which run to
    the horizon, never pay for rendering every step."""
    from worldenv.sim import episode
    kept, tried, next_init = [], [], 0
    while len(kept) < config.per_task and next_init < config.max_attempts:
        wave = [suites.init_index(config.init_offset, i)
                for i in range(next_init, min(next_init + config.per_task - len(kept), config.max_attempts))]
        next_init += len(wave)
        probes = envs.map(lambda process, s: episode.run(process, s, source), [_demo_spec(config, task, i, False) for i in wave])
        tried += probes
        good = [_demo_spec(config, task, r.spec.init_index, True) for r in probes if r.success]
        kept += [r for r in envs.map(lambda process, s: episode.run(process, s, source), good) if r.success]
    return kept[: config.per_task], tried


def _demo_spec(config: CollectConfig, task: int, init: int, record: bool):
    from worldenv.sim import episode
    return episode.EpisodeSpec(config.env_config(task), init, suites.MAX_EPISODE_STEPS[config.suite],
                               record=record, render_each_step=record and config.every_step)
