"""Typed settings of RL in imagination: how a rollout makes its jobs (`RolloutOptions`, of
`worldenv rollout` and `worldenv up --rollout`) and what `worldenv train rl` runs (`RLConfig`).
Light to import, so the CLI stays fast."""
from __future__ import annotations

import os
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from worldenv import home
from worldenv.config import Settings, confirm_field, grasp_gate_field, local_address, redis_url_field


Reward = Literal["p_done", "done"]   # p(done) at termination (World-Env's); the imagined outcome, 1 if done
REWARDS = get_args(Reward)
METRICS_FILE = "metrics.jsonl"   # in a run directory: one row per iteration (`train rl`)
SETTINGS_FILE = "run.json"    # in a run directory: the settings of the run's latest start (`train rl`)
GROUPS_FILE = "groups.jsonl"  # in a run directory: each iteration's groups (start, rewards, outcomes)


class RolloutOptions(Settings):
    """How a rollout makes its imagined episodes (shared by `worldenv rollout` and `worldenv up --rollout`)."""

    starts: str | None = Field(None, description="start-state bank (.npz from `worldenv starts build`); none = "
                               "the bank the stack serves: a running `worldenv up`'s (its --starts, else its "
                               "checkpoints' keyframes, else synthetic start states), else the shipped keyframes")
    horizon: int = Field(30, ge=1, description="max action chunks per episode (LIBERO-Object allows 280 steps = 35 chunks)")
    group_size: int = Field(8, ge=1, description="rollouts per start state")
    seed: int = Field(1, ge=0, description="sampling seed base; 0 = unseeded")
    eta: float = Field(0.0, ge=0, lt=1, description="done threshold; 0 = the reflector's default")
    grasp_gate: float = grasp_gate_field()
    confirm: int = confirm_field()
    timeout: float = Field(900.0, gt=0, description="seconds to wait for the next result (a stack that keeps "
                           "finishing episodes is waited for, however slow; one that stalls this long fails)")

    @field_validator("starts")
    @classmethod
    def _starts_exist(cls, starts: str | None) -> str | None:
        if starts and not os.path.isfile(starts):
            raise ValueError(f"no such file {starts}")
        return starts


class RLConfig(Settings):
    """What `worldenv train rl` runs: LOOP in imagination over a running stack (see worldenv/rl/trainer.py)."""

    redis_url: str = redis_url_field("Redis of the stack")
    prefix: str = Field("worldenv", description="key prefix of the queue and episode store in Redis")
    policy_addr: str = Field(default_factory=lambda: home.service_address("policy", local_address("policy")),
                             description="the Policy replicas the new weights go to: host:port, a comma-separated "
                             "list, or dns:///host:port (every pod behind a headless Service, resolved again at each "
                             "look); unset: the policy a running `worldenv up` recorded, else 127.0.0.1:50053")
    auth_token: str | None = Field(None, description="bearer token sent to the Policy service")
    weights_store: bool = Field(True, description="also keep each published version in Redis (<prefix>:policy:"
                                "weights), where policy servers started with --weights-redis-url load it by "
                                "themselves (a replica that starts late or restarts catches up before it serves)")
    policy_timeout_s: float = Field(10.0, gt=0, description="seconds a policy replica has to answer before it counts "
                                    "as unreachable")
    sync_every_s: float = Field(5.0, gt=0, description="while rollouts run, look at every policy replica this often "
                                "and send the current weights again to any not serving them (restarted, started late)")
    max_hopeless: int = Field(3, ge=0, description="stop with an error after this many consecutive iterations with no "
                              "usable group for one cause (stale: episodes of weights not the trainer's; failed; "
                              "incomplete; unreachable: no policy replica answers), naming the cause; 0 = never")
    policy: str = Field("shipped", description="checkpoint the trainer's policy starts from (the arch the "
                                 "service serves); 'shipped' = worldenv's trained one")
    starts: str = Field("shipped", description="start-state bank (.npz); 'shipped' = worldenv's keyframes")
    out: str = Field(description="run directory: metrics.jsonl, curves.png, policy/, resumable state")
    iterations: int = Field(20, ge=1, description="RL iterations (collect -> advantages -> update -> publish)")
    groups: int = Field(4, ge=1, description="start states per iteration (groups)")
    group_size: int = Field(8, ge=2, description="N, rollouts per start state (the leave-one-out group)")
    horizon: int = Field(30, ge=1, description="max action chunks per imagined episode")
    eta: float = Field(0.0, ge=0, lt=1, description="done threshold on p(done); 0 = the reflector's default")
    grasp_gate: float = grasp_gate_field()
    confirm: int = confirm_field()
    reward: Reward = Field(
        "p_done", description="each rollout's reward: 'p_done' = the reflector's p(done) at its termination "
        "(World-Env's); 'done' = its imagined outcome alone, 1 if it ended done, else 0, so a group whose rollouts "
        "all ended alike gives no advantage even when their p(done) differ (0.91 vs 1.00: the reflector's "
        "confidence); `worldenv signal` measures both on the same rollouts")
    min_reward_spread: float = Field(
        0.05, ge=0, description="groups whose rewards differ by at most this are left out of the update (their "
        "advantages are the reflector's noise); an iteration with none left skips its update")
    replay_open: float = Field(
        0.0, ge=0, lt=1, description="share of each iteration's groups drawn again from start states whose last "
        "group had a reward spread (an open outcome under a recent policy), weighted by that spread; the rest are "
        "fresh uniform draws from the bank (prioritised replay of start states, worldenv/rl/start_replay.py; no "
        "extra imagined steps). 0 = every group a uniform draw")
    epochs: int = Field(2, ge=1, description="PPO epochs over each iteration's timesteps")
    minibatch: int = Field(64, ge=1, description="timesteps per minibatch")
    lr: float = Field(1e-6, gt=0, description="Adam learning rate (at b = 0.02 with the shipped models, 1e-6 gave "
                      "approximate KL 0.005-0.03 and clip fraction 0.15-0.4 per update; 3e-6 at b = 0.05 gave KL 0.065 "
                      "and clip fraction 0.56; 1e-5 with 4 epochs KL 0.45)")
    head_lr: float | None = Field(
        None, gt=0, description="learning rate of the heads of a policy trained through an adapter (openvla-oft: "
        "LoRA at --lr, action/scale heads and proprio projector at this; World-Env used 1e-4 and 1e-5); "
        "none = --lr for everything")
    exploration_scale: float | None = Field(
        0.02, gt=0, description="restart the policy's Laplace scale b at this value, in normalised action units "
        "(times each dimension's spread in the SFT data, so a rotation gets noise its size), before the first "
        "iteration (SFT drives b to its floor, where PPO ratios explode); none = keep the checkpoint's")
    learn_scale: bool = Field(
        True, description="train the Laplace scale head with the rest; false = b stays where --exploration-scale put "
        "it (a fixed exploration noise, as VLA-RFT clamps its std and DPPO/DiWA fix a floor), so every PPO ratio "
        "measures only how the mean moved")
    value: str | None = Field(
        None, description="short imagination: a value checkpoint (`worldenv train reflector --target outcome` on the "
        "policy's own real episodes); an episode that reaches --horizon without done gets the value's P(success) of "
        "its video as reward instead of its last p(done). Use with a short --horizon (2-10 chunks) and a bank of real "
        "states; none = plain LOOP")
    clip: float = Field(0.1, gt=0, lt=1, description="PPO clip epsilon")
    ratio: Literal["chunk", "dimension"] = Field(
        "chunk", description="PPO's probability ratio: 'chunk' = one per timestep, the Laplace log-probs summed over "
        "the chunk's K x A actions (World-Env's); 'dimension' = one per action and step, each clipped on its own (as "
        "token-level PPO clips each action token; the old log-prob of each action is the trainer's policy's before the "
        "update, `behaviour_gap` in the metrics says how far their sum is from the one the worker stored). With one "
        "ratio over 56 actions, the mean moving a few hundredths of b per action already takes it past the clip "
        "(b = 0.1, lr 3e-6: 0.027 b per action in one iteration, 39 % of ratios clipped)")
    shuffle_rewards: bool = Field(
        False, description="a control, not a way to train: each group's rewards are permuted among its rollouts "
        "(seeded per iteration) before the advantages, so the update keeps RL's groups, size and steps and loses "
        "its signal; its mean path (mean_drift_b, straightness) and `worldenv objective` are the noise floor a run "
        "with the true rewards is compared with")
    shuffle_seed: int | None = Field(
        None, ge=0, description="seed of --shuffle-rewards' permutations; none = --seed. Controls at one --seed and "
        "different --shuffle-seed draw the same starts and sampling seeds and part by chance alone: their paired "
        "on-policy gap (`worldenv compare --same-starts-only`) is the null for a run against its control")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    max_staleness: int = Field(1, ge=0, description="drop episodes sampled by a policy more versions old")
    seed: int = Field(0, ge=0, description="seed of the start-state draws, sampling and minibatches")
    timeout: float = Field(900.0, gt=0, description="seconds an iteration waits for its next episode (a stack "
                           "that keeps finishing episodes is waited for, however slow; one that stalls this long "
                           "fails the run, which resumes at that iteration)")
    run_id: str | None = Field(None, description="id of the run's jobs; none = the out directory's name")
    snapshot_every: int = Field(0, ge=0, description="keep the policy every K iterations in "
                                         "<out>/snapshots/iterationK, and the start in iteration0000 (to evaluate "
                                         "the curve later); 0 = never")

    @model_validator(mode="after")
    def _reward_with_value(self) -> "RLConfig":
        if self.reward == "done" and self.value is not None:
            raise ValueError("reward: 'done' scores an episode cut at the horizon 0, so --value would score nothing; "
                             "use --reward p_done with --value")
        return self

    @model_validator(mode="after")
    def _shuffle_seed_with_shuffle(self) -> "RLConfig":
        if self.shuffle_seed is not None and not self.shuffle_rewards:
            raise ValueError("shuffle_seed: seeds the permutations of --shuffle-rewards, which is off")
        return self

    @field_validator("value")
    @classmethod
    def _value_exists(cls, value: str | None) -> str | None:
        if value and not os.path.isfile(os.path.join(value, "config.json")):
            raise ValueError(f"no checkpoint (config.json) at {value}")
        return value
