"""`worldenv pipeline`: LIBERO data -> the three models -> measured against the real simulator.

Stages (each resumable, see `stages`), all data under --home, outside the repository:
  demos            scripted-expert demos on sampled init states (>= 1000)
  sft_n<k>_s<s>    the policy trained on k demos per task, for each k of --sft-demos and each
                   training seed s of --sft-seeds (the seed alone moves SFT success by up to
                   a third of the episodes, so one seed's figure is noise)
  eval_sft_n<k>_s<s>  each of them in LIBERO on the 50 fixed init states of every task
  (choice)         the k whose median real success over the seeds is nearest 50 % inside
                   15-85 %: RL can only show a gain where SFT sometimes succeeds and sometimes
                   fails; that k's median-seed policy is the one RL starts from
  explore          the chosen policy with Laplace noise on sampled init states (>= 2000)
  heldout_*        demos (>= 5000) and exploration (>= 6000) no model trains on
  world_model, reflector   trained on all demos + exploration; the reflector also on the world
                   model's replays of them, with other tasks' instructions as negatives
  world_model_dynamics   the world model given a learned proprio dynamics, trained unrolled on
                   the same episodes (its proprio no longer drifts over long imagination); the
                   world model every later stage uses
  align, align_sampled   `worldenv align` of the chosen policy with the new world model and
                   reflector on held-out sampled init states (8000+): imagined vs real outcomes,
                   with the policy's mean and sampled as RL explores (--exploration-scale)
then (`report`) world-model drift and reflector verdicts on the held-out episodes, and
reports/models.md with its drift PNG.
LIBERO's 50 fixed init states are used by evaluation only.
"""
from __future__ import annotations

import json
import pathlib
from typing import Literal

from pydantic import Field

from worldenv.config import Settings, comma_list
from worldenv.pipeline import stages

TRAIN_INITS, EXPLORE_INITS, HELDOUT_DEMO_INITS, HELDOUT_EXPLORE_INITS = 1000, 2000, 5000, 6000
REFLECTOR_MODEL = '{"instruction_film": true}'   # the instruction conditions every frame's features


class PipelineConfig(Settings):
    """Data, models and measurements for one suite; see `worldenv.pipeline.models`."""

    suite: str = Field("libero_object", description="LIBERO suite")
    tasks: str = Field("0,1,2", description="task indices, e.g. '0,1,2'")
    home: str = Field("", description="data and runs directory (default: <worldenv home>/pipeline/<suite>)")
    demos: int = Field(10, ge=1, description="expert demos collected per task (the world model and reflector use all)")
    sft_demos: str = Field("1,3,10", description="demos per task the policy is trained on, one candidate each")
    sft_seeds: str = Field("0,1,2", description="training seeds of each SFT candidate; the choice reads the median")
    explore_episodes: int = Field(20, ge=1, description="exploration episodes per task with the chosen policy")
    heldout_demos: int = Field(2, ge=1, description="held-out demos per task (measurement only)")
    heldout_explore: int = Field(5, ge=1, description="held-out exploration episodes per task (measurement only)")
    eval_episodes: int = Field(50, ge=1, le=50, description="evaluation episodes per task (LIBERO's fixed init states)")
    world_model_steps: int = Field(20000, ge=1, description="world-model optimiser steps at most")
    world_model_init: str = Field("", description="fine-tune this world-model checkpoint ('shipped' = worldenv's) "
                                  "on the new data instead of training one from scratch (at --world-model-lr); "
                                  "empty = from scratch")
    world_model_lr: float = Field(1e-4, gt=0, description="learning rate of a world-model fine-tune (--world-model-init)")
    reflector_init: str = Field("", description="fine-tune this reflector checkpoint ('shipped' = worldenv's), its "
                                "instruction FiLM grown at identity, instead of training one from scratch; empty = "
                                "from scratch")
    reflector_steps: int = Field(3000, ge=1, description="reflector optimiser steps at most")
    proprio_dynamics_steps: int = Field(8000, ge=0, description="steps of the world model's proprio dynamics (trained "
                                        "unrolled on its own predictions, only it); 0 = keep the integrated proprio")
    report: str = Field("reports/models.md", description="where the markdown report goes (a PNG beside it)")
    checkpoints: str = Field("", description="copy the final models here (e.g. the shipped checkpoints); empty = don't")
    device: str = Field("cpu", description="torch device for training the world model and the reflector")
    align_episodes: int = Field(10, ge=1, description="alignment: real episodes per task (held-out sampled init states)")
    exploration_scale: float = Field(0.02, gt=0, description="alignment: the Laplace scale (normalised action units) "
                                     "the policy samples with, as `train rl` explores")
    stop_after: Literal["", "collect", "policies", "explore", "models"] = Field(
        "", description="stop after this group of stages (e.g. to train the models elsewhere); empty = run all")

    @property
    def root(self) -> pathlib.Path:
        from worldenv import home
        return pathlib.Path(self.home) if self.home else home.path() / "pipeline" / self.suite

    @property
    def candidates(self) -> list[int]:
        return [int(k) for k in comma_list(self.sft_demos)]

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in comma_list(self.sft_seeds)]


def _libero(config: PipelineConfig, *args: str) -> list[str]:
    return [*args, "--suite", config.suite, "--tasks", config.tasks]


def collect(config: PipelineConfig, root: pathlib.Path) -> None:
    """Demos for training and held-out demos."""
    for name, n, first in (("demos", config.demos, TRAIN_INITS), ("heldout_demos", config.heldout_demos, HELDOUT_DEMO_INITS)):
        stages.run(root, name, _libero(config, "demos", "collect", "--per-task", str(n), "--init-offset", str(first),
                                       "--max-attempts", str(3 * n), "--no-every-step", "--no-wrist",
                                       "--out", str(root / name)), root / "logs" / f"{name}.log")


def sft_name(k: int, seed: int) -> str:
    """Run directory of the SFT candidate with k demos per task and training seed `seed`."""
    return f"sft_n{k}_s{seed}"


def policies(config: PipelineConfig, root: pathlib.Path) -> tuple[int, int]:
    """Train and evaluate each SFT candidate at each seed; returns the chosen (demos per task, seed)."""
    for k in config.candidates:
        for seed in config.seeds:
            name = sft_name(k, seed)
            stages.run(root, name, ["train", "policy", "--data", str(root / "demos"), "--out", str(root / name),
                                    "--episodes-per-file", str(k), "--seed", str(seed)], root / "logs" / f"{name}.log")
            stages.run(root, f"eval_{name}", _libero(config, "eval", "--policy", str(root / name / "model"),
                                                     "--episodes-per-task", str(config.eval_episodes), "--init-offset",
                                                     "0", "--out", str(root / f"eval_{name}")),
                       root / "logs" / f"eval_{name}.log")
    rates = sft_rates(root, config.candidates, config.seeds)
    k = choose({k: median(list(by_seed.values())) for k, by_seed in rates.items()})
    return k, median_seed(rates[k])


def sft_rates(root: pathlib.Path, candidates: list[int], seeds: list[int]) -> dict[int, dict[int, float]]:
    """Real success rate of every candidate (demos per task) at every training seed."""
    def rate(k: int, s: int) -> float:
        return json.loads((root / f"eval_{sft_name(k, s)}" / "eval.json").read_text())["suite_result"]["rate"]
    return {k: {s: rate(k, s) for s in seeds} for k in candidates}


def median(values: list[float]) -> float:
    """The median; of an even count, the lower middle value (a rate some seed really had)."""
    return sorted(values)[(len(values) - 1) // 2]


def median_seed(by_seed: dict[int, float]) -> int:
    """The seed whose rate is the median (ties to the lower seed)."""
    m = median(list(by_seed.values()))
    return min(s for s, r in by_seed.items() if r == m)


def choose(rates: dict[int, float]) -> int:
    """The candidate nearest 50 % success, preferring those inside 15-85 %."""
    inside = {k: r for k, r in rates.items() if 0.15 <= r <= 0.85} or rates
    return min(inside, key=lambda k: (abs(inside[k] - 0.5), k))


def explore(config: PipelineConfig, root: pathlib.Path, chosen: tuple[int, int]) -> None:
    policy = str(root / sft_name(*chosen) / "model")
    for name, n, first in (("explore", config.explore_episodes, EXPLORE_INITS),
                           ("heldout_explore", config.heldout_explore, HELDOUT_EXPLORE_INITS)):
        stages.run(root, name, _libero(config, "explore", "--policy", policy, "--noise", "laplace", "--episodes-per-task",
                                       str(n), "--init-offset", str(first), "--seed", "1", "--out", str(root / name)),
                   root / "logs" / f"{name}.log")


def world_model_dir(root: pathlib.Path) -> pathlib.Path:
    """The world model the later stages use: with its proprio dynamics where that stage ran."""
    dynamics = root / "world_model_dynamics" / "model"
    return dynamics if (dynamics / "config.json").is_file() else root / "world_model" / "model"


def models(config: PipelineConfig, root: pathlib.Path) -> None:
    data = f"{root / 'demos'},{root / 'explore'}"
    init = []
    if config.world_model_init:
        from worldenv import checkpoints
        init = ["--init", str(checkpoints.model(config.world_model_init, "world_model")), "--lr", str(config.world_model_lr),
                "--eval-every", str(max(1, min(500, config.world_model_steps // 4))), "--warmup", "20"]
    stages.run(root, "world_model", ["train", "world-model", "--data", data, "--out", str(root / "world_model"),
                                     "--steps", str(config.world_model_steps), *init, "--device", config.device],
               root / "logs" / "world_model.log")
    if config.proprio_dynamics_steps:
        stages.run(root, "world_model_dynamics", [
            "train", "world-model", "--init", str(root / "world_model" / "model"), "--proprio-dynamics", "--data", data,
            "--out", str(root / "world_model_dynamics"), "--steps", str(config.proprio_dynamics_steps), "--lr", "1e-3",
            "--batch-size", "64", "--eval-every", str(max(1, min(250, config.proprio_dynamics_steps // 4))),
            "--warmup", "50", "--device", config.device], root / "logs" / "world_model_dynamics.log")
    start = ["--model", REFLECTOR_MODEL]
    if config.reflector_init:
        from worldenv import checkpoints
        start = ["--init", str(checkpoints.model(config.reflector_init, "reflector")), "--add-film", "--lr", "3e-4",
                 "--eval-every", str(max(1, min(250, config.reflector_steps // 4))), "--warmup", "20", "--patience", "0"]
    stages.run(root, "reflector", ["train", "reflector", "--data", data, "--out", str(root / "reflector"),
                                   "--replays", str(world_model_dir(root)), *start,
                                   "--steps", str(config.reflector_steps), "--device", config.device],
               root / "logs" / "reflector.log")


def align(config: PipelineConfig, root: pathlib.Path, chosen: tuple[int, int]) -> None:
    """Imagined vs real outcomes of the chosen policy (its mean, then sampled as RL explores)."""
    models_ = ["--policy", str(root / sft_name(*chosen) / "model"), "--world-model", str(world_model_dir(root)),
               "--reflector", str(root / "reflector" / "model"), "--episodes-per-task", str(config.align_episodes)]
    for name, noise in (("align", ["--noise", "none"]),
                        ("align_sampled", ["--noise", "laplace", "--exploration-scale", str(config.exploration_scale)])):
        stages.run(root, name, _libero(config, "align", *models_, *noise, "--out", str(root / name)),
                   root / "logs" / f"{name}.log")


def run(config: PipelineConfig) -> tuple[int, int] | None:
    """Every stage in order (finished ones are skipped); returns the chosen (demos per task,
    seed), or None when `stop_after` ends the run before the models exist."""
    root = config.root
    collect(config, root)
    if config.stop_after == "collect":
        return None
    chosen = policies(config, root)
    rate = sft_rates(root, [chosen[0]], [chosen[1]])[chosen[0]][chosen[1]]
    print(f"chosen: {chosen[0]} demos per task, seed {chosen[1]} (the median seed; real SFT success {rate:.0%})",
          flush=True)
    if config.stop_after == "policies":
        return None
    explore(config, root, chosen)
    if config.stop_after == "explore":
        return None
    models(config, root)
    if config.stop_after == "models":
        return None
    align(config, root, chosen)
    return chosen
