"""Typed settings of the `worldenv train` commands (field docs become `--help`); light to
import, so the CLI stays fast."""
from __future__ import annotations

import json
from typing import Literal

import pydantic

from worldenv.config import Settings, comma_list


class FitConfig(Settings):
    """Optimisation and stopping (every `worldenv train` command has these flags)."""

    steps: int = pydantic.Field(5000, ge=1, description="optimiser steps at most")
    batch_size: int = pydantic.Field(64, ge=1, description="samples per step")
    lr: float = pydantic.Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = pydantic.Field(1e-4, ge=0, description="AdamW weight decay")
    warmup: int = pydantic.Field(100, ge=0, description="steps of linear warm-up")
    min_lr_fraction: float = pydantic.Field(0.05, ge=0, le=1, description="cosine decay floor, fraction of lr")
    grad_clip: float = pydantic.Field(1.0, gt=0, description="gradient norm clip")
    eval_every: int = pydantic.Field(250, ge=1, description="steps between validations (and checkpoints)")
    patience: int = pydantic.Field(0, ge=0, description="stop after this many validations without a new best; 0 = never")
    min_delta: float = pydantic.Field(1e-3, ge=0, description="a new best must beat the old by this fraction")
    seed: int = pydantic.Field(0, description="seed of the initialisation, the split and the batches")
    threads: int = pydantic.Field(0, ge=0, description="torch threads; 0 = torch's default")
    device: str = pydantic.Field("cpu", description="torch device to train on, e.g. cpu or cuda")
    autocast: Literal["none", "bfloat16"] = pydantic.Field(
        "none", description="mixed precision for the forward pass (bfloat16 on GPUs); weights stay float32")
    stop_at: int = pydantic.Field(0, ge=0, description="end this run at this step, checkpointed (0 = at `steps`); "
                                  "the schedule still spans `steps`, so the next run resumes on the same curve")


class TrainConfig(FitConfig):
    """A `worldenv train` command: its data, its run directory, and the model's config overrides."""

    data: str = pydantic.Field(description="HDF5 episode files or folders of them, comma-separated")
    out: str = pydantic.Field(description="run directory: model/ (the best checkpoint), history.jsonl, resumable state")
    val_fraction: float = pydantic.Field(0.15, ge=0, lt=1, description="episodes held out for validation")
    episodes_per_file: int = pydantic.Field(0, ge=0, description="use each task file's first n episodes; 0 = all")
    model: str = pydantic.Field("{}", description="JSON object of model config overrides")
    init: str | None = pydantic.Field(None, description="start from this checkpoint directory's weights and config "
                                      "(fine-tuning, e.g. a Dyna round on new episodes; 'shipped' = worldenv's); "
                                      "--model must then be empty")

    @pydantic.model_validator(mode="after")
    def _init_or_overrides(self):
        if self.init and json.loads(self.model or "{}"):
            raise ValueError("--model: config overrides cannot change a checkpoint given with --init")
        return self

    @pydantic.field_validator("model")
    @classmethod
    def _json_object(cls, v: str) -> str:
        try:
            value = json.loads(v)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object, e.g. '{\"width\": 256}'")
        return v

    @property
    def overrides(self) -> dict:
        """The model config overrides."""
        return json.loads(self.model)

    @property
    def paths(self) -> list[str]:
        """The data paths."""
        return comma_list(self.data)


class PolicyTrainConfig(TrainConfig):
    """What `worldenv train policy` trains and how."""

    nll_weight: float = pydantic.Field(0.1, ge=0, description="weight of the Laplace NLL beside the L1 on the mean")
    shift: int = pydantic.Field(4, ge=0, description="random frame shift augmentation, pixels")
    only_successes: bool = pydantic.Field(True, description="imitate successful episodes only")
    steps: int = pydantic.Field(5000, ge=1, description="optimiser steps at most")
    model: str = pydantic.Field("{}", description="JSON object of policy config overrides, e.g. {\"width\": 256}")

class WorldModelTrainConfig(TrainConfig):
    """What `worldenv train world-model` trains and how."""

    val_fraction: float = pydantic.Field(0.1, ge=0, lt=1, description="episodes held out for validation")
    calibrate: bool = pydantic.Field(True, description="fit the action map's gain to the data")
    steps: int = pydantic.Field(20000, ge=1, description="optimiser steps at most")
    batch_size: int = pydantic.Field(32, ge=1, description="samples per step")
    lr: float = pydantic.Field(5e-4, gt=0, description="peak learning rate (AdamW)")
    eval_every: int = pydantic.Field(500, ge=1, description="steps between validations (and checkpoints)")
    patience: int = pydantic.Field(8, ge=0, description="stop after this many validations without a new best; 0 = never")
    model: str = pydantic.Field("{}", description="JSON object of world-model config overrides, e.g. {\"mode\": \"diffusion\"}")
    add_proprio_reader: bool = pydantic.Field(False, description="give the world model (e.g. an --init checkpoint made "
                                              "without one) a proprio reader: the next proprio read off the predicted "
                                              "frame instead of integrated, before training")
    reader_only: bool = pydantic.Field(False, description="train only the proprio reader; every other weight stays as "
                                       "it is (the frames the world model predicts do not change)")
    proprio_dynamics: bool = pydantic.Field(
        False, description="give the world model (e.g. an --init checkpoint) a learned proprio dynamics and train only "
        "it, on windows of whole episodes unrolled on its own predictions; every other weight stays as it is "
        "(e.g. --steps 2000 --lr 1e-3 --batch-size 64 --eval-every 250)")
    unroll: int = pydantic.Field(8, ge=1, le=64, description="--proprio-dynamics: chunks per training window, each "
                                 "predicted from the dynamics' own previous prediction")
    proprio_members: int = pydantic.Field(
        1, ge=1, le=16, description="--proprio-dynamics: train an ensemble of this many dynamics, each from its own "
        "initial weights on its own draws of windows, whose step is the mean of theirs (the closed loop moved 20 "
        "points with a single dynamics' training seed); costs this many times the training; 1 = one dynamics")
    policy_units: str | None = pydantic.Field(
        None, description="--proprio-dynamics: also count the error in this policy's proprio input (its "
        "standardisation and clamp; 'shipped' = worldenv's SFT policy), whose rotation features vary 3-30x less "
        "than in the dynamics' data, so the dynamics learns what that policy reads; unset = the dynamics' own units")
    teacher: str | None = pydantic.Field(
        None, description="distil this world-model checkpoint ('shipped' = worldenv's) into a new one: the student "
        "takes its config with --model's overrides (e.g. {\"patch\": 2}, a cheaper U-Net) and its proprio path "
        "(kept frozen), and its frame loss also pulls towards the teacher's predicted frame of every training "
        "transition; with --init, that checkpoint (e.g. a student trained before) is the student")
    teacher_weight: float = pydantic.Field(0.5, ge=0, le=1, description="--teacher: share of the frame loss on the "
                                           "teacher's frame (the rest on the real one)")

    own_history: int = pydantic.Field(
        0, ge=0, le=16, description="train the frames on their own predicted history, as imagination rolls: each "
        "batch draws d = 0..N and rolls the model d chunks from a real start on the real actions (no gradient "
        "through the roll), then learns the real frame after from that history; the best model is the one at "
        "d = N on held-out episodes; 0 = every history real (teacher forcing)")

    @pydantic.model_validator(mode="after")
    def _one_proprio_path(self):
        if self.proprio_dynamics and (self.add_proprio_reader or self.reader_only):
            raise ValueError("--proprio-dynamics: cannot be combined with --add-proprio-reader / --reader-only")
        if self.proprio_members > 1 and not self.proprio_dynamics:
            raise ValueError("--proprio-members: an ensemble of proprio dynamics; it needs --proprio-dynamics")
        if self.policy_units and not self.proprio_dynamics:
            raise ValueError("--policy-units: weighs the proprio dynamics' loss; it needs --proprio-dynamics")
        if self.own_history and (self.teacher or self.proprio_dynamics or self.reader_only):
            raise ValueError("--own-history: trains the frames on their own history; it cannot be combined with "
                             "--teacher, --proprio-dynamics or --reader-only")
        if self.teacher and (self.proprio_dynamics or self.add_proprio_reader or self.reader_only):
            raise ValueError("--teacher: a student trains its frames only; it cannot be combined with "
                             "--proprio-dynamics, --add-proprio-reader or --reader-only")
        return self

class ReflectorTrainConfig(TrainConfig):
    """What `worldenv train reflector` trains and how."""

    max_pos_weight: float = pydantic.Field(10.0, ge=1, description="cap on the positives' weight in the BCE")
    mismatch_fraction: float = pydantic.Field(
        0.25, ge=0, lt=1, description="share of each batch that is success frames judged under another task's "
        "instruction, labelled not done (the reflector must read the instruction); 0 = none")
    replays: str | None = pydantic.Field(
        None, description="world-model checkpoint directory: also train on its open-loop replays of every episode's "
        "real actions, labelled with the real outcome frame by frame (the reflector judges imagined video in RL)")
    add_film: bool = pydantic.Field(False, description="give the reflector (e.g. an --init checkpoint made without "
                                    "one) the instruction FiLM layer, starting at identity, before training")
    shift: int = pydantic.Field(2, ge=0, description="random frame shift augmentation, pixels")
    target: Literal["done", "outcome"] = pydantic.Field(
        "done", description="done = p(task done by this frame), the reward; outcome = P(the episode ends in success | "
        "the video so far), every frame labelled with its episode's outcome: a value model for short imagination "
        "(`train rl --value`), trained on the policy's own real episodes")
    steps: int = pydantic.Field(3000, ge=1, description="optimiser steps at most")
    batch_size: int = pydantic.Field(32, ge=1, description="samples per step")
    lr: float = pydantic.Field(5e-4, gt=0, description="peak learning rate (AdamW)")
    patience: int = pydantic.Field(6, ge=0, description="stop after this many validations without a new best; 0 = never")
    model: str = pydantic.Field("{}", description="JSON object of reflector config overrides, e.g. {\"width\": 256}")
