"""Alignment: does the learned simulator decide an episode's outcome as LIBERO does?

For one policy and held-out real start states (sampled init states no training used), the
policy runs from the same first frame twice: in the real simulator (LIBERO's success decides)
and in imagination (the world model plays its actions, the reflector decides). Per task and
overall:

    agreement            imagined outcome == real outcome
    imagined recall      imagined done | real success    (a missed success is reward RL never sees)
    imagined FPR         imagined done | real failure    (the reward-hacking case)

and the same three for the reflector on world-model replays of the real actions (open loop,
so the policy's reaction to imagined frames is taken out) and on the real videos themselves.
Reading the three side by side says which link loses the outcome: the reflector (real videos),
the world model's frames (replays), or the closed loop (the policy acting on imagined frames).

With `in_libero`, a fourth: the closed loop's own action chunks executed open loop in LIBERO from
the same init state, against the imagined verdict on them. The closed loop's agreement compares
imagination with the policy's real episode, whose actions differ once the imagined observations
do; this one compares the reward imagination gives a sequence of actions with what that sequence
really does, which is what RL in imagination trains on. Its precision (imagined successes whose
actions succeed in LIBERO) is the share of RL's rewarded rollouts that are real successes.

With `draws`, the closed loop runs again from first frames jittered by at most `jitter` grey
levels per pixel (a camera's own quantisation): an episode whose imagined verdict changes under
that is not decided by the scene, and one closed loop's agreement is then one draw of it.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from worldenv.data.chunks import ChunkedEpisode
from worldenv.data.start_bank import StartBank
from worldenv.measure import imagined, reflector as reflector_measure
from worldenv.models import grasp_gate as grasp_gate_lib
from worldenv.models.roles import Observations, Policy, Reflector, WorldModel

if TYPE_CHECKING:
    from worldenv.sim import open_loop


def outcome_rates(real: np.ndarray, judged: np.ndarray) -> dict:
    """Real outcomes (N,) bool against judged ones (N,) bool -> agreement, recall, false-positive
    rate, precision (the judged successes that are real; None where undefined: no real successes,
    no real failures, no judged successes) and the counts."""
    real, judged = np.asarray(real, bool), np.asarray(judged, bool)
    successes, failures = int(real.sum()), int((~real).sum())
    return {"n": len(real), "real_successes": successes, "judged_successes": int(judged.sum()),
            "agreement": float((real == judged).mean()) if len(real) else None,
            "recall": float((judged & real).sum() / successes) if successes else None,
            "false_positive_rate": float((judged & ~real).sum() / failures) if failures else None,
            "precision": float((judged & real).sum() / judged.sum()) if judged.any() else None,
            "false_positives": int((judged & ~real).sum()), "missed": int((~judged & real).sum())}


def by_task(tasks: list[int], real: np.ndarray, judged: np.ndarray) -> dict:
    """outcome_rates overall and per task."""
    tasks_ = np.asarray(tasks)
    return {"overall": outcome_rates(real, judged),
            "tasks": {int(t): outcome_rates(np.asarray(real)[tasks_ == t], np.asarray(judged)[tasks_ == t])
                      for t in sorted(set(tasks))}}


def gripper_commands(episode: ChunkedEpisode) -> np.ndarray:
    """(chunks,) each chunk's last executed gripper command (the last action dimension)."""
    return np.array([a[int(n) - 1, -1] for a, n in zip(episode.actions, episode.lengths)], np.float32)


def task_of(episode: ChunkedEpisode) -> int:
    """The task index in an episode id (suite/task/init/policy)."""
    return int(episode.id.split("/")[1])


def first_frames(episodes: list[ChunkedEpisode]) -> StartBank:
    """The real first observation of each episode as a start bank (imagination starts there)."""
    return StartBank(frames=np.stack([e.frames[0] for e in episodes]), proprio=np.stack([e.proprio[0] for e in episodes]),
                     instructions=[e.instruction for e in episodes], ids=[e.id for e in episodes],
                     meta={"source": "alignment: first frames of the real episodes"})


def jittered(bank: StartBank, jitter: int, seed: int) -> StartBank:
    """`bank` with every first-frame pixel moved by a uniform integer in [-jitter, jitter] grey levels."""
    noise = np.random.default_rng(seed).integers(-jitter, jitter + 1, size=bank.frames.shape)
    return dataclasses.replace(bank, frames=np.clip(bank.frames.astype(np.int16) + noise, 0, 255).astype(np.uint8))


def under_rule(done_at: int | None, success_chunk: int | None, slack: int = 0) -> tuple[bool, bool]:
    """An imagined episode run to the horizon and its chunks executed in LIBERO (success at
    `success_chunk`, None if never): under a rule that ends it done at chunk `done_at` (None:
    never, the whole horizon runs), (the imagined verdict, LIBERO's outcome of the chunks that
    rollout executes: those up to and including `done_at`, or `slack` chunks more of its own)."""
    if done_at is None:
        return False, success_chunk is not None
    return True, success_chunk is not None and success_chunk <= done_at + slack


def draws_summary(real: np.ndarray, verdicts: np.ndarray, jitter: int) -> dict:
    """Closed-loop verdicts (D, N) bool, the first unjittered, against the real outcomes (N,):
    each draw's agreement and their mean; the episodes whose verdict is not the same in every draw
    (unstable; of them real successes); and the majority verdict's rates."""
    real, verdicts = np.asarray(real, bool), np.asarray(verdicts, bool)
    agreement = (verdicts == real[None]).mean(axis=1)
    unstable = verdicts.min(axis=0) != verdicts.max(axis=0)
    return {"draws": len(verdicts), "jitter": jitter, "agreement": float(agreement.mean()),
            "agreement_per_draw": agreement.tolist(), "unstable": int(unstable.sum()),
            "unstable_real_successes": int((unstable & real).sum()),
            "majority": outcome_rates(real, verdicts.mean(axis=0) > 0.5)}


def verdict_frames(reflector: Reflector, episodes: list[ChunkedEpisode], videos: list[np.ndarray],
                   proprio: list[np.ndarray], eta: float, grasp_gate: float = 0.0, confirm: int = 1) -> list[int | None]:
    """Per episode, the frame of `videos` (1 + C frames, the real first one then one per chunk)
    after which the reflector's verdict ends it done (with the grasp gate read off `proprio`,
    (1 + C, P); `confirm` verdicts in a row); None if never."""
    p_done = reflector_measure.judge_videos(reflector, videos, [e.instruction for e in episodes])
    chunks = [grasp_gate_lib.first_done(p, gripper_commands(e), grasp_gate_lib.finger_gap(q[1:]), eta, grasp_gate,
                                        confirm)
              for e, p, q in zip(episodes, p_done, proprio)]
    return [None if c is None else c + 1 for c in chunks]


def measure(policy: Policy, world_model: WorldModel, reflector: Reflector, episodes: list[ChunkedEpisode],
            horizon: int, eta: float = 0.5, deterministic: bool = True, grasp_gate: float = 0.0,
            replayed: list[tuple[np.ndarray, np.ndarray]] | None = None, draws: int = 0, jitter: int = 1,
            in_libero: "open_loop.Executor | None" = None, confirm: int = 1) -> dict:
    """Closed-loop imagination, world-model replays and real videos against the real outcomes.
    With `grasp_gate` (metres) every verdict also needs the gripper to have held that gap: the
    imagined proprio's in imagination and replays, the real one's on real videos. `replayed`:
    the world model's replays of `episodes` (`reflector_measure.replay`) when the caller has them.
    `draws`: that many more closed loops from jittered first frames (`draws_summary`). `in_libero`
    (a `sim.open_loop.Executor`): each closed loop's action chunks also executed open loop in
    LIBERO from the episode's init state, and the imagined verdict held against that outcome
    ("imagined_actions": the reward RL would get for those actions, against what they really do).
    `confirm`: every verdict needs that many chunks in a row with p(done) > eta."""
    tasks, real = [task_of(e) for e in episodes], np.array([e.succeeded for e in episodes])
    starts = first_frames(episodes)

    def closed_loop(frames, keep=False):
        return imagined.rollouts(policy, world_model, reflector, frames, horizon, eta, deterministic,
                                 grasp_gate=grasp_gate, episodes=keep, confirm=confirm)

    closed = closed_loop(starts, keep=in_libero is not None)
    verdicts = [[r["done"] for r in closed]] + [[r["done"] for r in closed_loop(jittered(starts, jitter, d))]
                                                for d in range(1, draws + 1)]
    replayed = reflector_measure.replay(world_model, episodes) if replayed is None else replayed
    replay_at = verdict_frames(reflector, episodes, [frames for frames, _ in replayed],
                               [proprio for _, proprio in replayed], eta, grasp_gate, confirm)
    real_done = [f is not None for f in verdict_frames(reflector, episodes, [e.frames for e in episodes],
                                                       [e.proprio for e in episodes], eta, grasp_gate, confirm)]
    executed = [None] * len(episodes) if in_libero is None else [in_libero.run(e.id, r["episode"].actions)
                                                                 for e, r in zip(episodes, closed)]
    return {"eta": eta, "grasp_gate": grasp_gate, "confirm": confirm, "horizon": horizon, "deterministic": deterministic,
            "episodes": len(episodes),
            "closed_loop": by_task(tasks, real, np.array([r["done"] for r in closed])),
            "replay": by_task(tasks, real, np.array([f is not None for f in replay_at])),
            "real_video": by_task(tasks, real, np.array(real_done)),
            "closed_loop_draws": draws_summary(real, np.array(verdicts), jitter) if draws else None,
            **on_own_actions(tasks, closed, executed),
            "action_gap": action_gap(policy, episodes, replayed),
            "grasp": grasp_gate_lib.calibrate([gripper_commands(e) for e in episodes],
                                              [grasp_gate_lib.finger_gap(e.proprio[1:]) for e in episodes],
                                              [grasp_gate_lib.finger_gap(q[1:]) for _, q in replayed]),
            "per_episode": [{"id": e.id, "task": t, "real": bool(r), "imagined": bool(c["done"]), "replay": p is not None,
                             "replay_done_frame": p, "real_video": bool(v), "imagined_chunks": c["chunks"],
                             "real_chunks": int(e.chunks), "imagined_draws": float(np.mean(d)), **_executed_row(x)}
                            for e, t, r, c, p, v, d, x in zip(episodes, tasks, real, closed, replay_at, real_done,
                                                              np.array(verdicts).T, executed)]}


def _executed_row(executed: "open_loop.OpenLoop | None") -> dict:
    """One episode's LIBERO outcome of its imagined chunks, for `measure`'s per-episode rows."""
    return {"imagined_in_libero": None if executed is None else executed.success,
            "imagined_in_libero_chunk": None if executed is None else executed.success_chunk}


def on_own_actions(tasks: list[int], closed: list[dict], executed: list) -> dict:
    """The closed loops' verdicts against LIBERO's outcomes of their own chunks (`executed`,
    `open_loop.OpenLoop` each, or None each when not run): "imagined_actions" (`by_task`) and the
    simulator steps those executions took."""
    if any(x is None for x in executed):
        return {"imagined_actions": None, "imagined_actions_sim_steps": None}
    return {"imagined_actions": by_task(tasks, np.array([x.success for x in executed]),
                                        np.array([r["done"] for r in closed])),
            "imagined_actions_sim_steps": int(sum(x.steps for x in executed))}


def false_success_picture(real: np.ndarray, replay: np.ndarray, first: int) -> np.ndarray:
    """A replay the reflector calls done, beside the real episode: the real frames (top row) over
    the world model's frames for the same actions (bottom), at 4 chunks before the frame of the
    verdict (`first`, as `verdict_frames` gives it), that frame, 3 chunks after and the last;
    (2H, columns * W, 3) uint8."""
    n = min(len(real), len(replay))
    first = min(first, n - 1)
    columns = sorted({max(first - 4, 0), first, min(first + 3, n - 1), n - 1})
    return np.concatenate([np.concatenate([video[c] for c in columns], 1) for video in (real, replay)], 0)


def false_successes(episodes: list[ChunkedEpisode], replayed: list[tuple[np.ndarray, np.ndarray]],
                    per_episode: list[dict], limit: int) -> dict[str, np.ndarray]:
    """Up to `limit` failed real episodes whose world-model replay the reflector calls done (the
    replay's false positives of `measure`, `replayed` its replays), each as a
    `false_success_picture` around that verdict, by episode id."""
    rows = {r["id"]: r for r in per_episode if r["replay"] and not r["real"]}
    chosen = [(e, frames) for e, (frames, _) in zip(episodes, replayed) if e.id in rows][:limit]
    return {e.id: false_success_picture(e.frames, frames, rows[e.id]["replay_done_frame"]) for e, frames in chosen}


GAP_SPANS = ((1, 4), (5, 14), (15, 10**6))   # chunk indices along the replay
PROPRIO_PARTS = {"position": slice(0, 3), "rotation": slice(3, 6), "gripper": slice(6, 8)}   # of LIBERO's 8-d proprio


def action_gap(policy: Policy, episodes: list[ChunkedEpisode], replayed: list[tuple[np.ndarray, np.ndarray]],
               batch: int = 64) -> dict:
    """Does the policy act on imagined observations as on the real ones? Along each real episode,
    at every chunk boundary c >= 1, its mean chunk on the world model's replay (frame and proprio
    predicted from the real actions) against its mean chunk on the real observation; also with
    only the frame imagined (real proprio) and only the proprio imagined (real frame), so the two
    sources separate, and with one part of the proprio imagined at a time (`<part>_only`:
    position, rotation, gripper; 8-d proprio only). Mean |difference| per action dimension in
    units of that dimension's std over the policy's real chunks (0 = acts the same; about 1.1 = as unrelated as two random real
    chunks of normal spread), overall and by chunk span."""
    rows = [(e, c, frames, proprio) for e, (frames, proprio) in zip(episodes, replayed) for c in range(1, e.chunks)]
    if not rows:
        return {"n": 0}
    def act(frames, proprio, texts):
        out = [policy.act(Observations(frames[i:i + batch], proprio[i:i + batch], texts[i:i + batch]),
                          deterministic=True).loc for i in range(0, len(frames), batch)]
        return np.concatenate(out).astype(np.float64)                                # (N, K, A)
    texts = [e.instruction for e, *_ in rows]
    real_f = np.stack([e.frames[c] for e, c, *_ in rows])
    real_p = np.stack([e.proprio[c] for e, c, *_ in rows]).astype(np.float32)
    img_f = np.stack([f[c] for _, c, f, _ in rows])
    img_p = np.stack([p[c] for _, c, _, p in rows]).astype(np.float32)
    real = act(real_f, real_p, texts)
    unit = real.reshape(-1, real.shape[-1]).std(axis=0) + 1e-6                       # (A,)
    inputs = {"imagined": (img_f, img_p), "frame_only": (img_f, real_p), "proprio_only": (real_f, img_p)}
    if real_p.shape[1] == 8:
        for part, cols in PROPRIO_PARTS.items():
            one = real_p.copy()
            one[:, cols] = img_p[:, cols]
            inputs[f"{part}_only"] = (real_f, one)
    gaps = {name: (np.abs(act(f, p, texts) - real) / unit).mean(axis=(1, 2)) for name, (f, p) in inputs.items()}   # (N,)
    chunk = np.array([c for _, c, *_ in rows])
    spans = {f"{lo}-{hi}" if hi < 10**6 else f"{lo}+": (chunk >= lo) & (chunk <= hi) for lo, hi in GAP_SPANS}
    return {"n": len(rows), **{name: float(g.mean()) for name, g in gaps.items()},
            "by_span": {span: {"n": int(m.sum()), **{name: float(g[m].mean()) if m.any() else None
                                                      for name, g in gaps.items()}} for span, m in spans.items()}}


def pct(x: float | None) -> str:
    """A rate as a whole percentage; n/a where it is undefined."""
    return "n/a" if x is None else f"{100 * x:.0f} %"


def draws_sentence(drawn: dict) -> str:
    """`draws_summary` in words."""
    m = drawn["majority"]
    return (f"The closed loop from {drawn['draws']} first frames ({drawn['draws'] - 1} jittered by at most "
            f"{drawn['jitter']} grey level{'s' if drawn['jitter'] > 1 else ''} per pixel): agreement "
            f"{pct(drawn['agreement'])} on average ({', '.join(pct(a) for a in drawn['agreement_per_draw'])}); "
            f"{drawn['unstable']} episodes change their verdict between draws ({drawn['unstable_real_successes']} "
            f"of them real successes); the majority verdict agrees {pct(m['agreement'])} (recall "
            f"{pct(m['recall'])}, false positives {pct(m['false_positive_rate'])}).")


def console(result: dict) -> list[str]:
    """One line per link's overall rates, and the draws' agreement: what `align` prints."""
    lines = []
    for key in ("closed_loop", "replay", "real_video", "imagined_actions"):
        if not result.get(key):
            continue
        r = result[key]["overall"]
        lines.append(f"{key:<12} agreement {pct(r['agreement'])}  recall {pct(r['recall'])}  false positives "
                     f"{pct(r['false_positive_rate'])}  precision {pct(r.get('precision'))}  ({r['n']} episodes, "
                     f"{r['real_successes']} {'LIBERO successes of the imagined actions' if key == 'imagined_actions' else 'real successes'})")
    if result.get("confirm", 1) > 1:
        lines.append(f"replay and real_video: recall is a lower bound at {result['confirm']} in a row (real episodes "
                     "end at LIBERO's success)")
    d = result.get("closed_loop_draws")
    if d:
        lines.append(f"closed loop over {d['draws']} draws: agreement {pct(d['agreement'])}, {d['unstable']} "
                     "episodes unstable")
    return lines


LINKS = {"closed_loop": "imagination, closed loop", "replay": "reflector on world-model replays",
         "real_video": "reflector on real videos", "imagined_actions": "imagination on its own actions (LIBERO executes them)"}


ENDS_AT_SUCCESS = ("A real episode ends at LIBERO's success, and so does its replay: there a verdict at {k} chunks "
                   "in a row counts only if p(done) passed eta on the {k} chunks up to the success, so on real "
                   "videos and replays the recall is a lower bound of the rule's; their false-positive rate (the "
                   "failures run to the horizon) stands.")


def rates_table(result: dict) -> list[str]:
    """Per link present in `result` and task: the rates and counts."""
    lines = ["| judged by | task | n | real successes | agreement | recall | false-positive rate | precision |",
             "|---|---|---|---|---|---|---|---|"]
    for key, name in LINKS.items():
        if not result.get(key):
            continue
        rows = [(str(t), r) for t, r in result[key]["tasks"].items()] + [("**all**", result[key]["overall"])]
        for task, r in rows:
            lines.append(f"| {name} | {task} | {r['n']} | {r['real_successes']} | {pct(r['agreement'])} | "
                         f"{pct(r['recall'])} | {pct(r['false_positive_rate'])} | {pct(r.get('precision'))} |")
    if result.get("imagined_actions"):
        lines += ["", "On its own actions, \"real successes\" are LIBERO's successes of the closed loop's action "
                  "chunks, executed open loop from the same init state "
                  f"({result['imagined_actions_sim_steps']} simulator steps); precision there is the share of "
                  "imagined successes (RL's rewarded rollouts) whose actions succeed in LIBERO."]
    return lines


def gap_table(gap: dict) -> list[str]:
    """`action_gap` by chunk span (nothing when it measured no chunk)."""
    if not gap.get("n"):
        return []
    lines = ["", "The policy on the replay's observations vs on the real ones (mean |difference| of its mean "
             "chunk, in stds of its real chunks per dimension; 0 = the same, about 1.1 = unrelated):", "",
             "| chunks | n | frame and proprio imagined | frame only | proprio only | of it, only: position / "
             "rotation / gripper |", "|---|---|---|---|---|---|"]
    spans = [(span, g) for span, g in gap["by_span"].items() if g["n"]] + [("**all**", gap)]
    for span, g in spans:
        parts = " / ".join(f"{g[f'{p}_only']:.2f}" for p in PROPRIO_PARTS) if "position_only" in g else "n/a"
        lines.append(f"| {span} | {g['n']} | {g['imagined']:.2f} | {g['frame_only']:.2f} | {g['proprio_only']:.2f} "
                     f"| {parts} |")
    return lines


def markdown(result: dict) -> list[str]:
    """A table: per link (closed loop, replay, real video, own actions) and task, the rates and
    counts; the action gap; and how well the replay's gripper tells a held object from an empty grip."""
    confirm = result.get("confirm", 1)
    lines = [f"Verdicts: p(done) > {result['eta']}" + (f" at {confirm} chunks in a row" if confirm > 1 else "") + (f", and the gripper's last closed run held at least "
                                                       f"{100 * result['grasp_gate']:.2f} cm (the grasp gate)"
                                                       if result.get("grasp_gate") else "") + ".", ""]
    lines += rates_table(result)
    if confirm > 1:
        lines += ["", ENDS_AT_SUCCESS.format(k=confirm)]
    if result.get("closed_loop_draws"):
        lines += ["", draws_sentence(result["closed_loop_draws"])]
    lines += gap_table(result.get("action_gap") or {})
    grasp = result.get("grasp") or {}
    if grasp.get("runs"):
        lines += ["", f"The gripper in the replays: of {grasp['runs']} closed runs of the real episodes, {grasp['held']} "
                  f"held something in LIBERO (fingers settled at least {100 * grasp_gate_lib.HELD:.0f} cm apart); the "
                  f"imagined gap tells held from empty with balanced accuracy {grasp['balanced_accuracy']:.2f} at "
                  f"{100 * grasp['width']:.2f} cm, the best width (`--grasp-gate {grasp['width']}`; no outcome read)."]
    return lines
