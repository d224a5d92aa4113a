"""The LOOP trainer: RL post-training of the policy in imagination, over the Redis queue and
the three services. One iteration reads top to bottom:

    collect     G groups of N jobs (one group per start state drawn from the bank) through the
                queue; rollout workers imagine them against the Policy, WorldModel and Reflector
                services and store the episodes (actions, the log-probs they were sampled with,
                the reward = p(done) at termination)
    advantages  leave-one-out within each group, broadcast over each trajectory's steps
    update      PPO-clip epochs over minibatches of timesteps, on the trainer's own copy of
                the policy (the world model and the reflector stay frozen)
    publish     the new weights to the Policy service (LoadWeights, version + 1)

Every iteration appends a row to <out>/metrics.jsonl and redraws <out>/curves.png; the policy,
the optimiser and the iteration are checkpointed, and running the command again resumes.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np
import torch
from safetensors.torch import save as save_bytes

from worldenv.client.clients import PolicyClient
from worldenv.data import runs
from worldenv.data.episodes import EpisodeStore, ImaginedEpisode
from worldenv.data.start_bank import StartBank
from worldenv.models.roles import Observations
from worldenv.rl import loop_ppo, rollout, value
from worldenv.rl.queue import RolloutQueue
from worldenv.rl.settings import RLConfig


@dataclasses.dataclass(frozen=True)
class Batch:
    """Timesteps of one iteration's fresh, complete groups, flattened."""

    frames: np.ndarray          # (S, H, W, 3) uint8
    proprio: np.ndarray         # (S, P) float32
    instructions: list[str]     # S
    actions: np.ndarray         # (S, K, A) float32, as sampled
    old_log_probs: np.ndarray   # (S,) float32
    advantages: np.ndarray      # (S,) float32

    def take(self, idx: np.ndarray) -> "Batch":
        return Batch(self.frames[idx], self.proprio[idx], [self.instructions[i] for i in idx], self.actions[idx],
                     self.old_log_probs[idx], self.advantages[idx])


def fresh_groups(episodes: list[ImaginedEpisode], version: int, max_staleness: int,
                 group_size: int) -> tuple[list[list[ImaginedEpisode]], dict[str, int]]:
    """Complete groups whose every episode ran on a policy at most `max_staleness` versions old;
    the rest are dropped and counted (stale episodes, failed episodes, groups lost)."""
    groups: dict[str, list[ImaginedEpisode]] = {}
    for e in episodes:
        groups.setdefault(e.group_id, []).append(e)
    kept, dropped = [], {"stale_episodes": 0, "failed_episodes": 0, "dropped_groups": 0}
    for members in groups.values():
        stale = sum(e.policy_version < version - max_staleness for e in members)
        failed = sum(e.status == "failed" or not len(e.actions) for e in members)
        dropped["stale_episodes"] += stale
        dropped["failed_episodes"] += failed
        if stale or failed or len(members) != group_size:
            dropped["dropped_groups"] += 1
        else:
            kept.append(sorted(members, key=lambda e: e.id))
    return kept, dropped


def flatten(groups: list[list[ImaginedEpisode]]) -> tuple[Batch, np.ndarray]:
    """Timesteps with their broadcast leave-one-out advantages; also the rewards (G, N)."""
    rewards = torch.tensor([[e.reward for e in g] for g in groups], dtype=torch.float32)       # (G, N)
    adv = loop_ppo.leave_one_out(rewards).flatten()                                            # (G*N,)
    episodes = [e for g in groups for e in g]
    lengths = torch.tensor([len(e.actions) for e in episodes])
    steps = loop_ppo.broadcast(adv, lengths).numpy()                                           # (S,)
    batch = Batch(np.concatenate([e.frames[:-1] for e in episodes]), np.concatenate([e.proprio[:-1] for e in episodes]),
                  [e.instruction for e in episodes for _ in range(len(e.actions))],
                  np.concatenate([e.actions for e in episodes]), np.concatenate([e.log_probs for e in episodes]),
                  steps.astype(np.float32))
    return batch, rewards.numpy()


def update(policy, optimizer, batch: Batch, epochs: int, minibatch: int, clip: float, grad_clip: float,
           rng: np.random.Generator) -> dict[str, float]:
    """PPO-clip epochs over shuffled minibatches of timesteps; mean stats."""
    stats: dict[str, list[float]] = {"loss": [], "clip_fraction": [], "approx_kl": [], "ratio_mean": []}
    policy.train()
    for _ in range(epochs):
        order = rng.permutation(len(batch.actions))
        for i in range(0, len(order), minibatch):
            mb = batch.take(order[i:i + minibatch])
            new = policy.log_prob(Observations(mb.frames, mb.proprio, mb.instructions), torch.from_numpy(mb.actions))
            loss, s = loop_ppo.ppo_loss(new, torch.from_numpy(mb.old_log_probs).to(new.device),
                                        torch.from_numpy(mb.advantages).to(new.device), clip)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], grad_clip)
            optimizer.step()
            for k, v in {"loss": loss, **s}.items():
                stats[k].append(float(v.detach()))
    policy.eval()
    return {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}


def publish(client: PolicyClient, policy, note: str) -> int:
    """Send the policy's trainable weights to the Policy service; returns the new version.

    A paper-scale policy publishes only what RL changes (LoRA adapters and heads), not its
    frozen backbone: megabytes per version instead of 14 GB."""
    state = {k: v.detach().cpu().contiguous() for k, v in policy.publishable_state().items()}
    return client.load_weights(save_bytes(state), note=note)


def param_groups(policy, lr: float, head_lr: float | None) -> list[dict]:
    """Adam's parameter groups: one at `lr`, or, for a policy that names its groups (LoRA
    "adapter" and "heads"), the heads at `head_lr`."""
    named = getattr(policy, "trainable_groups", None)
    if head_lr is None or named is None:
        return [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": lr}]
    groups = named()
    return [{"params": params, "lr": head_lr if name == "heads" else lr, "name": name}
            for name, params in groups.items() if params]


class Trainer:
    """Holds the connections, the policy copy and the optimiser; `iteration` runs one."""

    def __init__(self, config: RLConfig, policy, client: PolicyClient, queue: RolloutQueue, store: EpisodeStore, bank: StartBank,
                 value_model=None):
        self.config, self.policy, self.client, self.queue, self.store, self.bank = config, policy, client, queue, store, bank
        self.value_model = value_model      # short imagination: scores episodes cut at the horizon (rl/value.py)
        self.optimizer = torch.optim.Adam(param_groups(policy, config.lr, config.head_lr), lr=config.lr)
        self.rng = np.random.default_rng(config.seed)

    def collect(self, it: int, run_id: str) -> tuple[list[ImaginedEpisode], float]:
        c = self.config
        starts = self.bank.subset(self.rng.choice(len(self.bank), c.groups, replace=len(self.bank) < c.groups))
        jobs = rollout.make_jobs(starts, c.groups * c.group_size, f"{run_id}-it{it:04d}", c.horizon, c.group_size,
                                 seed=c.seed * 10_007 + it + 1, eta=c.eta)
        started = time.perf_counter()
        report = rollout.run(self.queue, self.store, jobs, c.timeout)
        episodes = [e for e in (self.store.get(i) for i in report.episode_ids) if e is not None]
        if self.value_model is not None:
            episodes = value.bootstrap(self.value_model, episodes)
        return episodes, time.perf_counter() - started

    def iteration(self, it: int, run_id: str, version: int) -> tuple[dict, int]:
        c = self.config
        episodes, wall = self.collect(it, run_id)                                        # collect
        groups, dropped = fresh_groups(episodes, version, c.max_staleness, c.group_size)
        all_rewards = np.array([[e.reward for e in g] for g in groups], np.float32).reshape(-1, c.group_size)
        keep = loop_ppo.informative(torch.from_numpy(all_rewards), c.min_reward_spread).numpy()
        row = {"iteration": it, **_rollout_stats(episodes, all_rewards, wall), "zero_advantage_groups":
               float(1 - keep.mean()) if len(keep) else 1.0, **dropped}
        if not keep.any():
            return {**row, "version": version, "skipped": True}, version
        batch, _ = flatten([g for g, k in zip(groups, keep) if k])                       # advantages
        stats = update(self.policy, self.optimizer, batch, c.epochs, c.minibatch, c.clip, c.grad_clip, self.rng)
        version = publish(self.client, self.policy, f"{run_id} iteration {it}")         # publish
        return {**row, "version": version, "timesteps": len(batch.actions), **stats}, version


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


def save_state(out: pathlib.Path, trainer: Trainer, it: int, version: int) -> None:
    """The policy (in the checkpoint format, servable) and the resumable state, atomically."""
    trainer.policy.save_pretrained(out / "policy")
    payload = {"iteration": it, "version": version, "optimizer": trainer.optimizer.state_dict(),
               "rng": trainer.rng.bit_generator.state}
    tmp = out / "trainer_state.pt.tmp"
    torch.save(payload, tmp)
    tmp.replace(out / "trainer_state.pt")


def load_state(out: pathlib.Path, trainer: Trainer) -> int:
    """Restore the optimiser and the RNG; returns the next iteration (0 if there is no state)."""
    path = out / "trainer_state.pt"
    if not path.is_file():
        return 0
    payload = torch.load(path, weights_only=False)
    try:
        trainer.optimizer.load_state_dict(payload["optimizer"])
    except ValueError as exc:  # other parameter groups: --head-lr given or dropped since the run started
        raise ValueError(f"head_lr: {path} was saved with {len(payload['optimizer']['param_groups'])} optimiser "
                         f"group(s), this run has {len(trainer.optimizer.param_groups)}; resume with the "
                         f"--head-lr the run started with ({exc})") from None
    trainer.rng.bit_generator.state = payload["rng"]
    return int(payload["iteration"]) + 1


def snapshot_dir(out: pathlib.Path, iterations: int) -> pathlib.Path:
    """Where the policy after `iterations` RL iterations is kept (--snapshot-every; 0 = the start)."""
    return out / "snapshots" / f"iteration{iterations:04d}"


def log_row(out: pathlib.Path, row: dict) -> list[dict]:
    """Append `row` to metrics.jsonl (dropping rows of iterations at or after it: a resumed run
    continues the same curve); returns every row."""
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    rows = [r for r in rows if r["iteration"] < row["iteration"]] + [row]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def starting_policy(config: RLConfig, out: pathlib.Path, resumed: bool):
    """The run's own policy: its last checkpoint when resuming, else --policy with the Laplace
    scale restarted at --exploration-scale."""
    from worldenv import checkpoints, models
    source = out / "policy" if resumed else checkpoints.model(config.policy, "policy")
    if source is None:
        raise FileNotFoundError("policy: no shipped checkpoint in this install; give --policy DIR")
    policy = models.load(source, role="policy")
    if not resumed and config.exploration_scale is not None:
        if not hasattr(policy, "reset_scale"):
            raise ValueError(f"exploration_scale: the {policy.spec.arch} policy has no reset_scale; give none")
        policy.reset_scale(config.exploration_scale)
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


def run(config: RLConfig) -> dict:
    """`worldenv train rl`: every iteration of `config` (resuming a run in config.out)."""
    import redis
    import tqdm

    from worldenv.rl import curves
    out = pathlib.Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    resumed = (out / "trainer_state.pt").is_file()
    policy, bank = starting_policy(config, out, resumed), start_bank(config)
    client = redis.Redis.from_url(config.redis_url)
    with PolicyClient(config.policy_addr, auth_token=config.auth_token) as policy_client:
        trainer = Trainer(config, policy, policy_client, RolloutQueue(client, config.prefix),
                          EpisodeStore(client, config.prefix), bank, value_model(config))
        first = load_state(out, trainer)
        version = publish(policy_client, trainer.policy, f"start of {out.name}")  # the served policy = ours
        if config.snapshot_every and not resumed:
            trainer.policy.save_pretrained(snapshot_dir(out, 0))
        run_id, rows = config.run_id or out.name, []
        for it in tqdm.tqdm(range(first, config.iterations), initial=first, total=config.iterations, desc="rl"):
            row, version = trainer.iteration(it, run_id, version)
            rows = log_row(out, row)
            runs.RunLog(client, config.prefix).put(run_id, row)   # the debug API's run page reads it
            curves.plot(rows, out / "curves.png")
            save_state(out, trainer, it, version)
            if config.snapshot_every and (it + 1) % config.snapshot_every == 0:
                trainer.policy.save_pretrained(snapshot_dir(out, it + 1))   # after it + 1 iterations
    return {"iterations": config.iterations, "resumed_at": first, "version": version, "rows": rows}
