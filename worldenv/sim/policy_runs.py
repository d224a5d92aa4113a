"""`explore` and `eval`: a policy acting in LIBERO, every episode recorded or scored."""
from __future__ import annotations

import pathlib
import time
from typing import Literal

from pydantic import Field, model_validator

from worldenv.config import grasp_gate_field
from worldenv.sim import suites
from worldenv.sim.job_settings import BadArguments, LiberoJobConfig, check_expert


class PolicyRunConfig(LiberoJobConfig):
    """A policy acting in LIBERO for a number of episodes per task."""

    policy: str = Field(description="host:port of a Policy server, a checkpoint directory, 'expert', or 'shipped' / "
                        "'shipped-rl' (the shipped SFT policy / the same after RL in imagination)")
    auth_token: str | None = Field(None, description="bearer token for a remote policy or reflector")
    episodes_per_task: int = Field(50, ge=1, description="episodes per task (init states offset, offset + 1, ...)")
    init_offset: int = Field(0, ge=0, description="first init state: 0-49 LIBERO's fixed ones (wrapping at 50), "
                                                 ">= 50 new ones sampled with that seed (never wrapping)")
    max_steps: int = Field(0, ge=0, description="policy steps per episode (0 = the suite's standard)")
    seed: int = Field(0, description="sampling seed for a checkpoint policy")
    exploration_scale: float | None = Field(
        None, gt=0, description="a checkpoint policy samples with its Laplace scale restarted at this value (normalised "
        "action units), as `train rl` explores; none = the checkpoint's own scale")

    @model_validator(mode="after")
    def _resolved(self) -> "PolicyRunConfig":
        if self.policy == "expert":
            check_expert(self)
        self.max_steps = self.max_steps or suites.MAX_EPISODE_STEPS[self.suite]
        return self


def open_policy(config: PolicyRunConfig):
    """The run's action source, connected now: an unreachable policy fails before any env starts."""
    from worldenv.sim import policies
    try:
        return policies.open_source(config.policy, auth_token=config.auth_token, seed=config.seed,
                                    exploration_scale=config.exploration_scale)
    except policies.PolicyUnavailable as exc:
        raise BadArguments(f"--policy: {exc}") from None


def episode_specs(config: PolicyRunConfig, source, **kw) -> list:
    """One EpisodeSpec per task and episode, at the frame size and chunk length `source` takes."""
    from worldenv.sim import episode
    size, n = source.image_size or config.image_size, suites.INIT_STATES_PER_TASK
    return [episode.EpisodeSpec(config.env_config(t, size), suites.init_index(config.init_offset, e), config.max_steps,
                                source.chunk_length, **kw)
            for t in config.task_ids for e in range(config.episodes_per_task)]


class ExploreConfig(PolicyRunConfig):
    """Run a policy with Laplace-sampled actions; record successes and failures."""

    noise: Literal["laplace", "none"] = Field(
        "laplace", description="laplace = sample from the policy's Laplace head; none = its mean")
    episodes_per_task: int = Field(10, ge=1, description="episodes per task (init states offset, offset + 1, ...)")
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
    grasp_gate: float = grasp_gate_field("with --termination reflector, ", gripper="real")
    confirm: int = Field(1, ge=1, le=64, description="with --termination reflector: chunks in a row with p(done) > "
                         "eta before an episode ends (1 = the first verdict ends it, the paper's rule; 2 waits one "
                         "chunk more: the shipped reflector says done about a chunk before LIBERO's success)")
    sample: bool = Field(False, description="sample actions instead of taking the policy's mean")
    videos: int = Field(3, ge=0, description="videos to write (successes and failures)")
    out: str = Field(description="output directory for eval.json, eval.md and videos")

    @model_validator(mode="after")
    def _judge_given(self) -> "EvalConfig":
        if self.termination == "reflector" and not self.reflector:
            raise ValueError("--termination reflector needs --reflector host:port")
        if self.confirm > 1 and self.termination != "reflector":
            raise ValueError("--confirm: only with --termination reflector (it confirms the reflector's verdict)")
        if self.grasp_gate and self.termination != "reflector":
            raise ValueError("--grasp-gate: only with --termination reflector (it gates the reflector's verdict)")
        if self.exploration_scale is not None and not self.sample:
            raise ValueError("--exploration-scale: only with --sample (the policy's mean does not depend on its scale)")
        return self


def open_judge(config: EvalConfig):
    """The --reflector server (connected now) as a Reflector whose episodes' videos live in its
    sessions, or None under sim termination."""
    if config.termination != "reflector":
        return None
    from worldenv.client import clients, errors, remote
    client = clients.ReflectorClient(config.reflector, auth_token=config.auth_token, connect_timeout_s=10.0)
    try:
        client.connect()
    except errors.ServiceError as exc:
        raise BadArguments(f"--reflector: {config.reflector} unreachable: {exc}") from None
    return remote.RemoteReflector(client)


def evaluate(config: EvalConfig) -> int:
    """Write eval.json, eval.md and a few videos into --out; print the suite's rate."""
    from worldenv.sim import episode, pool, report
    source, judge = open_policy(config), open_judge(config)
    specs = episode_specs(config, source, deterministic=not config.sample, keep_video=True,
                          stop_on_success=config.termination == "sim")
    started = time.perf_counter()
    with pool.EnvPool(config.env_processes) as envs, _progress(len(specs), "eval") as bar:
        results = envs.map(lambda process, s: episode.run(process, s, source, judge, config.eta, config.grasp_gate,
                                                          config.confirm), specs,
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
            "eta": config.eta, "grasp_gate": config.grasp_gate, "confirm": config.confirm, "episodes_per_task": config.episodes_per_task, "max_steps": config.max_steps,
            "chunk_length": source.chunk_length, "image_size": source.image_size or config.image_size,
            "deterministic": not config.sample, "init_states": (f"{first}..{last} (mod 50) of LIBERO's fixed init states" if first < suites.INIT_STATES_PER_TASK
                            else f"{first}..{last}, sampled (not LIBERO's fixed ones)"),
            "env_processes": config.env_processes, "wall_s": wall_s, "videos": config.videos}


def _progress(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True)
