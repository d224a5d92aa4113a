"""`worldenv experiment`: SFT policy -> LOOP RL in imagination -> both measured in the real
LIBERO simulator, on the same init states, none of which any training used.

Stages, each resumable (a finished one is skipped when the command runs again):

    pipeline        (--models pipeline) the models issue's pipeline: demos, SFT, exploration,
                    world model, reflector, exported to <home>/models
    eval_starts     the first frame of the curve's init states (imagined-success measurement only)
    rl              `worldenv train rl` against the stack, a policy snapshot every --curve-every
    curve_*         each snapshot in the real simulator and inside the world model, same init states
    eval_sft/rl     the final comparison, --eval-episodes per task, LIBERO's termination
    table4_sft/rl   the same with termination decided by the reflector (World-Env's Table 4)

The stack is `worldenv up`'s, started here on free ports, unless the four remote addresses
are given (e.g. a compose deployment); then the same stages run against it.
"""
from __future__ import annotations

import json
import pathlib
import time

from pydantic import Field, model_validator

from worldenv.config import Settings
from worldenv.pipeline import stages

CURVE_INITS = 0          # the curve's real and imagined episodes use LIBERO's fixed init states from here


class ExperimentConfig(Settings):
    """SFT vs RL in imagination, measured in the real simulator (see worldenv/pipeline/experiment.py)."""

    suite: str = Field("libero_object", description="LIBERO suite")
    tasks: str = Field("0,1,2", description="task indices, e.g. '0,1,2'")
    models: str = Field("shipped", description="'shipped' = the trained checkpoints that come with worldenv (made by "
                        "`worldenv pipeline`, reports/models.md); 'pipeline' = run the pipeline first; or a folder "
                        "with policy/, world_model/, reflector/ and starts.npz")
    demos: int | None = Field(None, ge=1, description="--models pipeline: demos per task the SFT policy learns from "
                              "(none = the pipeline's choice among 1, 3, 10)")
    home: str = Field("", description="data and runs directory (default: <worldenv home>/experiment/<suite>)")
    report: str = Field("reports/experiment.md", description="markdown report (PNGs beside it)")
    iterations: int = Field(30, ge=1, description="RL iterations")
    groups: int = Field(8, ge=1, description="start states per RL iteration")
    group_size: int = Field(8, ge=2, description="N, imagined rollouts per start state")
    horizon: int = Field(30, ge=1, description="max action chunks per imagined RL episode")
    lr: float = Field(3e-6, gt=0, description="Adam learning rate of the RL update")
    epochs: int = Field(2, ge=1, description="PPO epochs per iteration")
    exploration_scale: float = Field(0.05, gt=0, description="Laplace scale b the policy restarts from for RL")
    eta: float = Field(0.5, gt=0, lt=1, description="done threshold on p(done), in imagination and for Table 4")
    seed: int = Field(0, ge=0, description="RL seed")
    eval_episodes: int = Field(50, ge=1, le=50, description="final evaluation episodes per task (init states 0..n-1)")
    curve_every: int = Field(10, ge=1, description="evaluate the policy every K RL iterations")
    curve_episodes: int = Field(10, ge=1, le=50, description="real and imagined episodes per task at each curve point")
    table4: bool = Field(True, description="also evaluate both policies with the reflector deciding termination")
    env_processes: int = Field(0, ge=0, description="LIBERO env processes (0 = what fits, at most 2)")
    workers: int = Field(1, ge=1, description="rollout workers of the embedded stack")
    batch_size: int = Field(16, ge=1, description="jobs per rollout-worker batch in the embedded stack")
    redis_url: str | None = Field(None, description="remote stack: its Redis (with the three addresses below)")
    policy_addr: str | None = Field(None, description="remote stack: the Policy service")
    world_model_addr: str | None = Field(None, description="remote stack: the WorldModel service")
    reflector_addr: str | None = Field(None, description="remote stack: the Reflector service")
    auth_token: str | None = Field(None, description="remote stack: bearer token")

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentConfig":
        remote = [self.redis_url, self.policy_addr, self.world_model_addr, self.reflector_addr]
        if any(remote) and not all(remote):
            raise ValueError("--redis-url, --policy-addr, --world-model-addr, --reflector-addr: give all four or none")
        if self.models not in ("shipped", "pipeline") and not pathlib.Path(self.models).is_dir():
            raise ValueError(f"--models: no such folder {self.models}")
        if self.demos is not None and self.models != "pipeline":
            raise ValueError("--demos: only with --models pipeline (other models were trained already)")
        return self

    @property
    def root(self) -> pathlib.Path:
        from worldenv.commands import home
        return pathlib.Path(self.home) if self.home else home.path() / "experiment" / self.suite

    @property
    def curve_points(self) -> list[int]:
        """RL iterations at which the policy is measured (0 = the SFT policy)."""
        return sorted({*range(0, self.iterations + 1, self.curve_every), self.iterations})


def _libero(config: ExperimentConfig, *args: str) -> list[str]:
    procs = ["--env-processes", str(config.env_processes)] if config.env_processes else []
    return [*args, "--suite", config.suite, "--tasks", config.tasks, *procs]


def model_folder(config: ExperimentConfig, root: pathlib.Path) -> pathlib.Path:
    """The folder of the models the experiment starts from (running the pipeline if asked)."""
    from worldenv import checkpoints
    if config.models == "shipped":
        return checkpoints.DIR
    if config.models != "pipeline":
        return pathlib.Path(config.models)
    sft = ["--sft-demos", str(config.demos), "--demos", str(max(config.demos, 10))] if config.demos else []
    stages.run(root, "pipeline", ["pipeline", "--suite", config.suite, "--tasks", config.tasks, *sft,
                                  "--home", str(root / "pipeline"), "--report", str(pathlib.Path(config.report).parent / "models.md"),
                                  "--checkpoints", str(root / "models")], root / "logs" / "pipeline.log")
    return root / "models"


class Stack:
    """The services the experiment talks to: remote ones, or an embedded stack started on demand."""

    def __init__(self, config: ExperimentConfig, folder: pathlib.Path, root: pathlib.Path):
        self.config, self.folder, self.root, self._local = config, folder, root, None

    def addresses(self) -> dict[str, str]:
        c = self.config
        if c.policy_addr:
            return {"redis": c.redis_url, "policy": c.policy_addr, "world-model": c.world_model_addr,
                    "reflector": c.reflector_addr}
        if self._local is None:
            from worldenv import checkpoints
            from worldenv.commands import stack
            from worldenv.config import MODEL_SERVICES, SERVICES
            dirs = {name: str(checkpoints.model_dir(SERVICES[name].role, self.folder)) for name in MODEL_SERVICES}
            print(f"starting the embedded stack in {self.root / 'stack'} ...", flush=True)
            self._local = stack.start(stack.StackConfig(home=self.root / "stack", free_ports=True, workers=c.workers,
                                                        batch_size=c.batch_size, checkpoints=dirs))
        return {"redis": self._local.redis_url, **self._local.addresses}

    def stop(self) -> None:
        if self._local is not None:
            self._local.stop()


def rl(config: ExperimentConfig, root: pathlib.Path, folder: pathlib.Path, stack: Stack) -> pathlib.Path:
    out = root / "rl"
    if not stages.finished(root, "rl"):
        a = stack.addresses()
        token = ["--auth-token", config.auth_token] if config.auth_token else []
        stages.run(root, "rl", ["train", "rl", "--redis-url", a["redis"], "--policy-addr", a["policy"], *token,
                                "--policy", str(folder / "policy"), "--starts", str(folder / "starts.npz"),
                                "--out", str(out), "--iterations", str(config.iterations), "--groups", str(config.groups),
                                "--group-size", str(config.group_size), "--horizon", str(config.horizon),
                                "--eta", str(config.eta), "--lr", str(config.lr), "--epochs", str(config.epochs),
                                "--exploration-scale", str(config.exploration_scale), "--seed", str(config.seed),
                                "--snapshot-every", str(config.curve_every)], root / "logs" / "rl.log")
    return out


def curve(config: ExperimentConfig, root: pathlib.Path, folder: pathlib.Path, stack: Stack, rl_out: pathlib.Path) -> None:
    """Each snapshot: real success and imagined success from the same init states."""
    from worldenv.client.trainer import snapshot_dir
    stages.run(root, "eval_starts", _libero(config, "starts", "build", "--inits", f"{CURVE_INITS}-"
                                            f"{CURVE_INITS + config.curve_episodes - 1}", "--out", str(root / "eval_starts.npz")),
               root / "logs" / "eval_starts.log")
    for k in config.curve_points:
        policy = snapshot_dir(rl_out, k) if k < config.iterations else rl_out / "policy"
        stages.run(root, f"curve_real_{k:04d}", _libero(
            config, "eval", "--policy", str(policy), "--episodes-per-task", str(config.curve_episodes), "--init-offset",
            str(CURVE_INITS), "--videos", "0", "--out", str(root / "curve" / f"real_{k:04d}")), root / "logs" / "curve.log")
        stages.inline(root, f"curve_imagined_{k:04d}", lambda: imagined(config, folder, stack, policy, root, k))


def imagined(config: ExperimentConfig, folder: pathlib.Path, stack: Stack, policy: pathlib.Path, root: pathlib.Path,
             k: int) -> dict:
    """The snapshot's deterministic episodes inside the served world model, judged by the served reflector."""
    from worldenv import models
    from worldenv.client.clients import ReflectorClient, WorldModelClient
    from worldenv.client.remote import RemoteReflector, RemoteWorldModel
    from worldenv.data.start_bank import StartBank
    from worldenv.measure import imagined as measure
    from worldenv.sim import suites
    a = stack.addresses()
    chunks = -(-suites.MAX_EPISODE_STEPS[config.suite] // 8)          # the real episode's step budget, in chunks
    with WorldModelClient(a["world-model"], auth_token=config.auth_token) as wm, \
            ReflectorClient(a["reflector"], auth_token=config.auth_token) as rf:
        episodes = measure.rollouts(models.load(policy, role="policy"), RemoteWorldModel(wm), RemoteReflector(rf),
                                    StartBank.load(root / "eval_starts.npz"), chunks, config.eta)
    out = {"iteration": k, "horizon_chunks": chunks, "episodes": episodes,
           "success": sum(e["done"] for e in episodes) / len(episodes)}
    path = root / "curve" / f"imagined_{k:04d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def final(config: ExperimentConfig, root: pathlib.Path, folder: pathlib.Path, stack: Stack, rl_out: pathlib.Path) -> None:
    """SFT and RL on the same init states with the same seeds; then under reflector termination."""
    policies = {"sft": folder / "policy", "rl": rl_out / "policy"}
    common = ["--episodes-per-task", str(config.eval_episodes), "--init-offset", "0", "--seed", "0"]
    for name, policy in policies.items():
        stages.run(root, f"eval_{name}", _libero(config, "eval", "--policy", str(policy), *common,
                                                 "--out", str(root / f"eval_{name}")), root / "logs" / f"eval_{name}.log")
    if not config.table4:
        return
    for name, policy in policies.items():
        if stages.finished(root, f"table4_{name}"):
            continue
        token = ["--auth-token", config.auth_token] if config.auth_token else []
        stages.run(root, f"table4_{name}", _libero(
            config, "eval", "--policy", str(policy), *common, "--termination", "reflector", "--reflector",
            stack.addresses()["reflector"], "--eta", str(config.eta), *token, "--out", str(root / f"table4_{name}")),
            root / "logs" / f"table4_{name}.log")


def run(config: ExperimentConfig) -> pathlib.Path:
    """Every stage in order; returns the experiment's directory."""
    root = config.root
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    folder = model_folder(config, root)
    stack = Stack(config, folder, root)
    try:
        rl_out = rl(config, root, folder, stack)
        curve(config, root, folder, stack, rl_out)
        final(config, root, folder, stack, rl_out)
    finally:
        stack.stop()
    print(f"experiment stages done in {time.perf_counter() - started:.0f} s -> {root}", flush=True)
    return root
