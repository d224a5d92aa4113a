"""Which done rule gives RL in imagination a reward that holds in LIBERO? The SFT policy's mean runs
from each recorded episode's first frame in imagination to the horizon (no verdict ends it), and
its action chunks are executed open loop in LIBERO from the same init state (stopping at LIBERO's
success). A rollout under a rule (p(done) > eta, the grasp gate, `confirm` chunks in a row)
executes the chunks up to its verdict, so one run gives every rule's imagined verdict and LIBERO's
outcome of that rollout's own actions (`grasp_gate.first_done`, `alignment.under_rule`). Per rule: agreement, precision (the
imagined successes whose actions succeed in LIBERO: RL's rewarded rollouts that are real), recall,
false-positive rate, per task. A measurement (reports/learning-signal.md, "The reward on its own
actions").

  .venv/bin/python scripts/reward_rules.py --data ALIGN_OUT/real --world-model DIR --save runs.npz
  .venv/bin/python scripts/reward_rules.py --load runs.npz            # the rules again, no new step
"""
from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import torch

from worldenv.measure import alignment
from worldenv.models import grasp_gate
from worldenv.rl import loop_ppo

ETAS, GATES, CONFIRMS = (0.5, 0.7, 0.9), (0.0, 0.0175, 0.025), (1, 2, 3)
RULES = list(itertools.product(ETAS, GATES, CONFIRMS))
SHIPPED = (0.5, 0.0175, 1)   # the rule RL has trained with (eta, gate, confirm)
MAX_FPR = 0.10               # the target for imagined false positives


def name(rule: tuple) -> str:
    eta, gate, confirm = rule
    return f"eta{eta}_gate{gate}_confirm{confirm}"


MIN_RECALL = 0.5             # the precision protocol: a reward that pays at least half the real successes


def choose(rates: dict, protocol: str = "agreement") -> tuple:
    """A rule from calibration rates (by `name`). agreement: the highest agreement among rules with a
    false-positive rate of at most MAX_FPR, then the higher precision; precision: the highest
    precision among rules with a recall of at least MIN_RECALL, then the higher agreement; then
    the smaller eta, gate and confirm."""
    def get(rule, key):
        value = rates[name(rule)]["overall"][key]
        return -1.0 if value is None else value
    if protocol == "agreement":
        allowed = [r for r in RULES if (rates[name(r)]["overall"]["false_positive_rate"] or 0.0) <= MAX_FPR]
        key = lambda r: (-get(r, "agreement"), -get(r, "precision"), *r)   # noqa: E731
    else:
        allowed = [r for r in RULES if get(r, "recall") >= MIN_RECALL]
        key = lambda r: (-get(r, "precision"), -get(r, "agreement"), *r)   # noqa: E731
    if not allowed:
        raise ValueError(f"no rule meets the {protocol} protocol's bound")
    return min(allowed, key=key)


def verdicts(runs: dict, rule: tuple, slack: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per episode under `rule`: (the imagined verdict, LIBERO's outcome of that rollout's chunks,
    `slack` more of its own allowed)."""
    out = [alignment.under_rule(grasp_gate.first_done(p, c, g, *rule), None if s < 0 else s, slack)
           for p, c, g, s in zip(runs["p_done"], runs["commands"], runs["gaps"], runs["success_chunk"])]
    return np.array([v[0] for v in out]), np.array([v[1] for v in out])


def first_per_task(episodes: list, n: int) -> list:
    """The first `n` episodes of each task, in order (all with n = 0)."""
    seen: dict[int, int] = {}
    kept = []
    for e in episodes:
        t = alignment.task_of(e)
        if not n or seen.get(t, 0) < n:
            kept.append(e)
            seen[t] = seen.get(t, 0) + 1
    return kept


def recorded_starts(args):
    """The first frames of --data's episodes (--per-task of each task): (start bank, ids, real outcomes, 0
    new simulator steps)."""
    from worldenv.data import chunks
    episodes = first_per_task(chunks.load([args.data]), args.per_task)
    return alignment.first_frames(episodes), [e.id for e in episodes], [bool(e.succeeded) for e in episodes], 0


def fresh_starts(args, executor):
    """--inits OFFSET:N: the first frames LIBERO renders at init states OFFSET..OFFSET+N-1 of each of
    --tasks (settled as every episode is), no real episode: (start bank, ids, None outcomes, the settle's
    simulator steps)."""
    from worldenv.data.start_bank import StartBank
    offset, n = (int(x) for x in args.inits.split(":"))
    ids, frames, proprio, texts = [], [], [], []
    for task in (int(t) for t in args.tasks.split(",")):
        env = executor.env(args.suite, task)
        for init in range(offset, offset + n):
            obs = env.reset(init)
            ids.append(f"{args.suite}/{task}/{init}/fresh")
            frames.append(obs.frame)
            proprio.append(obs.proprio)
            texts.append(env.instruction)
    bank = StartBank(frames=np.stack(frames), proprio=np.stack(proprio), instructions=texts, ids=ids,
                     meta={"source": f"reward_rules: LIBERO's first frames at init states {args.inits}"})
    settled = sum(executor.env(args.suite, int(i.split("/")[1])).config.settle_steps for i in ids)
    return bank, ids, [None] * len(ids), settled


def run(args) -> dict:
    """Imagine each episode to the horizon and execute its chunks in LIBERO: per episode the series
    a rule reads (p_done, gripper commands, imagined finger gap) and LIBERO's success chunk."""
    from worldenv.measure import imagined
    from worldenv.measure.align import load_checkpoint
    from worldenv.models import laplace
    from worldenv.sim import open_loop, suites
    policy, world = load_checkpoint(args.policy, "policy"), load_checkpoint(args.world_model, "world_model")
    reflector = load_checkpoint(args.reflector, "reflector")
    horizon = suites.MAX_EPISODE_STEPS[args.suite] // policy.spec.chunk_length
    sampled = args.samples > 0
    if sampled:
        laplace.restart_scale(policy, args.exploration_scale, "--exploration-scale")
    with open_loop.Executor() as executor:
        bank, ids, real, settled = fresh_starts(args, executor) if args.inits else recorded_starts(args)
        if sampled:   # each start K times, one group of rollouts as RL samples them
            bank = bank.subset(np.repeat(np.arange(len(bank)), args.samples))
            ids = [f"{i}#{k}" for i in ids for k in range(args.samples)]
            real = [r for r in real for _ in range(args.samples)]
        dreamt = [r["episode"] for r in imagined.rollouts(   # eta 1: every episode runs to the horizon
            policy, world, reflector, bank, horizon, 1.0, deterministic=not sampled, batch=args.batch,
            seed=args.seed if sampled else 0, episodes=True)]
        out = {"ids": ids, "real": real, "p_done": [], "commands": [], "gaps": [], "success_chunk": [],
               "sim_steps": settled, "world_model": args.world_model, "reflector": args.reflector, "policy": args.policy,
               "horizon": horizon}
        for episode_id, d in zip(ids, dreamt):
            actions = np.asarray(d.actions)
            executed = executor.run(episode_id, list(actions))
            out["p_done"].append(np.asarray(d.p_done, np.float32))
            out["commands"].append(actions[:, -1, -1].astype(np.float32))
            out["gaps"].append(grasp_gate.finger_gap(np.asarray(d.proprio)[1:]).astype(np.float32))
            out["success_chunk"].append(-1 if executed.success_chunk is None else executed.success_chunk)
            out["sim_steps"] += executed.steps
    return out


def save(path: str, runs: dict) -> None:
    series = {k: np.stack(runs[k]) for k in ("p_done", "commands", "gaps")}
    np.savez_compressed(path, **series, success_chunk=np.array(runs["success_chunk"]),
                        real=np.array([-1 if r is None else int(r) for r in runs["real"]]),
                        meta=json.dumps({k: runs[k] for k in ("ids", "sim_steps", "world_model", "reflector",
                                                               "policy", "horizon")}))


def load(path: str) -> dict:
    z = np.load(path)
    return {**json.loads(str(z["meta"])), **{k: list(z[k]) for k in ("p_done", "commands", "gaps")},
            "success_chunk": [int(c) for c in z["success_chunk"]],
            "real": [None if r < 0 else bool(r) for r in z["real"]]}


def pooled(runs: list[dict]) -> dict:
    """Saved runs of one world model on several sets as one (their episodes together)."""
    out = dict(runs[0])
    for key in ("ids", "real", "p_done", "commands", "gaps", "success_chunk"):
        out[key] = [x for r in runs for x in r[key]]
    out["sim_steps"] = sum(r["sim_steps"] for r in runs)
    return out


def rules_table(runs: dict, slack: int = 0) -> tuple[list[str], dict]:
    """The markdown rows of every rule, and their rates by rule name."""
    tasks = [int(i.split("/")[1]) for i in runs["ids"]]
    lines = ["| eta | grasp gate, cm | confirm | imagined successes | of them LIBERO succeeds on their actions | "
             "agreement | precision | recall | false-positive rate | per task: agreement / precision |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rates = {}
    for rule in RULES:
        eta, gate, confirm = rule
        imagined, libero = verdicts(runs, rule, slack)
        r = alignment.by_task(tasks, libero, imagined)
        o = r["overall"]
        rates[name(rule)] = r
        per_task = ", ".join(f"{t}: {alignment.pct(x['agreement'])} / {alignment.pct(x['precision'])}"
                             for t, x in r["tasks"].items())
        lines.append(f"| {eta} | {100 * gate:.2f} | {confirm} | {o['judged_successes']} | "
                     f"{o['judged_successes'] - o['false_positives']} | {alignment.pct(o['agreement'])} | "
                     f"{alignment.pct(o['precision'])} | {alignment.pct(o['recall'])} | "
                     f"{alignment.pct(o['false_positive_rate'])} | {per_task} |")
    return lines, rates


def loo(x: np.ndarray) -> np.ndarray:
    """Leave-one-out advantages of one group's rewards, as the trainer computes them (`loop_ppo.leave_one_out`)."""
    return loop_ppo.leave_one_out(torch.as_tensor(x, dtype=torch.float64)).numpy()


def group_signal(runs: dict, rule: tuple, slack: int = 0) -> dict:
    """Rollouts grouped by start (ids <start>#k): how many groups the imagined reward spreads (informative
    to LOOP) and LIBERO's outcomes spread; over the informative groups' rollouts, whether each imagined
    leave-one-out advantage has the sign of LIBERO's (right), the other (wrong), or LIBERO's is 0 (idle),
    and the correlation of the two."""
    imagined, libero = verdicts(runs, rule, slack)
    starts = [i.split("#")[0] for i in runs["ids"]]
    right = wrong = idle = informative = real_spread = 0
    a_all, b_all = [], []
    for start in dict.fromkeys(starts):
        k = np.array([s == start for s in starts])
        r, y = imagined[k].astype(float), libero[k].astype(float)
        real_spread += int(y.min() != y.max())
        if r.min() == r.max() or len(r) < 2:
            continue
        informative += 1
        a, b = loo(r), loo(y)
        right, wrong, idle = right + int((a * b > 0).sum()), wrong + int((a * b < 0).sum()), idle + int((b == 0).sum())
        a_all.append(a)
        b_all.append(b)
    a, b = (np.concatenate(a_all), np.concatenate(b_all)) if a_all else (np.zeros(0), np.zeros(0))
    corr = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())) if a.size and (b * b).sum() > 0 else None
    return {"groups": len(set(starts)), "informative": informative, "real_spread": real_spread, "right": right,
            "wrong": wrong, "idle": idle, "correlation": corr}


def groups_table(runs: dict, slack: int = 0) -> list[str]:
    """`group_signal` of every rule, as markdown rows."""
    lines = ["| eta | grasp gate, cm | confirm | groups | informative (imagined reward spread) | LIBERO outcomes "
             "spread | advantages: right sign / wrong / LIBERO's 0 | correlation |", "|---|---|---|---|---|---|---|---|"]
    for rule in RULES:
        g = group_signal(runs, rule, slack)
        corr = "n/a" if g["correlation"] is None else f"{g['correlation']:.2f}"
        lines.append(f"| {rule[0]} | {100 * rule[1]:.2f} | {rule[2]} | {g['groups']} | {g['informative']} | "
                     f"{g['real_spread']} | {g['right']} / {g['wrong']} / {g['idle']} | {corr} |")
    return lines


def picked(runs: dict, rule: tuple, slack: int = 0) -> list[str]:
    """The chosen rule against the shipped one on these runs: each one's agreement, precision and
    false positives, and McNemar on the per-episode agreement."""
    from worldenv.measure.paired import mcnemar
    agree = {}
    lines = [f"Chosen on the calibration set: {name(rule)}; the shipped rule: {name(SHIPPED)}."]
    for label, r in (("chosen", rule), ("shipped", SHIPPED)):
        imagined, libero = verdicts(runs, r, slack)
        o = alignment.outcome_rates(libero, imagined)
        agree[label] = imagined == libero
        lines.append(f"- {label}: agreement {alignment.pct(o['agreement'])}, precision {alignment.pct(o['precision'])} "
                     f"({o['judged_successes'] - o['false_positives']} of {o['judged_successes']}), recall "
                     f"{alignment.pct(o['recall'])}, false positives {o['false_positives']} of {o['n'] - o['real_successes']}")
    m = mcnemar(agree["shipped"], agree["chosen"])
    lines.append(f"- McNemar on agreement: only the shipped rule right {m['only_a']}, only the chosen {m['only_b']}, "
                 f"p = {m['p_value']:.3g}")
    return lines


SUMMARY_RULES = (SHIPPED, (0.5, 0.0, 3), (0.9, 0.0, 3))   # the shipped rule, three in a row, protocol 2's choice


def models_table(named: dict[str, dict], slack: int = 0) -> list[str]:
    """One row per world model's saved runs (the same episodes): how many imagined sequences succeed
    in LIBERO by the horizon, and per rule of SUMMARY_RULES imagined successes / real on their own
    actions, agreement, precision, false-positive rate."""
    head = " | ".join(f"{name(r)}: imagined / real, agreement, precision, false positives" for r in SUMMARY_RULES)
    lines = [f"| world model | imagined sequences that succeed in LIBERO | {head} |",
             "|---|---|" + "---|" * len(SUMMARY_RULES)]
    for label, runs in named.items():
        cells = []
        for rule in SUMMARY_RULES:
            imagined, libero = verdicts(runs, rule, slack)
            o = alignment.outcome_rates(libero, imagined)
            cells.append(f"{o['judged_successes']} / {o['judged_successes'] - o['false_positives']}, "
                         f"{alignment.pct(o['agreement'])}, {alignment.pct(o['precision'])}, "
                         f"{alignment.pct(o['false_positive_rate'])}")
        hit = sum(c >= 0 for c in runs["success_chunk"])
        lines.append(f"| {label} | {hit} of {len(runs['ids'])} | " + " | ".join(cells) + " |")
    return lines


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="recorded episodes (an align run's real/): their first frames and init states")
    parser.add_argument("--per-task", type=int, default=0, help="only the first this many episodes of each task")
    parser.add_argument("--inits", help="OFFSET:N instead of --data: LIBERO's first frames at init states "
                        "OFFSET..OFFSET+N-1 of each of --tasks (no real episode needed)")
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--tasks", default="0,1,2", help="with --inits")
    parser.add_argument("--samples", type=int, default=0, help="K > 0: K rollouts per start sampled as RL samples "
                        "them (groups), instead of one of the policy's mean; the table adds each rule's groups")
    parser.add_argument("--exploration-scale", type=float, default=0.02, help="with --samples: the Laplace scale "
                        "restarted at this value (normalised action units), as `train rl` explores")
    parser.add_argument("--seed", type=int, default=1, help="with --samples: the sampling seed")
    parser.add_argument("--slack", type=int, default=0, help="chunks after the verdict the rollout's actions may take "
                        "to succeed in LIBERO (0: its own chunks only; a diagnostic of verdicts that come early)")
    parser.add_argument("--world-model", default="shipped")
    parser.add_argument("--reflector", default="shipped")
    parser.add_argument("--policy", default="shipped")
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--save", help="keep the runs here (.npz)")
    parser.add_argument("--load", help="read saved runs instead of running (comma-separated: pooled)")
    parser.add_argument("--json", help="also write every rule's rates here")
    parser.add_argument("--models", help="NAME=runs.npz,...: saved runs of several world models on the same "
                        "episodes, one row each under the summary rules (no new step)")
    parser.add_argument("--protocol", choices=("agreement", "precision"), default="agreement",
                        help="how --pick chooses (`choose`)")
    parser.add_argument("--pick", help="a calibration run's --json: choose its rule by the protocol (`choose`) and "
                        "compare it here with the shipped rule, paired per episode")
    return parser.parse_args()


def header(runs: dict) -> str:
    """What the runs hold, in a sentence."""
    real = "no real episode" if None in runs["real"] else f"{sum(runs['real'])} real successes of the policy in LIBERO"
    hit = sum(s >= 0 for s in runs["success_chunk"])
    return (f"{len(runs['ids'])} episodes ({real}), world model {runs['world_model']}, reflector {runs['reflector']}; "
            f"imagined to {runs['horizon']} chunks, their actions executed in LIBERO: {hit} succeed within the horizon "
            f"({runs['sim_steps']} simulator steps, the settle included)\n")


def main() -> None:
    args = arguments()
    if args.models:
        named = dict(item.split("=", 1) for item in args.models.split(","))
        print("\n".join(models_table({k: load(v) for k, v in named.items()}, args.slack)))
        return
    runs = pooled([load(path) for path in args.load.split(",")]) if args.load else run(args)
    if args.save:
        save(args.save, runs)
    lines, rates = rules_table(runs, args.slack)
    print(header(runs))
    print("\n".join(lines))
    if any("#" in i for i in runs["ids"]):
        print("\nGroups of sampled rollouts per start (LOOP's view), each rule's imagined reward against LIBERO's "
              "outcome of the same rollouts:\n")
        print("\n".join(groups_table(runs, args.slack)))
    if args.pick:
        rule = choose(json.loads(open(args.pick).read())["rules"], args.protocol)
        print("\n" + "\n".join(picked(runs, rule, args.slack)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"episodes": len(runs["ids"]), "sim_steps": runs["sim_steps"], "rules": rates}, f, indent=1)


if __name__ == "__main__":
    main()
