"""The four LIBERO jobs: collect expert demos, build a start-state bank, explore, evaluate.

Each job = a typed settings class (validated at construction, before any env starts; its field
descriptions are the command's `--help`) + a function that runs it. A job that needs a policy or
a reflector connects to it first and raises BadArguments if it cannot, still before any env.
"""
from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from worldenv.config import Settings
from worldenv.sim import suites

log = logging.getLogger("worldenv.sim")


class BadArguments(ValueError):
    """A job that cannot start (its policy or reflector is unreachable); the message says why."""


def _checked(check, *args):
    """check(*args), with a missing LIBERO reported as a ValueError (a settings error)."""
    from worldenv.sim import install
    try:
        return check(*args)
    except install.LiberoNotInstalled as exc:
        raise ValueError(str(exc)) from None


def _image_size(default: int):
    return Field(default, ge=16, le=512, description="square frame side in pixels")


class LiberoJobConfig(Settings):
    """What every LIBERO job takes: suite, tasks, frames, env processes."""

    suite: str = Field("libero_object", description=" | ".join(suites.SUITES))
    tasks: str = Field("all", description="'all', '3', '0,2,5' or '0-4' (LIBERO's task order)")
    image_size: int = _image_size(64)
    wrist: bool = Field(False, description="also render the wrist camera")
    env_processes: int = Field(0, description="LIBERO env processes run in parallel (0 = what fits, at most 2)",
                               json_schema_extra={"aliases": ["--workers"], "metavar": "N"})

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, suite: str) -> str:
        return suites.check_suite(suite)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: str, info: ValidationInfo) -> str:
        if "suite" in info.data:
            _checked(suites.parse_tasks, info.data["suite"], tasks)
        return tasks

    @field_validator("env_processes")
    @classmethod
    def _processes_fit(cls, n: int) -> int:
        from worldenv.sim import pool
        return pool.check_size(n)

    @property
    def task_ids(self) -> list[int]:
        """The task indices `tasks` names."""
        return suites.parse_tasks(self.suite, self.tasks)

    def env_config(self, task: int, image_size: int | None = None):
        """The env of `task` at this config's (or the given) frame size."""
        from worldenv.sim.env import EnvConfig
        return EnvConfig(self.suite, task, image_size or self.image_size, self.wrist)


def _check_expert(config: LiberoJobConfig) -> None:
    from worldenv.sim import expert
    expert.check_tasks(config.suite, config.task_ids)   # UnsupportedTask is a ValueError


# --- demos collect ------------------------------------------------------------------------------

class CollectConfig(LiberoJobConfig):
    """Scripted expert demos: keep `per_task` successes per task, trying init states 0, 1, ..."""

    image_size: int = _image_size(128)
    wrist: bool = Field(True, description="also render the wrist camera")
    per_task: int = Field(5, ge=1, description="successful demos to keep per task")
    max_attempts: int = Field(50, ge=1, le=suites.INIT_STATES_PER_TASK, description="init states tried per task at most")
    every_step: bool = Field(True, description="frames at every step (LIBERO's layout); --no-every-step = once per chunk")
    out: str = Field(description="output directory: <out>/<suite>/<task>_demo.hdf5")

    @model_validator(mode="after")
    def _feasible(self) -> "CollectConfig":
        if self.per_task > self.max_attempts:
            raise ValueError(f"--per-task ({self.per_task}) must be <= --max-attempts ({self.max_attempts})")
        _check_expert(self)
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

class StartsConfig(LiberoJobConfig):
    """Render the first observation of init states into a StartBank."""

    inits: str = Field("0-9", description="init state indices per task: '0-49', '0,3', 'all'")
    out: str = Field(description="output .npz (worldenv.data.start_bank.StartBank)")

    @field_validator("inits")
    @classmethod
    def _known_inits(cls, inits: str) -> str:
        _init_ids(inits)
        return inits

    @property
    def init_ids(self) -> list[int]:
        """The init state indices `inits` names."""
        return _init_ids(self.inits)


def _init_ids(spec: str) -> list[int]:
    return _parse_range("0-49" if spec == "all" else spec, suites.INIT_STATES_PER_TASK, "init state")


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

class PolicyRunConfig(LiberoJobConfig):
    """A policy acting in LIBERO for a number of episodes per task."""

    policy: str = Field(description="host:port of a Policy server, a checkpoint directory, or 'expert'")
    auth_token: str | None = Field(None, description="bearer token for a remote policy or reflector")
    episodes_per_task: int = Field(50, ge=1, description="episodes per task (init states 0, 1, ... wrap at 50)")
    init_offset: int = Field(0, ge=0, description="first init state index")
    max_steps: int = Field(0, ge=0, description="policy steps per episode (0 = the suite's standard)")
    seed: int = Field(0, description="sampling seed for a checkpoint policy")

    @model_validator(mode="after")
    def _resolved(self) -> "PolicyRunConfig":
        if self.policy == "expert":
            _check_expert(self)
        self.max_steps = self.max_steps or suites.MAX_EPISODE_STEPS[self.suite]
        return self


def open_policy(config: PolicyRunConfig):
    """The run's action source, connected now: an unreachable policy fails before any env starts."""
    from worldenv.sim import policies
    try:
        return policies.open_source(config.policy, auth_token=config.auth_token, seed=config.seed)
    except policies.PolicyUnavailable as exc:
        raise BadArguments(f"--policy: {exc}") from None


def episode_specs(config: PolicyRunConfig, source, **kw) -> list:
    """One EpisodeSpec per task and episode, at the frame size and chunk length `source` takes."""
    from worldenv.sim import episode
    size, n = source.image_size or config.image_size, suites.INIT_STATES_PER_TASK
    return [episode.EpisodeSpec(config.env_config(t, size), (config.init_offset + e) % n, config.max_steps,
                                source.chunk_length, **kw)
            for t in config.task_ids for e in range(config.episodes_per_task)]


class ExploreConfig(PolicyRunConfig):
    """Run a policy with Laplace-sampled actions; record successes and failures."""

    noise: Literal["laplace", "none"] = Field(
        "laplace", description="laplace = sample from the policy's Laplace head; none = its mean")
    episodes_per_task: int = Field(10, ge=1, description="episodes per task (init states 0, 1, ... wrap at 50)")
    out: str = Field(description="output directory: <out>/<suite>/<task>_demo.hdf5")


def explore(config: ExploreConfig) -> int:
    """Write <out>/<suite>/<task>_demo.hdf5 with every episode (per-frame success labels, log-probs)."""
    from worldenv.sim import episode, pool
    source = open_policy(config)
    specs = episode_specs(config, source, record=True, deterministic=config.noise == "none")
    with pool.EnvPool(config.env_processes) as envs, _progress(len(specs), "explore") as bar:
        results = envs.map(lambda process, s: episode.run(process, s, source), specs, on_result=lambda r: bar.update(1))
    source.close()
    for task in config.task_ids:
        _write_explored(config, task, source.name, [r.episode for r in results if r.spec.config.task == task])
    ok = sum(r.success for r in results)
    crashed = sum(r.failed_to_run for r in results)
    print(f"explore: {ok}/{len(results)} successes, {crashed} failed to run -> {config.out}", flush=True)
    return 0


def _write_explored(config: ExploreConfig, task: int, policy: str, episodes: list) -> None:
    from worldenv.data import hdf5
    from worldenv.sim import recording
    info = suites.task(config.suite, task)
    path = pathlib.Path(config.out) / config.suite / f"{info.name}_demo.hdf5"
    attrs = recording.task_attrs(info, {"source": "exploration", "policy": policy, "noise": config.noise})
    hdf5.write(path, attrs, [e for e in episodes if e is not None])


class EvalConfig(PolicyRunConfig):
    """Success rate per task and suite on LIBERO's standard init states."""

    termination: Literal["sim", "reflector"] = Field(
        "sim", description="sim = LIBERO's success ends an episode; reflector = p(done) > eta from --reflector")
    reflector: str | None = Field(None, description="host:port of a Reflector server (termination=reflector)")
    eta: float = Field(0.5, gt=0, lt=1, description="done threshold on p(done)")
    sample: bool = Field(False, description="sample actions instead of taking the policy's mean")
    videos: int = Field(3, ge=0, description="videos to write (successes and failures)")
    out: str = Field(description="output directory for eval.json, eval.md and videos")

    @model_validator(mode="after")
    def _judge_given(self) -> "EvalConfig":
        if self.termination == "reflector" and not self.reflector:
            raise ValueError("--termination reflector needs --reflector host:port")
        return self


def open_judge(config: EvalConfig):
    """p(done) of a video from the --reflector server (connected now), or None under sim termination."""
    if config.termination != "reflector":
        return None
    from worldenv.client import clients, errors
    client = clients.ReflectorClient(config.reflector, auth_token=config.auth_token, connect_timeout_s=10.0)
    try:
        client.connect()
    except errors.ServiceError as exc:
        raise BadArguments(f"--reflector: {config.reflector} unreachable: {exc}") from None
    return lambda video, instruction: float(client.judge(video[None], [instruction], eta=config.eta).p_done[0])


def evaluate(config: EvalConfig) -> int:
    """Write eval.json, eval.md and a few videos into --out; print the suite's rate."""
    from worldenv.sim import episode, pool, report
    source, judge = open_policy(config), open_judge(config)
    specs = episode_specs(config, source, deterministic=not config.sample, keep_video=True,
                          stop_on_success=config.termination == "sim")
    started = time.perf_counter()
    with pool.EnvPool(config.env_processes) as envs, _progress(len(specs), "eval") as bar:
        results = envs.map(lambda process, s: episode.run(process, s, source, judge, config.eta), specs,
                           on_result=lambda r: bar.update(1))
    source.close()
    summary = report.summarize(results, _eval_meta(config, source, time.perf_counter() - started))
    paths = report.write(pathlib.Path(config.out), summary, results)
    s = summary["suite_result"]
    print(f"{config.suite}: {s['successes']}/{s['episodes']} = {100 * s['rate']:.1f} % "
          f"(95 % CI {100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f} %) -> {paths['markdown']}", flush=True)
    return 0


def _eval_meta(config: EvalConfig, source, wall_s: float) -> dict:
    first, last = config.init_offset, config.init_offset + config.episodes_per_task - 1
    return {"suite": config.suite, "policy": source.name, "termination": config.termination,
            "eta": config.eta, "episodes_per_task": config.episodes_per_task, "max_steps": config.max_steps,
            "chunk_length": source.chunk_length, "image_size": source.image_size or config.image_size,
            "deterministic": not config.sample, "init_states": f"{first}..{last} (mod 50) of LIBERO's fixed init states",
            "env_processes": config.env_processes, "wall_s": wall_s, "videos": config.videos}


def _progress(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True)
