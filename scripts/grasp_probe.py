"""Does the imagined scene know whether the gripper holds the object? A measurement, not a model
the services use (reports/learning-signal.md, "The grasp read off the frame").

  train:   a small CNN (frame -> p(held)) on the real frames after the settled chunks of closed
           gripper runs (held = LIBERO's fingers at least 1 cm apart, as `grasp_gate.HELD`), 20 %
           of the episodes held out; prints their balanced accuracy. `--replays`: also on the world
           model's replays of the same chunks, with the same labels (a classifier for imagined video).
  measure: on recorded real episodes (an `align` run's real/), the world model's replays of their
           actions and the policy's own closed loop from their first frames, run to the horizon
           without stopping: which verdict rule agrees with the real outcome, the reflector with
           the grasp gate on the imagined gap (as RL runs) or also asking the probe about the
           imagined frames of the gripper's last closed run.

  .venv/bin/python scripts/grasp_probe.py train --data DIR --out probe.pt [--replays shipped]
  .venv/bin/python scripts/grasp_probe.py measure --probe probe.pt --real ALIGN_OUT/real --policy shipped
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from worldenv.data import chunks
from worldenv.models import grasp_gate as gate
from worldenv.models.proprio_reader import ProprioReader
from worldenv.measure.align import load_checkpoint
from worldenv.measure.alignment import gripper_commands, outcome_rates, task_of


def settled_closed(commands: np.ndarray) -> list[int]:
    """Chunk indices that end a chunk commanded closed after one that was closed too."""
    return [t for t in range(1, len(commands)) if commands[t] > 0 and commands[t - 1] > 0]


def as_input(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def labelled(episodes, ids, replayed=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames after the settled closed chunks of episodes `ids` (and of their replays, when
    given), each labelled held (1) when LIBERO's fingers were at least `grasp_gate.HELD` apart."""
    x, y = [], []
    for i in ids:
        e = episodes[i]
        gaps = gate.finger_gap(e.proprio[1:])
        for t in settled_closed(gripper_commands(e)):
            for frames in [e.frames] + ([replayed[i]] if replayed is not None else []):
                x.append(frames[t + 1])
                y.append(float(gaps[t] >= gate.HELD))
    return as_input(np.stack(x)), torch.tensor(y)


def fit(x, y, steps: int, report) -> ProprioReader:
    """BCE with the positives weighted to balance, 64 frames a step, shifted up to 2 px;
    `report(net, step)` every 100 steps."""
    net = ProprioReader(x.shape[-1], 1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    pos_weight = (1 - y.mean()) / y.mean()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(y), (64,))
        dx, dy = (int(v) for v in torch.randint(-2, 3, (2,)))
        logits = net(torch.roll(x[idx], (dx, dy), (2, 3)))[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx], pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            report(net, step)
    return net


def train(args) -> None:
    torch.manual_seed(args.seed)
    episodes = chunks.load([args.data])
    held_out = sorted(np.random.default_rng(args.seed).permutation(len(episodes))[: len(episodes) // 5].tolist())
    replayed = None
    if args.replays:   # also the world model's replays of the real actions, labelled by the real fingers
        from worldenv.measure import reflector as reflector_measure
        replayed = [frames for frames, _ in reflector_measure.replay(load_checkpoint(args.replays, "world_model"), episodes)]
    x, y = labelled(episodes, [i for i in range(len(episodes)) if i not in held_out], replayed)
    tests = {"real frames": labelled(episodes, held_out)}
    if replayed is not None:
        xr, yr = labelled(episodes, held_out, replayed)
        tests["replayed frames"] = (xr[1::2], yr[1::2])
    print(f"train: {len(y)} frames ({int(y.sum())} held), held out: {len(tests['real frames'][1])} real frames "
          f"({int(tests['real frames'][1].sum())} held), {len(held_out)} of {len(episodes)} episodes", flush=True)

    def report(net, step):
        with torch.no_grad():
            scores = {name: gate.balanced_accuracy((net(xt)[:, 0] > 0).numpy(), yt.numpy() > 0)
                      for name, (xt, yt) in tests.items()}
        print(f"step {step}: held-out balanced accuracy, " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)

    net = fit(x, y, args.steps, report)
    torch.save({"state": net.state_dict(), "image_size": x.shape[-1]}, args.out)


def load_probe(path: str) -> ProprioReader:
    saved = torch.load(path)
    net = ProprioReader(saved["image_size"], 1)
    net.load_state_dict(saved["state"])
    return net.eval()


@torch.no_grad()
def p_held(net, frames: np.ndarray) -> np.ndarray:
    return torch.sigmoid(net(as_input(frames))[:, 0]).numpy()


def first_done(p_done, commands, gaps, held, eta: float, width: float) -> int | None:
    """`grasp_gate.first_done`; with `held` (each chunk's p(held) of its frame; None = not asked)
    the probe must also say held (median > 0.5) over the last closed run's settled chunks."""
    grip = gate.GraspGate(width) if width > 0 else None
    run: list[float] = []      # p(held) after each chunk of the last closed run
    for t, p in enumerate(p_done):
        if grip is not None:
            if held is not None and commands[t] > 0:
                run = run + [float(held[t])] if grip.closed else [float(held[t])]
            grip.update(float(commands[t]), float(gaps[t]))
        holds = grip is None or grip.holds()
        if holds and held is not None and grip is not None:
            holds = float(np.median(run[1:] or run)) > 0.5
        if p > eta and holds:
            return t
    return None


def replay_runs(net, episodes, world_model, width: float) -> tuple[dict, dict]:
    """The world model replaying the real actions: each closed run held or empty in LIBERO, told
    by the imagined gap and by the probe on the replayed and on the real frames (balanced
    accuracies); and the median p(held) the probe gives the runs that held, real and replayed."""
    from worldenv.measure import reflector as reflector_measure
    truth, said, scores = [], {"imagined_gap": [], "probe_on_replay": [], "probe_on_real": []}, {"real": [], "replay": []}
    for e, (frames, proprio) in zip(episodes, reflector_measure.replay(world_model, episodes)):
        real_gaps, gaps = gate.finger_gap(e.proprio[1:]), gate.finger_gap(proprio[1:])
        held, held_real = p_held(net, frames[1:]), p_held(net, e.frames[1:])
        for run in gate.closed_runs(gripper_commands(e)):
            truth.append(np.median(real_gaps[run]) >= gate.HELD)
            said["imagined_gap"].append(np.median(gaps[run]) >= width)
            said["probe_on_replay"].append(np.median(held[run]) > 0.5)
            said["probe_on_real"].append(np.median(held_real[run]) > 0.5)
            if truth[-1]:
                scores["real"].append(float(np.median(held_real[run])))
                scores["replay"].append(float(np.median(held[run])))
    runs = {"runs": len(truth), "held": int(np.sum(truth)),
            **{k: gate.balanced_accuracy(v, truth) for k, v in said.items()}}
    return runs, {k: float(np.median(v)) if v else None for k, v in scores.items()}


def closed_loop(net, policy, world_model, reflector, episodes, args) -> tuple[dict, list[dict], float | None]:
    """The policy's closed loop from the episodes' first frames to the horizon (never stopping),
    judged by the three rules on the same imagined episodes -> the rules' verdict lists, per-episode
    records, and the median p(held) over the closed runs that let a gated verdict through."""
    from worldenv.measure.reflector import first_observations
    from worldenv.models.imagination import Imagination, imagine
    from worldenv.sim import suites
    horizon = suites.MAX_EPISODE_STEPS[args.suite] // policy.spec.chunk_length
    starts = first_observations(world_model, episodes)
    deterministic = args.noise == "none"
    seeds = None if deterministic else [args.seed * 100_003 + i + 1 for i in range(len(episodes))]
    with Imagination(world_model, reflector) as imagination:
        imagined = imagine(policy, imagination, starts, horizon, 1.0, deterministic, seeds)   # p > 1: never stops
    rules, per_episode, scores = {"reflector": [], "gate": [], "gate_and_probe": []}, [], []
    for e, r in zip(episodes, imagined):
        commands = np.array([a[-1, -1] for a in r.actions])
        gaps, held = gate.finger_gap(np.stack(r.proprio[1:])), p_held(net, np.stack(r.frames[1:]))
        done = {"reflector": first_done(r.p_done, commands, gaps, None, args.eta, 0.0),
                "gate": first_done(r.p_done, commands, gaps, None, args.eta, args.width),
                "gate_and_probe": first_done(r.p_done, commands, gaps, held, args.eta, args.width)}
        for name, t in done.items():
            rules[name].append(t is not None)
        if done["gate"] is not None:   # the probe on the closed run that let the gated verdict through
            scores.append(float(np.median(held[gate.closed_runs(commands[: done["gate"] + 1])[-1]])))
        per_episode.append({"id": e.id, "task": task_of(e), "real": bool(e.succeeded), **done})
    return rules, per_episode, float(np.median(scores)) if scores else None


def measure(args) -> None:
    from worldenv.models import laplace
    net = load_probe(args.probe)
    episodes = chunks.load([args.real])
    policy = load_checkpoint(args.policy, "policy")
    laplace.restart_scale(policy, args.exploration_scale, "--exploration-scale")
    world_model, reflector = load_checkpoint(args.world_model, "world_model"), load_checkpoint(args.reflector, "reflector")
    real = np.array([e.succeeded for e in episodes])
    runs, scores = replay_runs(net, episodes, world_model, args.width)
    rules, per_episode, scores["closed_loop_gated_done"] = closed_loop(net, policy, world_model, reflector, episodes, args)
    out = {"episodes": len(episodes), "real_successes": int(real.sum()), "width": args.width, "eta": args.eta,
           "replay_runs": runs, "held_run_scores": scores, "per_episode": per_episode,
           "closed_loop": {name: outcome_rates(real, np.array(judged)) for name, judged in rules.items()}}
    for name, r in out["closed_loop"].items():
        print(f"closed loop, {name:<15} agreement {r['agreement']:.3f}  recall {r['recall']:.3f}  "
              f"false positives {r['false_positive_rate']:.3f}", flush=True)
    print("replays' closed runs:", json.dumps(runs), flush=True)
    print("median p(held) of held runs:", json.dumps(scores), flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2, default=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--replays", default=None, help="world-model checkpoint ('shipped' or a directory): also train "
                   "on its replays of the real actions, labelled with the real fingers")
    m = sub.add_parser("measure")
    m.add_argument("--probe", required=True)
    m.add_argument("--real", required=True, help="recorded real episodes (an align run's real/)")
    m.add_argument("--policy", default="shipped")
    m.add_argument("--world-model", default="shipped")
    m.add_argument("--reflector", default="shipped")
    m.add_argument("--suite", default="libero_object")
    m.add_argument("--noise", choices=["none", "laplace"], default="none")
    m.add_argument("--exploration-scale", type=float, default=None)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--eta", type=float, default=0.5)
    m.add_argument("--width", type=float, default=0.0175)
    m.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    (train if args.command == "train" else measure)(args)


if __name__ == "__main__":
    main()
