"""`worldenv signal`: how much of one RL update is signal, measured in imagination only.

LOOP's update direction is the policy gradient of its groups, g = sum_k g_k, where a group's
g_k = sum_i A_i h_i: its rollouts' leave-one-out advantages A_i times their scores h_i (the
gradient of the log-probs of the actions each rollout sampled, summed over its chunks). The g_k
are independent draws around the expected gradient; a sum of B of them keeps the signal and
shrinks the noise as 1 / B. From the groups of one batch of imagined rollouts, sampled as
`train rl` explores (the policy's scale restarted at each --exploration-scales value), this
measures per parameter set (every trainable weight, and the mean's alone):

- signal: ||E g_k||^2, unbiased, from the pairs of different groups,
  sum_{k != l} <g_k, g_l> / (K (K - 1)), with a bootstrap interval over groups;
- noise: E ||g_k - E g_k||^2, the rest of a group's mean squared norm;
- snr = signal / noise per informative group, and from it how well two independent updates of B
  informative groups agree, cosine B snr / (1 + B snr), and the groups needed for cosine 0.5;
- the same with each group's rewards shuffled among its rollouts (what `train rl
  --shuffle-rewards` trains on): its signal is zero in expectation, so its figures are noise alone;
- a direct figure, no model of it: the cosine between the summed gradients of two random halves
  of the groups, over many splits, true rewards against shuffled;
- all of it per part of the gradient, from the log-probs of the translation, rotation and gripper
  actions alone (they sum to the whole), and per way of exploring (--noise: independent noise
  per action, or one offset per chunk);
- the figures of the whole gradient again for the groups whose start's mean episode ends done
  and for those whose mean fails: noise that breaks a success, against noise that finds one;
- all of it for two rewards on the same rollouts: the trainer's, p(done) at termination, and the
  imagined outcome alone (1 if done, else 0), under which a group whose rollouts all ended alike
  but with p(done) 0.91 to 1.00 carries no advantage (under p(done) its spread can pass
  --min-reward-spread, and its advantages are the reflector's confidence).

All at the policy's starting weights: the first update's direction (PPO's first step is this
gradient, whatever its ratio, since every ratio is 1 there).
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from worldenv.config import Settings, comma_list, confirm_field, grasp_gate_field
from worldenv.measure.objective import scales_list, write_out
from worldenv.rl.settings import REWARDS   # the trainer's reward, p(done) at termination; the imagined outcome


# where a sampled rollout samples, and how the printout says it: every chunk, one chunk per group
# (drawn among its mean episode's), or that chunk and every later one
EXPLORES = {"every": "every chunk", "one": "one chunk", "tail": "one chunk and every later one"}


class SignalConfig(Settings):
    """Signal and noise of LOOP's policy gradient on one batch of imagined groups."""

    policy: str = Field("shipped", description="policy checkpoint directory ('shipped', 'shipped-rl' or a path)")
    starts: str = Field("shipped", description="start-state bank (.npz); 'shipped' = worldenv's keyframes")
    world_model: str = Field("shipped", description="world-model checkpoint directory; 'shipped' = worldenv's")
    reflector: str = Field("shipped", description="reflector checkpoint directory; 'shipped' = worldenv's")
    groups: int = Field(64, ge=2, le=4096, description="groups of rollouts: groups / --per-start start states "
                        "drawn (uniformly, without replacement), --per-start groups each")
    per_start: int = Field(1, ge=1, le=8, description="independent groups per start state; 2 or more also measure "
                           "the signal within a start (pairs of groups from the same start), against the signal "
                           "across starts")
    group_size: int = Field(8, ge=2, le=64, description="N, rollouts per start state (the leave-one-out group)")
    horizon: int = Field(30, ge=1, description="max action chunks per imagined episode (RL's)")
    eta: float = Field(0.0, ge=0, lt=1, description="done threshold on p(done); 0 = the reflector's default")
    grasp_gate: float = grasp_gate_field()
    confirm: int = confirm_field()
    exploration_scales: str = Field("0.02", description="comma-separated Laplace scales (normalised action units) "
                                    "to restart the policy's scale at, as `train rl --exploration-scale` does; "
                                    "one batch of groups each")
    noise: str = Field("independent", description="how the sampled actions explore, comma-separated to measure "
                       "several on the same starts: 'independent' Laplace noise per action (the checkpoint's as "
                       "shipped), 'chunk' one draw per action dimension shared by the chunk's steps")
    explore: str = Field("every", description="where a sampled rollout samples, comma-separated to measure "
                         "several on the same starts: 'every' chunk (as `train rl` explores), or 'one': each group "
                         "samples at one chunk only, drawn uniformly among the chunks its start's mean episode ran, "
                         "and acts with its mean everywhere else, so its rollouts share the state up to that chunk "
                         "and their outcomes differ by that chunk's draw alone (the score counts that chunk only), "
                         "or 'tail': the same drawn chunk, sampled there and at every chunk after it (the shared "
                         "prefix of 'one', the noise of several chunks adding up as with 'every')")
    min_reward_spread: float = Field(0.05, ge=0, description="groups whose rewards differ by at most this are left "
                                     "out, as `train rl` leaves them out of its update")
    update_groups: int = Field(32, ge=1, description="groups per update to report the agreement of two updates "
                               "for (`train rl --groups`); their informative share is the one measured here")
    draw_seed: int = Field(0, ge=0, description="seed of the draw of start states")
    seed: int = Field(1, ge=1, description="seed of the sampled actions (per episode) and of the shuffles")
    shuffles: int = Field(4, ge=1, le=64, description="shuffles of each group's rewards for the control")
    splits: int = Field(200, ge=1, le=10_000, description="random halvings of the groups for the split-half cosine")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples of the groups for the signal's "
                           "interval; 0 = none")
    batch: int = Field(16, ge=1, le=256, description="imagined episodes run as one batch")
    out: str | None = Field(None, description="JSON file of the figures and every group's rewards; none = print only")

    @field_validator("exploration_scales")
    @classmethod
    def _scales(cls, value: str) -> str:
        if not scales_list(value):
            raise ValueError("name at least one scale")
        return value

    @model_validator(mode="after")
    def _whole_starts(self) -> "SignalConfig":
        if self.groups % self.per_start:
            raise ValueError(f"groups: {self.groups} is not a multiple of --per-start {self.per_start}")
        return self

    @field_validator("explore")
    @classmethod
    def _explores(cls, value: str) -> str:
        return names_among(value, tuple(EXPLORES))

    @field_validator("noise")
    @classmethod
    def _noises(cls, value: str) -> str:
        from worldenv.models.laplace import NOISES
        return names_among(value, NOISES)


def names_among(value: str, allowed: tuple[str, ...]) -> str:
    """A comma-separated list of names from `allowed`, cleaned; else a ValueError naming them."""
    names = comma_list(value)
    if not names or any(n not in allowed for n in names):
        raise ValueError(f"expected comma-separated names among {', '.join(allowed)}, got {value!r}")
    return ",".join(names)


def signal_and_noise(gram: np.ndarray) -> dict[str, float]:
    """From the Gram matrix (K, K) of K groups' gradients: signal ||E g||^2 (unbiased: the mean
    of <g_k, g_l> over k != l), noise E||g - E g||^2 (the mean squared norm less the signal),
    and snr = signal / noise per group. K < 2 gives nothing to pair: NaNs."""
    k = len(gram)
    if k < 2:
        return {"groups": k, "signal": float("nan"), "noise": float("nan"), "snr": float("nan")}
    diagonal = float(np.trace(gram))
    signal = (float(gram.sum()) - diagonal) / (k * (k - 1))
    noise = diagonal / k - signal
    return {"groups": k, "signal": signal, "noise": noise, "snr": signal / noise if noise > 0 else float("nan")}


def bootstrap_signal(gram: np.ndarray, resamples: int, rng: np.random.Generator) -> list[float]:
    """A 95 % percentile interval of `signal_and_noise`'s signal over groups drawn with
    replacement; a group drawn twice is not paired with itself."""
    k = len(gram)
    if k < 2 or resamples < 1:
        return [float("nan"), float("nan")]
    diag = np.diag(gram)
    out = []
    for _ in range(resamples):
        c = np.bincount(rng.integers(0, k, k), minlength=k).astype(np.float64)
        pairs = c.sum() ** 2 - (c ** 2).sum()
        if pairs <= 0:
            continue
        out.append((c @ gram @ c - (c ** 2 * diag).sum()) / pairs)
    return [float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))] if out else [float("nan")] * 2


def split_half_cosines(vectors: np.ndarray, splits: int, rng: np.random.Generator) -> np.ndarray:
    """Cosines between the sums of two random halves of the rows of `vectors` (K, D), `splits` times."""
    k = len(vectors)
    if k < 2:
        return np.full(0, np.nan)
    out = []
    for _ in range(splits):
        order = rng.permutation(k)
        a, b = vectors[order[:k // 2]].sum(0), vectors[order[k // 2:2 * (k // 2)]].sum(0)
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        out.append(float(a @ b) / norm if norm > 0 else 0.0)
    return np.array(out)


def agreement(snr: float, groups: float) -> float:
    """Expected cosine of two independent updates of `groups` groups each: B snr / (1 + B snr)
    (each sum is B E g plus noise of B times the per-group variance; the noises are independent)."""
    if not np.isfinite(snr) or groups <= 0:
        return float("nan")
    s = groups * max(snr, 0.0)
    return s / (1 + s)


def action_parts(action_dim: int) -> dict[str, list[int] | None]:
    """Which action dimensions each part of the gradient comes from: LIBERO's 7 (end-effector
    translation, rotation, gripper) each on its own; any other action space as one."""
    if action_dim == 7:
        return {"translation": [0, 1, 2], "rotation": [3, 4, 5], "gripper": [6]}
    return {"actions": None}


def episode_scores(policy, episode, parts: dict[str, list[int] | None]) -> dict[str, np.ndarray]:
    """Per part: h = d/dθ sum_t log π(a_t | s_t), over one imagined episode's sampled chunks
    (`explored`) and the part's action dimensions (None = all), flattened over the trainable
    parameters in their order (float32). The parts' h sum to the whole action's."""
    from worldenv.models.roles import Observations
    params = [p for p in policy.parameters() if p.requires_grad]
    obs = Observations(np.stack(episode.frames[:-1]), np.stack(episode.proprio[:-1]).astype(np.float32),
                       [episode.instruction] * len(episode.actions))
    actions = torch.from_numpy(np.stack(episode.actions).astype(np.float32))
    terms = policy.log_prob_terms(obs, actions)                                                   # (T, K, A)
    if episode.explored and not all(episode.explored):       # chunks played with the mean score nothing
        terms = terms[torch.as_tensor(np.asarray(episode.explored, bool))]
    out = {}
    for k, (name, dims) in enumerate(parts.items()):
        total = terms.sum() if dims is None else terms[..., dims].sum()
        grads = torch.autograd.grad(total, params, allow_unused=True, retain_graph=k < len(parts) - 1)
        out[name] = np.concatenate([(g if g is not None else torch.zeros_like(p)).detach().float().flatten().numpy()
                                    for g, p in zip(grads, params)])
    return out


def mean_mask(policy) -> np.ndarray:
    """Which entries of the flattened trainable parameters move the mean action (all but the
    Laplace scale head's)."""
    head = getattr(policy, "scale_head", None)
    skip = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    return np.concatenate([np.full(p.numel(), id(p) not in skip) for p in policy.parameters() if p.requires_grad])


def within_start(gram: np.ndarray, starts: np.ndarray, resamples: int, rng: np.random.Generator) -> dict:
    """The signal within a start: the mean of <g_k, g_l> over pairs of different groups from the
    same start (`starts` (K,) names each group's start), E_s ||E[g | s]||^2, with a 95 % bootstrap
    interval over the pairs. Against the signal over all pairs, ||E g||^2, it says whether the
    rollouts find a direction per start that the starts do not share."""
    k, l = np.triu_indices(len(starts), 1)
    same = starts[k] == starts[l]
    values = gram[k[same], l[same]]
    if not values.size:
        return {"pairs": 0, "signal": float("nan"), "signal_ci95": [float("nan")] * 2}
    boot = [values[rng.integers(0, values.size, values.size)].mean() for _ in range(resamples)]
    return {"pairs": int(values.size), "signal": float(values.mean()),
            "signal_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot
            else [float("nan")] * 2}


def figures(group_grads: np.ndarray, informative_share: float, config: SignalConfig, rng: np.random.Generator,
            starts: np.ndarray | None = None) -> dict:
    """signal_and_noise, its interval, the agreement of two updates and the split-half cosines
    of one set of group gradients (K, D); with each group's start (`starts`), the signal within a start."""
    gram = group_grads @ group_grads.T
    out = signal_and_noise(gram)
    if starts is not None and config.per_start > 1:
        out["within_start"] = within_start(gram, starts, config.bootstrap, rng)
        out["within_start"]["snr"] = out["within_start"]["signal"] / out["noise"] if out["noise"] > 0 else float("nan")
    out["signal_ci95"] = bootstrap_signal(gram, config.bootstrap, rng)
    per_update = config.update_groups * informative_share
    out["informative_per_update"] = per_update
    out["agreement_per_update"] = agreement(out["snr"], per_update)
    out["groups_for_half"] = float(1 / out["snr"]) if out["snr"] > 0 else float("inf")
    cos = split_half_cosines(group_grads, config.splits, rng)
    out["split_half_cosine"] = {"mean": float(cos.mean()) if cos.size else float("nan"),
                                "sd": float(cos.std()) if cos.size else float("nan")}
    return out


def group_gradients(policy, records: list[dict], rewards: dict[str, np.ndarray], keep: dict[str, np.ndarray],
                    shuffles: int, rng: np.random.Generator) -> dict:
    """Per reward kind and part of the gradient: the informative groups' gradients, in group
    order, with the true rewards ("true") and with each of the control's `shuffles` draws (0..S-1).
    `records` are the groups' rollouts side by side (N per group, `imagined.rollouts` with
    episodes); a group's episode scores are computed once for every kind and part."""
    from worldenv.rl import loop_ppo
    loo = lambda r: loop_ppo.leave_one_out(torch.from_numpy(r)).numpy().astype(np.float32)  # noqa: E731
    parts = action_parts(policy.config.action_dim)
    n = next(iter(rewards.values())).shape[1]
    grads = {kind: {part: {"true": [], **{s: [] for s in range(shuffles)}} for part in ("all", *parts)}
             for kind in rewards}
    policy.eval()
    for g in np.flatnonzero(np.logical_or.reduce(list(keep.values()))):
        scores = [episode_scores(policy, records[g * n + i]["episode"], parts) for i in range(n)]
        by_part = {part: np.stack([h[part] for h in scores]) for part in parts}                   # (N, D) each
        by_part = {"all": sum(by_part.values()), **by_part}
        for kind, r in rewards.items():
            if not keep[kind][g]:
                continue
            advantages = {"true": loo(r[g]), **{s: loo(rng.permutation(r[g])) for s in range(shuffles)}}
            for part, h in by_part.items():
                for label, adv in advantages.items():
                    grads[kind][part][label].append(adv @ h)
    return grads


def explored_chunks(lengths: list[int], rng: np.random.Generator) -> list[int]:
    """Per group, the one chunk its rollouts sample at: uniform among the `lengths[g]` chunks
    its start's mean episode ran (the chunks every rollout of the group reaches)."""
    return [int(rng.integers(max(1, n))) for n in lengths]


def explored_set(explore: str, at: int, horizon: int) -> set[int]:
    """The chunks a rollout samples at, given its group's drawn chunk `at`: that chunk alone
    ('one'), or it and every later one up to the horizon ('tail')."""
    if explore == "one":
        return {at}
    if explore == "tail":
        return set(range(at, horizon))
    raise ValueError(f"explore: no drawn chunk for {explore!r}")


def measure_scale(policy, world_model, reflector, bank, scale: float, config: SignalConfig,
                  explore: str = "every") -> dict:
    """One batch of groups at one exploration scale, with the policy's noise, sampling where
    `explore` says (EXPLORES): rewards, and figures for true and shuffled rewards,
    per reward kind and part of the gradient."""
    from worldenv.measure import imagined
    from worldenv.models import laplace
    from worldenv.rl import loop_ppo
    laplace.restart_scale(policy, scale, "--exploration-scales")
    n = config.group_size
    run = dict(horizon=config.horizon, eta=config.eta, batch=config.batch, grasp_gate=config.grasp_gate,
               confirm=config.confirm)
    at = per_episode = None
    mean = imagined.rollouts(policy, world_model, reflector, bank, deterministic=True, **run)   # each start's mean
    mean_done = np.array([r["done"] for r in mean], bool)
    if explore != "every":
        at = explored_chunks([r["chunks"] for r in mean], np.random.default_rng([config.seed, config.draw_seed, 1]))
        per_episode = [explored_set(explore, t, config.horizon) for t in at for _ in range(n)]
    records = imagined.rollouts(policy, world_model, reflector, bank.subset(np.repeat(np.arange(len(bank)), n)),
                                deterministic=False, seed=config.seed, episodes=True, explore=per_episode, **run)
    rewards = {"p_done": np.array([r["p_done"] for r in records], np.float64).reshape(len(bank), n),  # (G, N)
               "done": np.array([r["done"] for r in records], np.float64).reshape(len(bank), n)}
    keep = {kind: loop_ppo.informative(torch.from_numpy(r), config.min_reward_spread).numpy()
            for kind, r in rewards.items()}
    rng = np.random.default_rng([config.seed, int(round(scale * 1e6))])
    grads = group_gradients(policy, records, rewards, keep, config.shuffles, rng)
    out = {"scale": scale, "noise": policy.noise, "explore": explore, "explored_chunk": at,
           "mean_done": mean_done.tolist(),
           "groups": len(bank), "done_fraction": float(rewards["done"].mean()),
           "ids": list(bank.ids), "rewards": rewards["p_done"].round(4).tolist(), "informative": {},
           "informative_share": {}, "figures": {}}
    mask = mean_mask(policy)
    for kind in rewards:
        out["informative"][kind], out["informative_share"][kind] = int(keep[kind].sum()), float(keep[kind].mean())
        out["figures"] |= {f"{kind}/{key}": value for key, value in
                           kind_figures(grads[kind], keep[kind], mean_done, mask, config, rng).items()}
    return out


def kind_figures(grads: dict, keep: np.ndarray, mean_done: np.ndarray, mask: np.ndarray, config: SignalConfig,
                 rng: np.random.Generator) -> dict:
    """One reward kind's figures, true and shuffled ("<view>/true", "<view>/shuffled"): the whole
    gradient ("all"), the mean's entries ("mean"), each action part, and the whole gradient of
    the groups whose start's mean episode ends done ("mean_done") or fails ("mean_failed").
    `grads` are `group_gradients`' for the kind, `keep` (G,) its informative groups."""
    share, informative = float(keep.mean()), np.flatnonzero(keep)
    starts = informative // config.per_start                        # each informative group's start
    views = {"all": (grads["all"], slice(None), share, starts), "mean": (grads["all"], mask, share, starts),
             **{part: (vectors, slice(None), share, starts) for part, vectors in grads.items() if part != "all"}}
    for name, groups_of in (("mean_done", mean_done), ("mean_failed", ~mean_done)):
        which = groups_of[informative]
        sub = {label: [v for v, w in zip(vectors, which) if w] for label, vectors in grads["all"].items()}
        views[name] = (sub, slice(None), float(keep[groups_of].mean()) if groups_of.any() else 0.0, None)
    no_bootstrap = config.model_copy(update={"bootstrap": 0})
    stack = lambda vectors, cols: np.stack(vectors)[:, cols] if vectors else np.zeros((0, 1))  # noqa: E731
    out = {}
    for name, (vectors, cols, view_share, view_starts) in views.items():
        out[f"{name}/true"] = figures(stack(vectors["true"], cols), view_share, config, rng, view_starts)
        out[f"{name}/shuffled"] = control([figures(stack(vectors[s], cols), view_share, no_bootstrap, rng, view_starts)
                                           for s in range(config.shuffles)])
    return out


def control(draws: list[dict]) -> dict:
    """The shuffled control's figures over its draws: each one's mean, and the draws' signals
    (the spread the true signal is read against)."""
    mean = lambda key: float(np.mean([d[key] for d in draws]))  # noqa: E731
    extra = {}
    if "within_start" in draws[0]:
        extra["within_start"] = {"signal": float(np.mean([d["within_start"]["signal"] for d in draws])),
                                 "signals": [d["within_start"]["signal"] for d in draws],
                                 "snr": float(np.mean([d["within_start"]["snr"] for d in draws]))}
    return {**extra, "draws": len(draws), "signal": mean("signal"), "noise": mean("noise"), "snr": mean("snr"),
            "signals": [d["signal"] for d in draws], "agreement_per_update": mean("agreement_per_update"),
            "split_half_cosine": {"mean": float(np.mean([d["split_half_cosine"]["mean"] for d in draws])),
                                  "sd": float(np.mean([d["split_half_cosine"]["sd"] for d in draws]))}}


def snr_interval(figure: dict) -> str:
    """The signal's 95 % interval over the noise: the snr's, as printed."""
    lo, hi = figure["signal_ci95"]
    noise = figure["noise"]
    return f"{lo / noise:.3g} to {hi / noise:.3g}" if noise > 0 else "nan"


def line(result: dict) -> str:
    """One printed paragraph per scale: per reward kind, every trainable weight's figures, true
    rewards and shuffled, then each action part's snr (the mean's figures are in --out)."""
    f = result["figures"]
    text = [f"b={result['scale']:g}, noise {result['noise']}, sampling at {EXPLORES[result['explore']]}: "
            f"{result['groups']} groups, done fraction {result['done_fraction']:.2f}"]
    for kind in REWARDS:
        t, s = f[f"{kind}/all/true"], f[f"{kind}/all/shuffled"]
        lo, hi = t["signal_ci95"]
        parts = [k.split("/")[1] for k in f if k.startswith(f"{kind}/") and k.endswith("/true")
                 and k.split("/")[1] not in ("all", "mean", "mean_done", "mean_failed")]
        text.append(
            f"  reward {kind}: {result['informative'][kind]} informative groups "
            f"({100 * result['informative_share'][kind]:.0f} %)\n"
            f"    true: signal {t['signal']:.3g} (95 % {lo:.3g} to {hi:.3g}), noise {t['noise']:.3g}, snr {t['snr']:.3g} "
            f"per group; two updates of {t['informative_per_update']:.1f} informative groups agree at cosine "
            f"{t['agreement_per_update']:.2f}; cosine 0.5 needs {t['groups_for_half']:.0f}; split-half cosine "
            f"{t['split_half_cosine']['mean']:+.3f} (sd {t['split_half_cosine']['sd']:.3f})\n"
            f"    shuffled ({s['draws']} draws): signal {s['signal']:.3g} (draws {min(s['signals']):.3g} to "
            f"{max(s['signals']):.3g}), snr {s['snr']:.3g}; split-half cosine {s['split_half_cosine']['mean']:+.3f} "
            f"(sd {s['split_half_cosine']['sd']:.3f})\n"
            + (f"    within a start ({t['within_start']['pairs']} pairs of groups): signal "
               f"{t['within_start']['signal']:.3g} (95 % {t['within_start']['signal_ci95'][0]:.3g} to "
               f"{t['within_start']['signal_ci95'][1]:.3g}), snr {t['within_start']['snr']:.3g}; shuffled "
               f"{s['within_start']['signal']:.3g} (draws {min(s['within_start']['signals']):.3g} to "
               f"{max(s['within_start']['signals']):.3g})\n" if "within_start" in t else "")
            + "    by the start's mean episode: " + "; ".join(
                f"{label} {f[f'{kind}/{name}/true']['groups']} informative groups, snr "
                f"{f[f'{kind}/{name}/true']['snr']:.3g} (95 % {snr_interval(f[f'{kind}/{name}/true'])}), shuffled "
                f"{f[f'{kind}/{name}/shuffled']['snr']:.3g}"
                for name, label in (("mean_done", "done"), ("mean_failed", "failed"))) + "\n"
            + "    snr per part, true / shuffled: " + ", ".join(
                f"{p} {f[f'{kind}/{p}/true']['snr']:.3g} / {f[f'{kind}/{p}/shuffled']['snr']:.3g}" for p in parts))
    return "\n".join(text)


def measure(config: SignalConfig) -> dict:
    """Every scale's batch of groups, on one draw of start states."""
    from worldenv import models
    from worldenv.measure.align import load_checkpoint, resolve
    from worldenv.measure.imagined import draw_starts
    bank = draw_starts(config.starts, config.groups // config.per_start, config.draw_seed)
    bank = bank.subset(np.repeat(np.arange(len(bank)), config.per_start))   # a start's groups side by side
    policy = models.load(resolve(config.policy, "policy", "--policy"), role="policy")
    world_model = load_checkpoint(config.world_model, "world_model")
    reflector = load_checkpoint(config.reflector, "reflector")
    if not hasattr(policy, "noise"):
        raise ValueError(f"--policy: the {policy.spec.arch} policy samples no Laplace noise to measure")
    results = []
    for explore in config.explore.split(","):
        for noise in config.noise.split(","):
            policy.config = policy.config.model_copy(update={"noise": noise})
            for scale in scales_list(config.exploration_scales):
                results.append(measure_scale(policy, world_model, reflector, bank, scale, config, explore))
                print(line(results[-1]), flush=True)
    return {"config": config.model_dump(), "scales": results}


def run(config: SignalConfig) -> int:
    """Measure, print a paragraph per scale, write --out."""
    write_out(measure(config), config.out)
    return 0
