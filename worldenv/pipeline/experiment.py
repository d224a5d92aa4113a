"""`worldenv experiment`: SFT policy -> LOOP RL in imagination -> both measured in the real
LIBERO simulator, on the same init states, none of which any training used.

Stages, each resumable (a finished one is skipped when the command runs again):

    pipeline        (--models pipeline) the models issue's pipeline: demos, SFT, exploration,
                    world model, reflector, exported to <home>/models
    eval_starts     the first frame of the curve's init states (imagined-success measurement only)
    rl              `worldenv train rl` against the stack, a policy snapshot every --curve-every
    curve_*         each snapshot in the real simulator and inside the world model, same init states
    objective_*     each snapshot's imagined success on a fixed draw of the bank RL trains on, its
                    mean and sampled: does RL improve the objective it optimises?
    eval_sft/rl     the final comparison, --eval-episodes per task, LIBERO's termination
    rl_sN, eval_rl_sN  (--extra-seeds) the same RL at further seeds, each on the same paired episodes
    control_sN, eval_control_sN  (--controls) at every RL seed the same RL with each group's rewards
                    shuffled among its rollouts (no learning signal, the same updates' size), evaluated
                    alike: what RL's updates alone do to the real success, the noise floor of a gain
    table4_sft/rl   the same with termination decided by the reflector (World-Env's Table 4)
    dyna_*          one Dyna round: the RL policy explores, the world model and the reflector are
                    fine-tuned on its episodes, RL again from their keyframes, evaluated (eval_dyna)

The stack is `worldenv up`'s, started here on free ports, unless the four remote addresses
are given (e.g. a compose deployment); then the same stages run against it.
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import time

from typing import Literal

from pydantic import Field, model_validator

from worldenv import checkpoints
from worldenv.config import Autocast, Settings, argv, comma_list, confirm_field, grasp_gate_field
from worldenv.measure.objective import OBJECTIVE_DRAW
from worldenv.pipeline import stages
from worldenv.rl.settings import RLConfig
from worldenv.train.settings import ReflectorTrainConfig, WorldModelTrainConfig

CURVE_INITS = 0          # the curve's real and imagined episodes use LIBERO's fixed init states from here
DYNA_INITS = 7000        # the Dyna round's exploration: sampled init states no earlier data used


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
    lr: float = Field(1e-6, gt=0, description="Adam learning rate of the RL update (set from imagination-side "
                      "diagnostics: at b = 0.02, 1e-6 gave approximate KL 0.005-0.03 and clip fraction 0.15-0.4 per "
                      "update; 3e-6 at b = 0.05 gave KL 0.065 and clip fraction 0.56)")
    epochs: int = Field(2, ge=1, description="PPO epochs per iteration")
    ratio: Literal["chunk", "dimension"] = Field("chunk", description="PPO's ratio: one per timestep over the chunk's "
                                                 "actions, or one per action (`train rl --ratio`)")
    replay_open: float = Field(0.0, ge=0, lt=1, description="share of each RL iteration's groups drawn again from "
                               "start states whose last group had a reward spread (`train rl --replay-open`); 0 = "
                               "uniform draws from the bank")
    exploration_scale: float = Field(0.02, gt=0, description="Laplace scale b the policy restarts from for RL, in "
                                     "normalised action units (times each dimension's spread in the SFT data)")
    sampled_episodes: int = Field(10, ge=0, le=50, description="also evaluate SFT and RL with the actions RL samples "
                                  "(b = --exploration-scale) on this many fixed init states per task (0 = none)")
    eta: float = Field(0.5, gt=0, lt=1, description="done threshold on p(done), in imagination and for Table 4")
    grasp_gate: float = grasp_gate_field("in imagination (RL, the curve, the objective) and in Table 4's "
                                         "reflector termination, ", gripper="imagined (in Table 4 the real)")
    confirm: int = confirm_field("in imagination (RL, the curve, the objective; Table 4 has --table4-confirm): ")
    seed: int = Field(0, ge=0, description="RL seed (the run the curve, Table 4 and the Dyna round follow)")
    extra_seeds: str = Field("", description="further RL seeds, e.g. '1,2': the same RL from the SFT policy at each, "
                             "evaluated on the same paired episodes; the report gives every seed's gain and their mean "
                             "(one RL seed's gain is not the method's)")
    controls: bool = Field(False, description="also run, at every RL seed, the same RL with shuffled rewards (each "
                           "group's rewards permuted among its rollouts: `train rl --shuffle-rewards`) and evaluate it "
                           "alike; the report compares RL with its controls, seed for seed and as groups (a no-signal "
                           "run has moved LIBERO by as much as +8.7 points here, reports/learning-signal.md)")
    eval_episodes: int = Field(50, ge=1, le=50, description="final evaluation episodes per task (init states 0..n-1)")
    curve_every: int = Field(10, ge=1, description="evaluate the policy every K RL iterations")
    curve_episodes: int = Field(10, ge=1, le=50, description="real and imagined episodes per task at each curve point")
    objective_starts: int = Field(24, ge=0, description="start states per task of RL's own objective: one fixed draw "
                                  "from the bank RL trains on, imagined at each curve point (and each extra seed's end) "
                                  "with the policy's mean and sampled as RL samples; 0 = not measured")
    table4: bool = Field(True, description="also evaluate both policies with the reflector deciding termination")
    table4_episodes: int = Field(50, ge=1, le=50, description="Table 4: episodes per task (init states 0..n-1)")
    table4_confirm: int = Field(1, ge=1, le=64, description="Table 4: chunks in a row with p(done) > eta that end an "
                                "episode (1: the paper's rule, the first verdict; 2 kept 19 of SFT's 21 successes on "
                                "60 episodes where the first verdict kept 10, reports/learning-signal.md)")
    dyna_rounds: int = Field(1, ge=0, le=1, description="Dyna rounds after RL (explore with the RL policy, fine-tune "
                             "the world model and the reflector on it, RL again, evaluate); 0 = none")
    dyna_explore: int = Field(10, ge=1, description="Dyna: exploration episodes per task in the real simulator")
    dyna_noise: Literal["none", "laplace"] = Field(
        "none", description="Dyna: how the RL policy explores: its mean on new init states (none), or sampled from its "
        "Laplace head (b = 0.05 gave 0 successes in 15 episodes: a reflector cannot learn success from that)")
    dyna_world_model_steps: int = Field(1000, ge=1, description="Dyna: world-model fine-tuning steps")
    dyna_reflector_steps: int = Field(500, ge=1, description="Dyna: reflector fine-tuning steps")
    dyna_lr: float = Field(1e-4, gt=0, description="Dyna: fine-tuning learning rate")
    dyna_iterations: int = Field(15, ge=1, description="Dyna: RL iterations against the fine-tuned models")
    dyna_eval_episodes: int = Field(50, ge=1, le=50, description="Dyna: real evaluation episodes per task (init "
                                    "states 0..n-1; compared with RL and SFT on the ones they share)")
    env_processes: int = Field(0, ge=0, description="LIBERO env processes (0 = what fits, at most 2)")
    workers: int = Field(1, ge=1, description="rollout workers of the embedded stack")
    batch_size: int = Field(16, ge=1, description="jobs per rollout-worker batch in the embedded stack")
    world_model_autocast: Autocast = Field("auto", description="the embedded stack's world model: its U-Net pass "
                                           "under torch.autocast (`up --world-model-autocast`; 'auto' = bfloat16 "
                                           "where the CPU or GPU computes it natively); 'none' = float32, as the "
                                           "runs of reports/experiment.md were made")
    redis_url: str | None = Field(None, description="remote stack: its Redis (with the three addresses below); none "
                                  "= an embedded stack ($REDIS_URL is not read here: it may name `up`'s)")
    policy_addr: str | None = Field(None, description="remote stack: the Policy service")
    world_model_addr: str | None = Field(None, description="remote stack: the WorldModel service")
    reflector_addr: str | None = Field(None, description="remote stack: the Reflector service")
    auth_token: str | None = Field(None, description="remote stack: bearer token")

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentConfig":
        remote = [self.redis_url, self.policy_addr, self.world_model_addr, self.reflector_addr]
        if any(remote) and not all(remote):
            raise ValueError("--redis-url, --policy-addr, --world-model-addr, --reflector-addr: give all four or none")
        if self.models not in (checkpoints.SHIPPED, "pipeline") and not pathlib.Path(self.models).is_dir():
            raise ValueError(f"--models: no such folder {self.models}")
        if self.demos is not None and self.models != "pipeline":
            raise ValueError("--demos: only with --models pipeline (other models were trained already)")
        seeds = self.seeds
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"--extra-seeds: each seed once, and not --seed ({self.seed}) again")
        return self

    @property
    def seeds(self) -> list[int]:
        """Every RL seed, --seed first."""
        try:
            extra = [int(s) for s in comma_list(self.extra_seeds)]
        except ValueError:
            raise ValueError(f"--extra-seeds: comma-separated seeds, got {self.extra_seeds!r}") from None
        if any(s < 0 for s in extra):
            raise ValueError("--extra-seeds: seeds are >= 0")
        return [self.seed, *extra]

    @property
    def root(self) -> pathlib.Path:
        from worldenv import home
        return pathlib.Path(self.home) if self.home else home.path() / "experiment" / self.suite

    @property
    def curve_points(self) -> list[int]:
        """RL iterations at which the policy is measured (0 = the SFT policy)."""
        return sorted({*range(0, self.iterations + 1, self.curve_every), self.iterations})


def _token(config: ExperimentConfig) -> list[str]:
    return ["--auth-token", config.auth_token] if config.auth_token else []


def _libero(config: ExperimentConfig, *args: str) -> list[str]:
    procs = ["--env-processes", str(config.env_processes)] if config.env_processes else []
    return [*args, "--suite", config.suite, "--tasks", config.tasks, *procs]


def models_dir(config: ExperimentConfig, root: pathlib.Path) -> pathlib.Path:
    """Where the models the experiment starts from are (or will be, for --models pipeline)."""
    return root / "models" if config.models == "pipeline" else checkpoints.folder(config.models)


def model_folder(config: ExperimentConfig, root: pathlib.Path) -> pathlib.Path:
    """The folder of the models the experiment starts from (running the pipeline if asked)."""
    if config.models != "pipeline":
        return models_dir(config, root)
    sft = ["--sft-demos", str(config.demos), "--demos", str(max(config.demos, 10))] if config.demos else []
    stages.run(root, "pipeline", ["pipeline", "--suite", config.suite, "--tasks", config.tasks, *sft,
                                  "--home", str(root / "pipeline"), "--report", str(pathlib.Path(config.report).parent / "models.md"),
                                  "--checkpoints", str(models_dir(config, root))], root / "logs" / "pipeline.log")
    return models_dir(config, root)


class Stack:
    """The services the experiment talks to: remote ones, or an embedded stack started on demand
    from `dirs` (role -> checkpoint directory) in <root>/stack."""

    def __init__(self, config: ExperimentConfig, dirs: dict[str, pathlib.Path], root: pathlib.Path):
        self.config, self.dirs, self.root, self._local = config, dirs, root, None

    def addresses(self) -> dict[str, str]:
        c = self.config
        if c.policy_addr:
            return {"redis": c.redis_url, "policy": c.policy_addr, "world-model": c.world_model_addr,
                    "reflector": c.reflector_addr}
        if self._local is None:
            from worldenv.local import stack
            from worldenv.config import MODEL_SERVICES, SERVICES
            dirs = {name: str(self.dirs[SERVICES[name].role]) for name in MODEL_SERVICES}
            print(f"starting the embedded stack in {self.root / 'stack'} ...", flush=True)
            self._local = stack.start(stack.StackConfig(home=self.root / "stack", free_ports=True, workers=c.workers,
                                                        batch_size=c.batch_size, checkpoints=dirs,
                                                        world_model_autocast=c.world_model_autocast))
        return {"redis": self._local.redis_url, **self._local.addresses}

    def stop(self) -> None:
        if self._local is not None:
            self._local.stop()

    @contextlib.contextmanager
    def served(self):
        """(world model, reflector): the stack's served models behind their role adapters."""
        from worldenv.client.clients import ReflectorClient, WorldModelClient
        from worldenv.client.remote import RemoteReflector, RemoteWorldModel
        a, token = self.addresses(), self.config.auth_token
        with WorldModelClient(a["world-model"], auth_token=token) as wm, \
                ReflectorClient(a["reflector"], auth_token=token) as rf:
            yield RemoteWorldModel(wm), RemoteReflector(rf)


def rl(config: ExperimentConfig, root: pathlib.Path, name: str, policy: pathlib.Path, starts: pathlib.Path,
       stack: Stack, iterations: int, seed: int | None = None, shuffle: bool = False) -> pathlib.Path:
    """`worldenv train rl` from `policy` against `stack`, as stage `name` (at `seed`, default
    --seed; `shuffle`: the shuffled-rewards control); returns its run directory."""
    out = root / name
    if not stages.finished(root, name):
        a = stack.addresses()
        settings = rl_config(config, a, policy, starts, out, iterations, f"{root.name}-{name}", seed, shuffle)
        stages.run(root, name, ["train", "rl", *argv(settings)], root / "logs" / f"{name}.log")
    return out


def rl_config(config: ExperimentConfig, addresses: dict[str, str], policy: pathlib.Path, starts: pathlib.Path,
              out: pathlib.Path, iterations: int, run_id: str, seed: int | None = None,
              shuffle: bool = False) -> RLConfig:
    """The settings of an RL stage: `worldenv train rl` against the stack at `addresses`."""
    return RLConfig(redis_url=addresses["redis"], policy_addr=addresses["policy"], auth_token=config.auth_token,
                    policy=str(policy), starts=str(starts), run_id=run_id, out=str(out), iterations=iterations,
                    groups=config.groups, group_size=config.group_size, horizon=config.horizon, eta=config.eta,
                    grasp_gate=config.grasp_gate, confirm=config.confirm, lr=config.lr, epochs=config.epochs,
                    ratio=config.ratio,
                    exploration_scale=config.exploration_scale,
                    seed=config.seed if seed is None else seed, replay_open=config.replay_open,
                    snapshot_every=config.curve_every, **({"shuffle_rewards": True} if shuffle else {}))


def seed_name(seed: int) -> str:
    """The RL stage of an --extra-seeds seed (its evaluation is eval_<name>)."""
    return f"rl_s{seed}"


def more_seeds(config: ExperimentConfig, root: pathlib.Path, policy: pathlib.Path, starts: pathlib.Path,
               stack: Stack) -> None:
    """The same RL at each --extra-seeds seed, each evaluated as the main RL policy is, and its
    end on RL's own objective."""
    for seed in config.seeds[1:]:
        name = seed_name(seed)
        out = rl(config, root, name, policy, starts, stack, config.iterations, seed)
        evaluate(config, root, f"eval_{name}", out / "policy")
        if config.objective_starts:
            stages.inline(root, f"objective_{name}", lambda: objective(config, stack, out / "policy", starts, root, name))


def control_name(seed: int) -> str:
    """The shuffled-rewards control's RL stage at `seed` (its evaluation is eval_<name>)."""
    return f"control_s{seed}"


def controls(config: ExperimentConfig, root: pathlib.Path, policy: pathlib.Path, starts: pathlib.Path,
             stack: Stack) -> None:
    """At every RL seed the same RL with shuffled rewards, evaluated on the same paired episodes."""
    for seed in config.seeds:
        name = control_name(seed)
        out = rl(config, root, name, policy, starts, stack, config.iterations, seed, shuffle=True)
        evaluate(config, root, f"eval_{name}", out / "policy")


def tune_config(config: ExperimentConfig, role: str, data: pathlib.Path, init: pathlib.Path, out: pathlib.Path,
                steps: int) -> WorldModelTrainConfig | ReflectorTrainConfig:
    """The settings of a Dyna fine-tuning stage: `worldenv train world-model|reflector --init`."""
    cls = WorldModelTrainConfig if role == "world_model" else ReflectorTrainConfig
    return cls(data=str(data), init=str(init), out=str(out), steps=steps, lr=config.dyna_lr, warmup=0,
               eval_every=max(steps // 5, 1), patience=0)


def curve(config: ExperimentConfig, root: pathlib.Path, stack: Stack, rl_out: pathlib.Path, starts: pathlib.Path) -> None:
    """Each snapshot: real success and imagined success from the same init states, and RL's own
    objective on the fixed draw of `starts`."""
    from worldenv.rl.run_dir import snapshot_dir
    stages.run(root, "eval_starts", _libero(config, "starts", "build", "--inits", f"{CURVE_INITS}-"
                                            f"{CURVE_INITS + config.curve_episodes - 1}", "--out", str(root / "eval_starts.npz")),
               root / "logs" / "eval_starts.log")
    for k in config.curve_points:
        policy = snapshot_dir(rl_out, k) if k < config.iterations else rl_out / "policy"
        stages.run(root, f"curve_real_{k:04d}", _libero(
            config, "eval", "--policy", str(policy), "--episodes-per-task", str(config.curve_episodes), "--init-offset",
            str(CURVE_INITS), "--videos", "0", "--out", str(root / "curve" / f"real_{k:04d}")), root / "logs" / "curve.log")
        stages.inline(root, f"curve_imagined_{k:04d}", lambda: imagined(config, stack, policy, root, k))
        if config.objective_starts:
            stages.inline(root, f"objective_{k:04d}", lambda: objective(config, stack, policy, starts, root, f"{k:04d}"))


def objective(config: ExperimentConfig, stack: Stack, policy: pathlib.Path, starts: pathlib.Path, root: pathlib.Path,
              name: str) -> dict:
    """`policy`'s imagined episodes (served models, RL's horizon and eta) from the fixed draw of
    `starts`, its mean and sampled -> <root>/objective/<name>.json."""
    from worldenv import models
    from worldenv.data.start_bank import StartBank
    from worldenv.measure import imagined as measure
    bank = measure.fixed_draw(StartBank.load(starts), config.objective_starts, OBJECTIVE_DRAW)
    with stack.served() as (world_model, reflector):
        episodes = measure.objective(models.load(policy, role="policy"), world_model, reflector, bank, config.horizon,
                                     config.eta, grasp_gate=config.grasp_gate, confirm=config.confirm)
    return _write(root / "objective" / f"{name}.json",
                  {"name": name, "policy": str(policy), "horizon": config.horizon, "eta": config.eta, **episodes})


def _write(path: pathlib.Path, out: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def imagined(config: ExperimentConfig, stack: Stack, policy: pathlib.Path, root: pathlib.Path, k: int) -> dict:
    """The snapshot's deterministic episodes inside the served world model, judged by the served reflector."""
    from worldenv import models
    from worldenv.data.start_bank import StartBank
    from worldenv.measure import imagined as measure
    from worldenv.sim import suites
    chunks = -(-suites.MAX_EPISODE_STEPS[config.suite] // 8)          # the real episode's step budget, in chunks
    with stack.served() as (world_model, reflector):
        episodes = measure.rollouts(models.load(policy, role="policy"), world_model, reflector,
                                    StartBank.load(root / "eval_starts.npz"), chunks, config.eta,
                                    grasp_gate=config.grasp_gate, confirm=config.confirm)
    return _write(root / "curve" / f"imagined_{k:04d}.json",
                  {"iteration": k, "horizon_chunks": chunks, "episodes": episodes,
                   "success": sum(e["done"] for e in episodes) / len(episodes)})


def evaluate(config: ExperimentConfig, root: pathlib.Path, name: str, policy: pathlib.Path, *extra: str,
             episodes: int | None = None) -> None:
    """`worldenv eval` of `policy` as stage `name`: LIBERO's fixed init states 0.., the same seed."""
    episodes = episodes or config.eval_episodes
    stages.run(root, name, _libero(config, "eval", "--policy", str(policy), "--episodes-per-task", str(episodes),
                                   "--init-offset", "0", "--seed", "0", *extra, "--out", str(root / name)),
               root / "logs" / f"{name}.log")


def sampled_args(config: ExperimentConfig) -> list[str]:
    """`worldenv eval` flags for the actions RL samples: drawn from the Laplace head restarted at
    --exploration-scale (before the experiment passed --sample, these stages took the mean)."""
    return ["--sample", "--exploration-scale", str(config.exploration_scale)]


def table4_args(config: ExperimentConfig, reflector: str) -> list[str]:
    """`worldenv eval` flags for Table 4: the served reflector at `reflector` decides termination."""
    return ["--termination", "reflector", "--reflector", reflector, "--eta", str(config.eta), *_token(config),
            *(["--grasp-gate", str(config.grasp_gate)] if config.grasp_gate else []),
            *(["--confirm", str(config.table4_confirm)] if config.table4_confirm > 1 else [])]


def final(config: ExperimentConfig, root: pathlib.Path, sft: pathlib.Path, stack: Stack, rl_out: pathlib.Path) -> None:
    """SFT and RL on the same init states with the same seeds; then under reflector termination."""
    policies = {"sft": sft, "rl": rl_out / "policy"}
    for name, policy in policies.items():
        evaluate(config, root, f"eval_{name}", policy)
    for name, policy in policies.items() if config.sampled_episodes else ():
        evaluate(config, root, f"sampled_{name}", policy, *sampled_args(config), episodes=config.sampled_episodes)
    if not config.table4:
        return
    for name, policy in policies.items():
        if not stages.finished(root, f"table4_{name}"):
            evaluate(config, root, f"table4_{name}", policy, *table4_args(config, stack.addresses()["reflector"]),
                     episodes=config.table4_episodes)


def dyna(config: ExperimentConfig, root: pathlib.Path, dirs: dict[str, pathlib.Path], rl_out: pathlib.Path) -> None:
    """One Dyna round: the RL policy explores the real simulator (new init states), the world model
    and the reflector are fine-tuned on those episodes, the new episodes' keyframes become the start
    states, and RL continues from the RL policy against the updated models; then evaluated."""
    d, policy = root / "dyna", rl_out / "policy"
    stages.run(root, "dyna_explore", _libero(config, "explore", "--policy", str(policy), "--noise", config.dyna_noise,
                                             "--episodes-per-task", str(config.dyna_explore), "--init-offset",
                                             str(DYNA_INITS), "--seed", "2", "--out", str(d / "explore")),
               root / "logs" / "dyna_explore.log")
    tuned = {"policy": policy, "world_model": d / "world_model" / "model", "reflector": d / "reflector" / "model"}
    for role, steps in (("world_model", config.dyna_world_model_steps), ("reflector", config.dyna_reflector_steps)):
        if role == "reflector" and not both_outcomes(d / "explore"):
            print("[dyna_reflector] the new episodes are all failures or all successes: the reflector is kept as it "
                  "was (fine-tuning on one class teaches it to answer that class)", flush=True)
            tuned[role] = dirs[role]
            continue
        tune = tune_config(config, role, d / "explore", dirs[role], d / role, steps)
        stages.run(root, f"dyna_{role}", ["train", role.replace("_", "-"), *argv(tune)],
                   root / "logs" / f"dyna_{role}.log")
    stages.run(root, "dyna_starts", ["starts", "keyframes", "--data", str(d / "explore"), "--every", "2",
                                     "--out", str(d / "starts.npz")], root / "logs" / "dyna_starts.log")
    stack = Stack(config, tuned, d)
    try:
        out = rl(config, root, "dyna_rl", policy, d / "starts.npz", stack, config.dyna_iterations)
    finally:
        stack.stop()
    evaluate(config, root, "eval_dyna", out / "policy", episodes=config.dyna_eval_episodes)


def both_outcomes(folder: pathlib.Path) -> bool:
    """Whether the recorded episodes under `folder` hold successes and failures."""
    from worldenv.pipeline.models_report import budget
    data = budget(folder.parent, names=(folder.name,))[folder.name]
    return 0 < data["successes"] < data["episodes"]


def run(config: ExperimentConfig) -> pathlib.Path:
    """Every stage in order; returns the experiment's directory."""
    root = config.root
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    folder = model_folder(config, root)
    dirs = {role: checkpoints.model_dir(role, folder) for role in checkpoints.ROLES}
    missing = [role for role, path in dirs.items() if path is None] + ([] if checkpoints.starts(folder) else ["starts.npz"])
    if missing:
        raise RuntimeError(f"--models: {folder} has no {', '.join(missing)}")
    stack = Stack(config, dirs, root)
    try:
        rl_out = rl(config, root, "rl", dirs["policy"], folder / checkpoints.STARTS, stack, config.iterations)
        curve(config, root, stack, rl_out, folder / checkpoints.STARTS)
        final(config, root, dirs["policy"], stack, rl_out)
        more_seeds(config, root, dirs["policy"], folder / checkpoints.STARTS, stack)
        if config.controls:
            controls(config, root, dirs["policy"], folder / checkpoints.STARTS, stack)
    finally:
        stack.stop()
    for _ in range(config.dyna_rounds):
        dyna(config, root, dirs, rl_out)
    print(f"experiment stages done in {time.perf_counter() - started:.0f} s -> {root}", flush=True)
    return root
