"""The LOOP trainer: RL post-training of the policy in imagination, over the Redis queue and
the three services. One iteration reads top to bottom:

    collect     G groups of N jobs (one group per start state drawn from the bank; with
                --replay-open a share of them drawn again from starts whose last group had a
                reward spread, rl/start_replay.py) through the queue; rollout workers imagine
                them against the Policy, WorldModel and Reflector services and store the
                episodes (actions, the log-probs they were sampled with, the reward = p(done)
                at termination; with --reward done the trainer reads the outcome, 1 if done)
    advantages  leave-one-out within each group, broadcast over each trajectory's steps
    update      PPO-clip epochs over minibatches of timesteps, on the trainer's own copy of
                the policy (the world model and the reflector stay frozen); then how far and
                which way the mean action moved on a fixed probe of starts (rl/mean_path.py)
    publish     the new weights to every Policy replica (version + 1; worldenv/rl/publisher.py),
                and to the weights store replicas catch up from

Before each collect, and while it waits, the trainer looks at every replica and sends its
current weights again to one that is not serving them (restarted, started late); episodes
sampled by other weights are dropped as stale. --max-hopeless iterations in a row with no
usable group for one cause stop the run with that cause (`progress.NoProgress`).

Every iteration appends a row to <out>/metrics.jsonl and redraws <out>/curves.png; the policy,
the optimiser and the iteration are checkpointed, and running the command again resumes
(rl/run_dir.py: what the run directory holds; run.json logs a resume that changed a setting).
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import time
import uuid

import numpy as np
import torch
from safetensors.torch import save as save_bytes

from worldenv.data import runs
from worldenv.data.episodes import EpisodeStore, ImaginedEpisode
from worldenv.data.policy_weights import PolicyWeightsStore
from worldenv.data.start_bank import StartBank
from worldenv.models import laplace
from worldenv.models.roles import Observations
from worldenv.rl import loop_ppo, progress, rollout, value
from worldenv.rl.mean_path import MeanPath
from worldenv.rl.publisher import PolicyUnreachable, Publisher, SyncReport
from worldenv.rl.queue import RolloutQueue
from worldenv.rl.run_dir import load_state, log_groups, log_row, save_settings, save_state, snapshot_dir
from worldenv.rl.settings import REWARDS, RLConfig
from worldenv.rl.start_replay import StartReplay

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Timesteps of one iteration's fresh, complete groups, flattened."""

    frames: np.ndarray          # (S, H, W, 3) uint8
    proprio: np.ndarray         # (S, P) float32
    instructions: list[str]     # S
    actions: np.ndarray         # (S, K, A) float32, as sampled
    old_log_probs: np.ndarray   # (S,) float32
    advantages: np.ndarray      # (S,) float32
    old_terms: np.ndarray | None = None   # (S, K, A) float32: per-action old log-probs (--ratio dimension)

    def take(self, idx: np.ndarray) -> "Batch":
        return Batch(self.frames[idx], self.proprio[idx], [self.instructions[i] for i in idx], self.actions[idx],
                     self.old_log_probs[idx], self.advantages[idx],
                     None if self.old_terms is None else self.old_terms[idx])


def fresh_groups(episodes: list[ImaginedEpisode], version: int, max_staleness: int, group_size: int,
                 floor: int = 0) -> tuple[list[list[ImaginedEpisode]], dict[str, int]]:
    """Complete groups whose every episode ran on a policy at most `max_staleness` versions old
    and not below `floor` (the first version this trainer published: anything lower is weights
    it never sent, such as a restarted replica's initial ones); the rest are dropped and counted:
    stale and failed episodes, and groups by the cause that dropped them (stale first)."""
    groups: dict[str, list[ImaginedEpisode]] = {}
    for e in episodes:
        groups.setdefault(e.group_id, []).append(e)
    oldest = max(version - max_staleness, floor)
    kept, dropped = [], dict.fromkeys(("stale_episodes", "failed_episodes", "dropped_groups", "dropped_stale",
                                       "dropped_failed", "dropped_incomplete"), 0)
    for members in groups.values():
        stale = sum(e.policy_version < oldest and e.status != "failed" for e in members)
        failed = sum(e.status == "failed" or not len(e.actions) for e in members)
        dropped["stale_episodes"] += stale
        dropped["failed_episodes"] += failed
        cause = "stale" if stale else "failed" if failed else "incomplete" if len(members) != group_size else None
        if cause:
            dropped["dropped_groups"] += 1
            dropped[f"dropped_{cause}"] += 1
        else:
            kept.append(sorted(members, key=lambda e: e.id))
    return kept, dropped


def iteration_run_id(run_id: str, it: int, attempt: str) -> str:
    """The run id of one iteration's jobs: <run id>-it<iteration>-<attempt>, the attempt being the
    trainer process's tag (`Trainer.attempt`); `earlier_attempts` reads it back."""
    return f"{run_id}-it{it:04d}-{attempt}"


def earlier_attempts(run_id: str, attempt: str):
    """Whether a job's run id is one of this run's other trainer processes (a killed one's), by
    the format `iteration_run_id` writes."""
    pattern = re.compile(rf"{re.escape(run_id)}-it\d{{4,}}-(?!{re.escape(attempt)}$)[0-9a-f]{{6}}")
    return lambda job_run_id: pattern.fullmatch(job_run_id) is not None


def drop_reason(episodes: list[ImaginedEpisode], cause: str | None, version: int, floor: int) -> str:
    """One line on why groups were dropped, for the log, the metrics and the run page."""
    if cause == "stale":
        seen = sorted({e.policy_version for e in episodes if e.status != "failed"})
        return f"episodes sampled by policy version(s) {seen}; the trainer publishes {version} (this run's first: {floor})"
    if cause == "failed":
        errors = [e.error for e in episodes if e.status == "failed" and e.error]
        return f"failed episodes, e.g. {errors[0]}" if errors else "failed episodes"
    return ""


def group_rewards(groups: list[list[ImaginedEpisode]], kind: str = "p_done") -> np.ndarray:
    """(G, N) float32: each rollout's reward, the stored p(done) at termination ('p_done') or its
    imagined outcome, 1 if it ended done ('done'; --reward)."""
    if kind not in REWARDS:
        raise ValueError(f"reward: {kind!r} is not one of {', '.join(REWARDS)}")
    pick = (lambda e: e.reward) if kind == "p_done" else (lambda e: float(e.status == "done"))  # noqa: E731
    return np.array([[pick(e) for e in g] for g in groups], np.float32)


def flatten(groups: list[list[ImaginedEpisode]], shuffle: np.random.Generator | None = None,
            reward: str = "p_done") -> tuple[Batch, np.ndarray]:
    """Timesteps with their broadcast leave-one-out advantages; also the rewards (G, N), of the
    kind `reward` names (`group_rewards`). With `shuffle` (--shuffle-rewards, a control) each
    group's rewards are permuted among its rollouts."""
    rewards = group_rewards(groups, reward)                                                     # (G, N)
    if shuffle is not None:
        rewards = np.stack([shuffle.permutation(r) for r in rewards])
    rewards = torch.from_numpy(rewards)
    adv = loop_ppo.leave_one_out(rewards).flatten()                                            # (G*N,)
    episodes = [e for g in groups for e in g]
    lengths = torch.tensor([len(e.actions) for e in episodes])
    steps = loop_ppo.broadcast(adv, lengths).numpy()                                           # (S,)
    batch = Batch(np.concatenate([e.frames[:-1] for e in episodes]), np.concatenate([e.proprio[:-1] for e in episodes]),
                  [e.instruction for e in episodes for _ in range(len(e.actions))],
                  np.concatenate([e.actions for e in episodes]), np.concatenate([e.log_probs for e in episodes]),
                  steps.astype(np.float32))
    return batch, rewards.numpy()


@torch.no_grad()
def with_old_terms(policy, batch: Batch, minibatch: int) -> tuple[Batch, float]:
    """`batch` with each action's log-prob under `policy` before the update (--ratio dimension),
    and the mean gap between their sum and the log-probs the worker stored (0 up to rounding
    when the worker sampled with these weights)."""
    policy.eval()
    terms = np.concatenate([policy.log_prob_terms(Observations(mb.frames, mb.proprio, mb.instructions),
                                                  torch.from_numpy(mb.actions)).float().cpu().numpy()
                            for mb in (batch.take(np.arange(i, min(i + minibatch, len(batch.actions))))
                                       for i in range(0, len(batch.actions), minibatch))])
    gap = float(np.abs(terms.sum(axis=(1, 2)) - batch.old_log_probs).mean())
    return dataclasses.replace(batch, old_terms=terms.astype(np.float32)), gap


def update(policy, optimizer, batch: Batch, epochs: int, minibatch: int, clip: float, grad_clip: float,
           rng: np.random.Generator) -> dict[str, float]:
    """PPO-clip epochs over shuffled minibatches of timesteps; mean stats. A batch with
    `old_terms` gets one ratio per action (--ratio dimension), else one per timestep."""
    stats: dict[str, list[float]] = {"loss": [], "clip_fraction": [], "approx_kl": [], "ratio_mean": []}
    policy.train()
    for _ in range(epochs):
        order = rng.permutation(len(batch.actions))
        for i in range(0, len(order), minibatch):
            mb = batch.take(order[i:i + minibatch])
            obs, actions = Observations(mb.frames, mb.proprio, mb.instructions), torch.from_numpy(mb.actions)
            if mb.old_terms is None:
                new, old, adv = policy.log_prob(obs, actions), mb.old_log_probs, mb.advantages
            else:
                new, old, adv = policy.log_prob_terms(obs, actions), mb.old_terms, mb.advantages[:, None, None]
            loss, s = loop_ppo.ppo_loss(new, torch.from_numpy(old).to(new.device), torch.from_numpy(adv).to(new.device),
                                        clip)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], grad_clip)
            optimizer.step()
            for k, v in {"loss": loss, **s}.items():
                stats[k].append(float(v.detach()))
    policy.eval()
    return {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}


def weights_bytes(policy) -> bytes:
    """The policy's trainable weights as a safetensors file.

    A paper-scale policy publishes only what RL changes (LoRA adapters and heads), not its
    frozen backbone: megabytes per version instead of 14 GB."""
    return save_bytes({k: v.detach().cpu().contiguous() for k, v in policy.publishable_state().items()})


def param_groups(policy, lr: float, head_lr: float | None) -> list[dict]:
    """Adam's parameter groups: one at `lr`, or, for a policy that names its groups (LoRA
    "adapter" and "heads"), the heads at `head_lr`."""
    named = getattr(policy, "trainable_groups", None)
    if head_lr is None or named is None:
        return [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": lr}]
    groups = {name: [p for p in params if p.requires_grad] for name, params in named().items()}
    return [{"params": params, "lr": head_lr if name == "heads" else lr, "name": name}
            for name, params in groups.items() if params]


SHUFFLE, MINIBATCHES, DRAW = 0, 1, 2   # an iteration's random streams (`iteration_rng`)


def iteration_rng(seed: int, it: int, stream: int) -> np.random.Generator:
    """One random stream of iteration `it` (a control's reward shuffle, the minibatch order, the
    start-state draw): a function of the seed, the iteration and the stream alone, so that a run
    and its control (or a resumed run) draw the same starts whatever their updates did. (A draw
    sharing a stream with the minibatch order would part them after the first update whose
    timesteps differ in number.) The shuffle's stream is the one `[seed, it]` seeded before."""
    return np.random.default_rng([seed, it, stream])


def shuffle_rng(config: RLConfig, it: int) -> np.random.Generator | None:
    """A control's reward permutations at iteration `it` (--shuffle-seed, else --seed); None for RL."""
    if not config.shuffle_rewards:
        return None
    return iteration_rng(config.seed if config.shuffle_seed is None else config.shuffle_seed, it, SHUFFLE)


class Trainer:
    """Holds the connections, the policy copy and the optimiser; `iteration` runs one."""

    def __init__(self, config: RLConfig, policy, publisher: Publisher, queue: RolloutQueue, store: EpisodeStore,
                 bank: StartBank, value_model=None):
        self.config, self.policy, self.publisher, self.queue, self.store, self.bank = \
            config, policy, publisher, queue, store, bank
        self.value_model = value_model      # short imagination: scores episodes cut at the horizon (rl/value.py)
        self.optimizer = torch.optim.Adam(param_groups(policy, config.lr, config.head_lr), lr=config.lr)
        self.replay = StartReplay(len(bank), config.replay_open, config.min_reward_spread)
        self.mean_path = MeanPath(bank)      # how far and which way the updates move the mean action
        self._drawn: dict[str, tuple[int, bool]] = {}   # this iteration's group id -> (start index, replayed)
        self._synced_at, self._sync = 0.0, SyncReport()
        self.groups_seen: list[dict] = []    # this iteration's complete groups: start, rewards, outcomes, used
        # Job ids of this process: the queue runs a job id once ever, so a run started again in a
        # deleted directory, or resumed in the middle of an iteration, must not reuse the ids whose
        # results it read past (it would wait for them until --timeout).
        self.attempt = uuid.uuid4().hex[:6]

    def collect(self, it: int, run_id: str) -> tuple[list[ImaginedEpisode], float]:
        c = self.config
        indices, replayed = self.replay.draw(c.groups, iteration_rng(c.seed, it, DRAW))   # uniform draws at --replay-open 0
        prefix = iteration_run_id(run_id, it, self.attempt)
        self._drawn = {f"{prefix}-g{g:04d}": (int(i), bool(r)) for g, (i, r) in enumerate(zip(indices, replayed))}
        jobs = rollout.make_jobs(self.bank.subset(indices), c.groups * c.group_size, prefix, c.horizon, c.group_size,
                                 seed=c.seed * 10_007 + it + 1, eta=c.eta,
                                 grasp_gate=c.grasp_gate, confirm=c.confirm)
        started = time.perf_counter()
        report = rollout.run(self.queue, self.store, jobs, c.timeout, on_wait=self._sync_while_waiting)
        episodes = [e for e in (self.store.get(i) for i in report.episode_ids) if e is not None]
        if gone := sum(1 for i in report.episode_ids if i) - len(episodes):
            # a group short of some is dropped as incomplete; one gone whole leaves no other trace
            log.warning("iteration %d: %d of %d episodes left the episode store before the trainer read them; the "
                        "workers' --max-episodes must hold at least one iteration (%d)", it, gone,
                        len(report.episode_ids), c.groups * c.group_size)
        if self.value_model is not None:
            episodes = value.bootstrap(self.value_model, episodes)
        return episodes, time.perf_counter() - started

    def sync(self) -> None:
        """Every policy replica onto the trainer's weights (PolicyUnreachable when none answers)."""
        self._synced_at = time.monotonic()
        self._sync = self._sync.add(self.publisher.sync())

    def _sync_while_waiting(self) -> None:
        """A replica that restarts during the rollouts gets the weights back within --sync-every-s."""
        if time.monotonic() - self._synced_at < self.config.sync_every_s:
            return
        try:
            self.sync()
        except PolicyUnreachable as exc:
            log.warning("%s", exc)

    def iteration(self, it: int, run_id: str) -> dict:
        c, version = self.config, self.publisher.version
        self._sync, self.groups_seen = SyncReport(), []
        try:
            self.sync()                                                                  # every replica on our weights
        except PolicyUnreachable as exc:
            return {"iteration": it, "version": version, "skipped": True, "no_update_cause": "unreachable",
                    "drop_reason": str(exc), **self._sync_stats()}
        episodes, wall = self.collect(it, run_id)                                        # collect
        row, groups = self.usable(it, episodes, wall)
        if not groups:
            return {**row, "version": version, "skipped": True, **self._sync_stats()}
        batch, _ = flatten(groups, shuffle_rng(c, it), c.reward)                        # advantages
        if c.ratio == "dimension":
            batch, row["behaviour_gap"] = with_old_terms(self.policy, batch, c.minibatch)
        stats = update(self.policy, self.optimizer, batch, c.epochs, c.minibatch, c.clip, c.grad_clip,
                       iteration_rng(c.seed, it, MINIBATCHES))
        stats.update(self.mean_path.see(self.policy))
        try:                                                                             # publish
            self._sync = self._sync.add(self.publisher.publish(weights_bytes(self.policy), f"{run_id} iteration {it}"))
        except PolicyUnreachable as exc:   # the next iteration's sync sends it
            log.warning("%s", exc)
            row["publish_error"] = str(exc)
        return {**row, "version": self.publisher.version, "timesteps": len(batch.actions), **stats, **self._sync_stats()}

    def usable(self, it: int, episodes: list[ImaginedEpisode], wall: float) -> tuple[dict, list[list[ImaginedEpisode]]]:
        """The iteration's row so far and the groups to train on: fresh, complete and with a
        reward spread; with none, the row says why (`no_update_cause`, `drop_reason`)."""
        c, version, floor = self.config, self.publisher.version, self.publisher.first_version
        groups, dropped = fresh_groups(episodes, version, c.max_staleness, c.group_size, floor)
        rewards = group_rewards(groups, c.reward).reshape(-1, c.group_size)                         # (G, N)
        keep = loop_ppo.informative(torch.from_numpy(rewards), c.min_reward_spread).numpy()              # (G,)
        cause = progress.cause_of(len(groups), int(keep.sum()), dropped)
        self.groups_seen = [{"start": g[0].start_id, "rewards": [round(float(x), 4) for x in r],
                             "done": [int(e.status == "done") for e in g], "used": bool(k)}
                            for g, r, k in zip(groups, rewards, keep)]
        row = {"iteration": it, **_rollout_stats(episodes, rewards, wall), "zero_advantage_groups":
               float(1 - keep.mean()) if len(keep) else 1.0, **self._replay_stats(groups, rewards, keep),
               **dropped, "no_update_cause": cause,
               "drop_reason": drop_reason(episodes, progress.cause_of(0, 0, dropped) if dropped["dropped_groups"]
                                          else None, version, floor)}   # the main cause of the groups dropped
        return row, [g for g, k in zip(groups, keep) if k]

    def _replay_stats(self, groups: list[list[ImaginedEpisode]], rewards: np.ndarray, keep: np.ndarray) -> dict:
        """Tell the start replay what each complete group said; the share of informative groups
        among the replayed and the fresh draws, and the open pool's size."""
        drawn = [self._drawn.get(g[0].group_id, (-1, False)) for g in groups]       # (start index, replayed)
        for (index, _), r in zip(drawn, rewards):
            if index >= 0:
                self.replay.see(index, r)
        replayed = np.array([r for _, r in drawn], bool)
        share = lambda mask: float(keep[mask].mean()) if mask.any() else None  # noqa: E731
        return {"replayed_groups": int(replayed.sum()), "informative_replayed": share(replayed),
                "informative_fresh": share(~replayed), "open_starts": len(self.replay.scores)}

    def _sync_stats(self) -> dict:
        s = self._sync
        return {"replicas": s.replicas, "replicas_at_version": s.at_version, "restarted_replicas": len(s.restarted),
                "republished": len(s.republished), "unreachable_replicas": len(s.unreachable),
                "republished_to": s.republished}


def _rollout_stats(episodes: list[ImaginedEpisode], rewards: np.ndarray, wall: float) -> dict:
    """What the collected episodes say, whether or not they lead to an update."""
    steps = sum(len(e.actions) for e in episodes)
    return {"reward_mean": float(rewards.mean()) if rewards.size else 0.0,
            "reward_std": float(rewards.std()) if rewards.size else 0.0,
            "episode_length": float(np.mean([len(e.actions) for e in episodes])) if episodes else 0.0,
            "done_fraction": float(np.mean([e.status == "done" for e in episodes])) if episodes else 0.0,
            "imagined_steps_per_s": steps / max(wall, 1e-9), "first_act_ms": _first_act_ms(episodes),
            "collect_s": wall}


def _first_act_ms(episodes: list[ImaginedEpisode]) -> float:
    """Median client-side latency of each episode's first Act: the closest stored figure to the
    time a job waits for service (the batchers' own queue times are not kept in episodes)."""
    firsts = [e.timings_ms.get("act", [0.0])[0] for e in episodes if e.timings_ms.get("act")]
    return float(np.median(firsts)) if firsts else 0.0


def starting_policy(config: RLConfig, out: pathlib.Path, resumed: bool):
    """The run's own policy: its last checkpoint when resuming, else --policy with the Laplace
    scale restarted at --exploration-scale; with --no-learn-scale its scale head frozen."""
    from worldenv import checkpoints, models
    source = out / "policy" if resumed else checkpoints.model(config.policy, "policy")
    if source is None:
        raise FileNotFoundError("policy: no shipped checkpoint in this install; give --policy DIR")
    policy = models.load(source, role="policy")
    if not resumed:
        laplace.restart_scale(policy, config.exploration_scale)
    if not config.learn_scale:
        laplace.freeze_scale(policy, "--learn-scale")
    if config.ratio == "dimension" and not hasattr(policy, "log_prob_terms"):
        raise ValueError(f"ratio: the {policy.spec.arch} policy has no per-action log-probs; use --ratio chunk")
    return policy


def value_model(config: RLConfig):
    """The value checkpoint of short imagination, or None (plain LOOP)."""
    if config.value is None:
        return None
    from worldenv import models
    return models.load(config.value, role="reflector")


def start_bank(config: RLConfig) -> StartBank:
    from worldenv import checkpoints
    path = checkpoints.start_bank(config.starts)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"starts: no start-state bank at {config.starts}")
    return StartBank.load(path)


def publisher_of(config: RLConfig, client) -> Publisher:
    store = PolicyWeightsStore(client, config.prefix) if config.weights_store else None
    return Publisher(config.policy_addr, store, config.auth_token, config.policy_timeout_s)


def run(config: RLConfig) -> dict:
    """`worldenv train rl`: every iteration of `config` (resuming a run in config.out); raises
    progress.NoProgress after --max-hopeless iterations in a row with no usable group."""
    import redis
    import tqdm

    from worldenv.rl import curves
    out = pathlib.Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    resumed = (out / "trainer_state.pt").is_file()
    policy, bank = starting_policy(config, out, resumed), start_bank(config)
    client = redis.Redis.from_url(config.redis_url)
    publisher = publisher_of(config, client)
    try:
        trainer = Trainer(config, policy, publisher, RolloutQueue(client, config.prefix),
                          EpisodeStore(client, config.prefix), bank, value_model(config))
        first = load_state(out, trainer)
        save_settings(out, config, first)
        if trainer.mean_path.start is None:      # a fresh run, or a state saved before the path was kept
            trainer.mean_path.begin(trainer.policy)
        publisher.publish(weights_bytes(trainer.policy), f"start of {out.name}")   # the served policy = ours
        if config.snapshot_every and not resumed:
            trainer.policy.save_pretrained(snapshot_dir(out, 0))
        run_id, rows, watch = config.run_id or out.name, [], progress.Watch(config.max_hopeless)
        if dropped := trainer.queue.drop_undelivered(earlier_attempts(run_id, trainer.attempt)):
            log.info("dropped %d queued jobs of this run's earlier attempts (a killed trainer's)", dropped)
        for it in tqdm.tqdm(range(first, config.iterations), initial=first, total=config.iterations, desc="rl"):
            row = watch.see(trainer.iteration(it, run_id))
            if row.get("no_update_cause") in progress.HOPELESS:
                log.warning("iteration %d: no usable group (%s) %s", it, row["no_update_cause"], row["drop_reason"])
            rows = log_row(out, row)
            log_groups(out, it, trainer.groups_seen)
            runs.RunLog(client, config.prefix).put(run_id, row)   # the debug API's run page reads it
            curves.plot(rows, out / "curves.png")
            save_state(out, trainer, it)
            if config.snapshot_every and (it + 1) % config.snapshot_every == 0:
                trainer.policy.save_pretrained(snapshot_dir(out, it + 1))   # after it + 1 iterations
            watch.check(row)
    finally:
        publisher.close()
    return {"iterations": config.iterations, "resumed_at": first, "version": publisher.version, "rows": rows}
