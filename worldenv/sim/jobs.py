"""The four LIBERO jobs: collect expert demos, build a start-state bank, explore, evaluate.

Each job = a typed config (validated at construction, before any env starts) + `main(config)`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time

from worldenv.sim import suites

log = logging.getLogger("worldenv.sim")


class BadArguments(ValueError):
    """A config that cannot run; the message says what was wrong."""


@dataclasses.dataclass
class _Base:
    suite: str = "libero_object"
    tasks: str = "all"
    image_size: int = 64
    wrist: bool = False
    env_processes: int = 0
    out: str = ""

    def __post_init__(self):
        from worldenv.sim import install, pool
        try:
            suites.check_suite(self.suite)
            self.task_ids = suites.parse_tasks(self.suite, self.tasks)
            self.env_processes = pool.check_size(self.env_processes)
        except (suites.SuiteError, pool.PoolError, install.LiberoNotInstalled) as exc:
            raise BadArguments(str(exc)) from None
        if not 16 <= self.image_size <= 512:
            raise BadArguments(f"--image-size {self.image_size}: expected 16..512")
        if not self.out:
            raise BadArguments("--out is required")

    @classmethod
    def from_args(cls, args) -> "_Base":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    def env_config(self, task: int, image_size: int | None = None):
        from worldenv.sim.env import EnvConfig
        return EnvConfig(self.suite, task, image_size or self.image_size, self.wrist)


def _check_expert(suite: str, tasks: list[int]) -> None:
    from worldenv.sim import expert
    try:
        expert.check_tasks(suite, tasks)
    except expert.UnsupportedTask as exc:
        raise BadArguments(str(exc)) from None


# --- demos collect ------------------------------------------------------------------------------

@dataclasses.dataclass
class CollectConfig(_Base):
    """Scripted expert demos: keep `per_task` successes per task, trying init states 0, 1, ..."""

    image_size: int = 128
    wrist: bool = True
    per_task: int = 5
    max_attempts: int = 50
    every_step: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.per_task <= self.max_attempts <= suites.INIT_STATES_PER_TASK:
            raise BadArguments(f"need 1 <= --per-task ({self.per_task}) <= --max-attempts ({self.max_attempts}) <= 50")
        _check_expert(self.suite, self.task_ids)


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
        wave = range(next_init, min(next_init + config.per_task - len(kept), config.max_attempts))
        next_init = wave.stop
        probes = envs.map(lambda process, s: episode.run(process, s, source), [_demo_spec(config, task, i, False) for i in wave])
        tried += probes
        good = [_demo_spec(config, task, r.spec.init_index, True) for r in probes if r.success]
        kept += [r for r in envs.map(lambda process, s: episode.run(process, s, source), good) if r.success]
    return kept[: config.per_task], tried


def _demo_spec(config: CollectConfig, task: int, init: int, record: bool):
    from worldenv.sim import episode
    return episode.EpisodeSpec(config.env_config(task), init, suites.MAX_EPISODE_STEPS[config.suite],
                               record=record, render_each_step=record and config.every_step)


# --- starts build -------------------------------------------------------------------------------

@dataclasses.dataclass
class StartsConfig(_Base):
    """Render the first observation of init states into a StartBank."""

    inits: str = "0-9"

    def __post_init__(self):
        super().__post_init__()
        spec = "0-49" if self.inits == "all" else self.inits
        try:
            self.init_ids = _parse_range(spec, suites.INIT_STATES_PER_TASK, "init state")
        except ValueError as exc:
            raise BadArguments(str(exc)) from None


def _parse_range(spec: str, n: int, what: str) -> list[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"{what} {bad[0]} out of range (0..{n - 1})")
    return sorted(out)


def build_starts(config: StartsConfig) -> int:
    """Write a StartBank .npz: frames, proprio, instructions, ids 'suite/task/init'."""
    import numpy as np
    from worldenv.data.start_bank import StartBank
    from worldenv.sim import pool

    def first_obs(process, job):
        task, init = job
        instruction = process.call("open", config=config.env_config(task))
        return job, instruction, process.call("reset", init_index=init)

    jobs_ = [(t, i) for t in config.task_ids for i in config.init_ids]
    with pool.EnvPool(config.env_processes) as envs:
        rows = envs.map(first_obs, jobs_)
    bank = StartBank(frames=np.stack([o.frame for _, _, o in rows]), proprio=np.stack([o.proprio for _, _, o in rows]),
                     instructions=[ins for _, ins, _ in rows],
                     ids=[f"{config.suite}/{t}/{i}" for (t, i), _, _ in rows],
                     meta={"suite": config.suite, "image_size": config.image_size, "source": "libero",
                           "settle_steps": config.env_config(0).settle_steps},
                     wrist_frames=np.stack([o.wrist for _, _, o in rows]) if config.wrist else None)
    path = bank.save(config.out)
    print(f"{len(bank)} start states -> {path}", flush=True)
    return 0


# --- explore and eval ---------------------------------------------------------------------------

@dataclasses.dataclass
class _PolicyRun(_Base):
    policy: str = ""
    auth_token: str | None = None
    episodes_per_task: int = 50
    init_offset: int = 0
    max_steps: int = 0
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.episodes_per_task < 1:
            raise BadArguments("--episodes-per-task must be >= 1")
        self.max_steps = self.max_steps or suites.MAX_EPISODE_STEPS[self.suite]
        self.source = self._open_source()  # connects now: an unreachable policy fails before any env

    def _open_source(self):
        from worldenv.sim import policies
        if self.policy == "expert":
            _check_expert(self.suite, self.task_ids)
        try:
            return policies.open_source(self.policy, auth_token=self.auth_token, seed=self.seed)
        except policies.PolicyUnavailable as exc:
            raise BadArguments(str(exc)) from None

    def specs(self, **kw) -> list:
        from worldenv.sim import episode
        size = self.source.image_size or self.image_size
        n = suites.INIT_STATES_PER_TASK
        return [episode.EpisodeSpec(self.env_config(t, size), (self.init_offset + e) % n, self.max_steps,
                                    self.source.chunk_length, **kw)
                for t in self.task_ids for e in range(self.episodes_per_task)]


@dataclasses.dataclass
class ExploreConfig(_PolicyRun):
    """Run a policy with Laplace-sampled actions; record successes and failures."""

    noise: str = "laplace"
    episodes_per_task: int = 10


def explore(config: ExploreConfig) -> int:
    """Write <out>/<suite>/<task>_demo.hdf5 with every episode (per-frame success labels, log-probs)."""
    from worldenv.data import hdf5
    from worldenv.sim import episode, pool, recording
    specs = config.specs(record=True, deterministic=config.noise == "none")
    with pool.EnvPool(config.env_processes) as envs, _progress(len(specs), "explore") as bar:
        results = envs.map(lambda process, s: episode.run(process, s, config.source), specs, on_result=lambda r: bar.update(1))
    config.source.close()
    for task in config.task_ids:
        info = suites.task(config.suite, task)
        episodes = [r.episode for r in results if r.spec.config.task == task and r.episode is not None]
        path = pathlib.Path(config.out) / config.suite / f"{info.name}_demo.hdf5"
        hdf5.write(path, recording.task_attrs(info, {"source": "exploration", "policy": config.source.name,
                                                "noise": config.noise}), episodes)
    ok = sum(r.success for r in results)
    crashed = sum(r.failed_to_run for r in results)
    print(f"explore: {ok}/{len(results)} successes, {crashed} failed to run -> {config.out}", flush=True)
    return 0


@dataclasses.dataclass
class EvalConfig(_PolicyRun):
    """Success rate per task and suite on LIBERO's standard init states."""

    termination: str = "sim"
    reflector: str | None = None
    eta: float = 0.5
    sample: bool = False
    videos: int = 3

    def __post_init__(self):
        if self.termination == "reflector" and not self.reflector:
            raise BadArguments("--termination reflector needs --reflector host:port")
        if not 0 < self.eta < 1:
            raise BadArguments(f"--eta {self.eta}: expected 0 < eta < 1")
        super().__post_init__()
        self.judge = self._open_reflector() if self.termination == "reflector" else None

    def _open_reflector(self):
        from worldenv.client import clients, errors
        client = clients.ReflectorClient(self.reflector, auth_token=self.auth_token, connect_timeout_s=10.0)
        try:
            client.connect()
        except errors.ServiceError as exc:
            raise BadArguments(f"reflector {self.reflector} unreachable: {exc}") from None
        return lambda video, instruction: float(client.judge(video[None], [instruction], eta=self.eta).p_done[0])


def evaluate(config: EvalConfig) -> int:
    """Write eval.json, eval.md and a few videos into --out; print the suite's rate."""
    from worldenv.sim import episode, pool, report
    specs = config.specs(deterministic=not config.sample, keep_video=True,
                         stop_on_success=config.termination == "sim")
    started = time.perf_counter()
    with pool.EnvPool(config.env_processes) as envs, _progress(len(specs), "eval") as bar:
        results = envs.map(lambda process, s: episode.run(process, s, config.source, config.judge, config.eta), specs,
                           on_result=lambda r: bar.update(1))
    config.source.close()
    summary = report.summarize(results, _eval_meta(config, time.perf_counter() - started))
    paths = report.write(pathlib.Path(config.out), summary, results)
    s = summary["suite_result"]
    print(f"{config.suite}: {s['successes']}/{s['episodes']} = {100 * s['rate']:.1f} % "
          f"(95 % CI {100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f} %) -> {paths['markdown']}", flush=True)
    return 0


def _eval_meta(config: EvalConfig, wall_s: float) -> dict:
    first, last = config.init_offset, config.init_offset + config.episodes_per_task - 1
    return {"suite": config.suite, "policy": config.source.name, "termination": config.termination,
            "eta": config.eta, "episodes_per_task": config.episodes_per_task, "max_steps": config.max_steps,
            "chunk_length": config.source.chunk_length, "image_size": config.source.image_size or config.image_size,
            "deterministic": not config.sample, "init_states": f"{first}..{last} (mod 50) of LIBERO's fixed init states",
            "env_processes": config.env_processes, "wall_s": wall_s, "videos": config.videos}


def _progress(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True)
