"""Where the closed loop loses a real success: the SFT policy's mean from each recorded episode's
first frame in imagination, chunk by chunk beside the real episode. Per episode: the chunk where
the gripper first closes (real / imagined), the fingers' gap over that closed run (a held object
keeps them apart), the eef's distance from the real path at that chunk, the highest p(done) and
the chunk the verdict comes (with the grasp gate and without); the gap the same world model gives
on a replay of the real actions; and, to tell the state from the actions, the gap its arm dynamics
predicts closing from the imagined state on the real closing chunks, and from the real state on
the imagined ones. A measurement
(reports/learning-signal.md, "An ensemble of arm dynamics").

  .venv/bin/python scripts/closed_loop_trace.py --data ALIGN_OUT/real --world-model DIR [--tasks 1] [--real-successes]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from worldenv.data import chunks
from worldenv.measure import alignment, reflector as reflector_measure
from worldenv.measure.align import load_checkpoint
from worldenv.models import grasp_gate
from worldenv.models.imagination import Imagination, imagine
from worldenv.models.proprio_dynamics import ArmState
from worldenv.models.roles import StartStates
from worldenv.sim import open_loop, suites


def first_grasp(commands: np.ndarray, gaps: np.ndarray) -> tuple[str, str]:
    """The first chunk commanded closed (LIBERO: > 0) and the fingers' mean gap, cm, over that closed
    run once settled (`grasp_gate.closed_runs`); ("-", "-") if the gripper never closes."""
    runs = grasp_gate.closed_runs(commands)
    if not runs:
        return "-", "-"
    return str(int(np.argmax(commands > 0))), f"{100 * gaps[runs[0]].mean():.2f}"


def swapped_gap(dynamics, proprio: np.ndarray, actions: np.ndarray, at: int, chunks: np.ndarray) -> str:
    """The fingers' gap, cm, the arm dynamics predicts after stepping from chunk `at` of one
    episode (its proprio (T + 1, P) and actions (T, K, A) give the state, the previous state and
    chunk) on `chunks` (n, K, A), another episode's closing chunks: the mean over all but the first
    (the fingers settle)."""
    if at < 1 or len(chunks) < 2:
        return "-"
    t = lambda x: torch.from_numpy(np.asarray(x, np.float32))[None]  # noqa: E731
    state, previous, before = ArmState.from_raw(t(proprio[at])), ArmState.from_raw(t(proprio[at - 1])), t(actions[at - 1])
    gaps = []
    with torch.no_grad():
        for chunk in chunks:
            state, previous, before = dynamics.step(state, t(np.clip(chunk, -1, 1)), previous, before), state, t(chunk)
            gaps.append(grasp_gate.finger_gap(state.raw().numpy())[0])
    return f"{100 * np.mean(gaps[1:]):.2f}"


def row(e, d, p: np.ndarray, replay_proprio: np.ndarray, world, args, executor) -> tuple[str, int]:
    """One episode's table row (real episode `e`, imagined episode `d`, the reflector's p(done) on the
    real video `p`, the replay's proprio) and the LIBERO steps it took (`--in-libero`: `executor`, a
    `sim.open_loop.Executor`, runs the imagined chunks)."""
    dream_proprio, dream_actions = np.array(d.proprio), np.array(d.actions)
    real_cmd, dream_cmd = alignment.gripper_commands(e), dream_actions[:, -1, -1]
    real_gap, dream_gap = grasp_gate.finger_gap(e.proprio[1:]), grasp_gate.finger_gap(dream_proprio[1:])
    (rc, rgap), (dc, dgap) = first_grasp(real_cmd, real_gap), first_grasp(dream_cmd, dream_gap)
    _, replay_gap = first_grasp(real_cmd, grasp_gate.finger_gap(np.asarray(replay_proprio)[1:]))
    off = "-" if dc == "-" or int(dc) + 1 >= len(e.proprio) else \
        f"{100 * np.linalg.norm(dream_proprio[int(dc) + 1, :3] - e.proprio[int(dc) + 1, :3]):.1f}"
    real_done = grasp_gate.first_done(p, real_cmd, real_gap, args.eta, args.grasp_gate)
    dp = np.array(d.p_done)
    gated = grasp_gate.first_done(dp, dream_cmd, dream_gap, args.eta, args.grasp_gate)
    plain = grasp_gate.first_done(dp, dream_cmd, dream_gap, args.eta, 0.0)
    swaps = "- / - / - / -"
    if dc != "-" and rc != "-" and getattr(world, "proprio_dynamics", None) is not None:
        real = (e.proprio, e.actions, int(rc))
        dream = (dream_proprio, dream_actions, int(dc))
        swaps = " / ".join(swapped_gap(world.proprio_dynamics, *state, chunks[1][chunks[2]:chunks[2] + 3])
                           for state, chunks in ((real, real), (dream, real), (real, dream), (dream, dream)))
    libero, steps = "", 0
    if args.in_libero:
        run = executor.run(e.id, list(dream_actions))
        gap = first_grasp(dream_cmd[:len(run.proprio) - 1], grasp_gate.finger_gap(run.proprio[1:]))[1]
        libero, steps = f" {'success' if run.success else 'failure'} / {gap} |", run.steps
    return (f"| {e.id} | {rc} / {rgap} / {real_done} | {replay_gap} | {dc} / {dgap} / {off} / "
            f"{dp.max():.2f} / {gated} / {plain} | {swaps} |{libero}"), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="recorded episodes of the policy's mean (an align run's real/)")
    parser.add_argument("--world-model", default="shipped")
    parser.add_argument("--reflector", default="shipped")
    parser.add_argument("--policy", default="shipped")
    parser.add_argument("--tasks", default="", help="only these tasks, comma-separated (default all)")
    parser.add_argument("--real-successes", action="store_true", help="only the episodes that succeeded in LIBERO")
    parser.add_argument("--grasp-gate", type=float, default=0.0175)
    parser.add_argument("--eta", type=float, default=0.5)
    parser.add_argument("--in-libero", action="store_true", help="also execute each imagined episode's actions "
                        "open loop in LIBERO from the same init state: does LIBERO hold the grasp on them?")
    args = parser.parse_args()
    episodes = chunks.load([args.data])
    tasks = {int(t) for t in args.tasks.split(",") if t}
    episodes = [e for e in episodes if (not tasks or alignment.task_of(e) in tasks) and (e.succeeded or not args.real_successes)]
    policy, world = load_checkpoint(args.policy, "policy"), load_checkpoint(args.world_model, "world_model")
    reflector = load_checkpoint(args.reflector, "reflector")
    horizon = suites.MAX_EPISODE_STEPS["libero_object"] // policy.spec.chunk_length
    bank = alignment.first_frames(episodes)
    with Imagination(world, reflector) as imagination:
        starts = StartStates(bank.frames, bank.proprio.astype(np.float32), list(bank.instructions))
        dreamt = imagine(policy, imagination, starts, horizon, 1.0, deterministic=True)   # eta 1: run to the horizon
    replayed = reflector_measure.replay(world, episodes)   # the same world model on the real actions
    real_p = reflector_measure.judge_videos(reflector, [e.frames for e in episodes], [e.instruction for e in episodes])
    print(f"{len(episodes)} episodes, world model {args.world_model}; chunks counted from 0\n")
    print("| episode | real: closes at / gap held, cm / done at | replay of the real actions: gap held, cm | "
          "imagined: closes at / gap held, cm / eef off there, cm / max p(done) / done at (gate) / done at (no gate) | "
          "the dynamics' gap, cm, closing on 3 chunks, state + chunks: real + real / imagined + real / real + imagined / "
          "imagined + imagined |" + (" the imagined actions in LIBERO: outcome / gap held, cm |" if args.in_libero else ""))
    print("|---|---|---|---|---|" + ("---|" if args.in_libero else ""))
    sim_steps = 0
    with open_loop.Executor() as executor:
        for e, d, p, (_, replay_proprio) in zip(episodes, dreamt, real_p, replayed):
            line, steps = row(e, d, p, replay_proprio, world, args, executor)
            print(line)
            sim_steps += steps
    if args.in_libero:
        print(f"\nLIBERO steps taken by the imagined actions (settle included): {sim_steps}")


if __name__ == "__main__":
    main()
