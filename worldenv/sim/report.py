"""Success rates with Wilson 95 % intervals, written as JSON, markdown and a few videos."""
from __future__ import annotations

import json
import math
import pathlib
from collections import defaultdict

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: int, n: int) -> dict:
    lo, hi = wilson(successes, n)
    return {"successes": successes, "episodes": n, "rate": successes / n if n else 0.0, "ci95": [lo, hi]}


def summarize(results, meta: dict) -> dict:
    """Per-task and per-suite rates from episode.EpisodeResult objects."""
    by_task: dict[int, list] = defaultdict(list)
    for r in results:
        by_task[r.spec.config.task].append(r)
    tasks = {}
    for task, rs in sorted(by_task.items()):
        tasks[str(task)] = {"instruction": next((r.instruction for r in rs if r.instruction), ""),
                            **rate(sum(r.success for r in rs), len(rs)),
                            "mean_steps": float(np.mean([r.steps for r in rs])),
                            "outcomes": _count(r.outcome.split(":")[0] for r in rs)}
    total = sum(t["successes"] for t in tasks.values()), sum(t["episodes"] for t in tasks.values())
    return {**meta, "suite_result": rate(*total), "tasks": tasks,
            "episodes": [{"id": r.spec.id, "success": r.success, "ever_success": r.ever_success,
                          "steps": r.steps, "outcome": r.outcome, "seconds": round(r.seconds, 2),
                          "p_done": [round(p, 4) for p in r.p_done]} for r in results]}


def _count(items) -> dict:
    out: dict[str, int] = defaultdict(int)
    for item in items:
        out[item] += 1
    return dict(out)


def _judged_by(summary: dict) -> str:
    """' (eta ..., grasp gate ..., K verdicts in a row)' of a reflector-terminated evaluation, else ''."""
    if summary["termination"] != "reflector":
        return ""
    parts = [f"eta {summary['eta']}"]
    if summary.get("grasp_gate"):
        parts.append(f"grasp gate {100 * summary['grasp_gate']:.2f} cm on the real gripper")
    if summary.get("confirm", 1) > 1:
        parts.append(f"{summary['confirm']} verdicts in a row")
    return f" ({', '.join(parts)})"


def markdown(summary: dict, videos: list[str]) -> str:
    s = summary["suite_result"]
    lines = [f"# LIBERO evaluation: {summary['suite']}", "",
             f"- policy: `{summary['policy']}`; termination: {summary['termination']}{_judged_by(summary)}",
             f"- episodes per task: {summary['episodes_per_task']}; max steps: {summary['max_steps']}; "
             f"chunk length: {summary['chunk_length']}; image size: {summary['image_size']}",
             f"- init states: {summary['init_states']}",
             f"- wall time: {summary['wall_s']:.0f} s with {summary['env_processes']} env process(es)", "",
             f"**Suite success: {s['successes']}/{s['episodes']} = {100 * s['rate']:.1f} % "
             f"(Wilson 95 % CI {100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f} %)**", "",
             "| task | instruction | success | rate | 95 % CI | mean steps | outcomes |",
             "|---|---|---|---|---|---|---|"]
    for task, t in summary["tasks"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(t["outcomes"].items()))
        lines.append(f"| {task} | {t['instruction']} | {t['successes']}/{t['episodes']} | {100 * t['rate']:.0f} % | "
                     f"{100 * t['ci95'][0]:.0f}-{100 * t['ci95'][1]:.0f} % | {t['mean_steps']:.0f} | {outcomes} |")
    if videos:
        lines += ["", "Videos (one frame per action chunk): " + ", ".join(f"[{pathlib.Path(v).name}]({pathlib.Path(v).name})" for v in videos)]
    return "\n".join(lines) + "\n"


def write_video(path: pathlib.Path, frames: np.ndarray, fps: int = 5) -> pathlib.Path:
    """MP4 if ffmpeg is available, else GIF. frames (F, H, W, 3) uint8."""
    import imageio.v2 as imageio
    try:
        imageio.mimsave(path.with_suffix(".mp4"), list(frames), fps=fps, macro_block_size=1)
        return path.with_suffix(".mp4")
    except Exception:  # noqa: BLE001 - no ffmpeg backend: fall back to GIF
        imageio.mimsave(path.with_suffix(".gif"), list(frames), duration=1 / fps)
        return path.with_suffix(".gif")


def write(out_dir: pathlib.Path, summary: dict, results) -> dict[str, str]:
    """eval.json, eval.md and up to `summary['videos']` videos (successes and failures mixed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with_video = [r for r in results if r.video is not None]
    picks = _mixed(with_video, summary.get("videos", 3))
    videos = [str(write_video(out_dir / f"{r.spec.id.replace('/', '_')}_{'ok' if r.success else 'fail'}", r.video))
              for r in picks]
    (out_dir / "eval.json").write_text(json.dumps({**summary, "video_files": videos}, indent=2))
    (out_dir / "eval.md").write_text(markdown(summary, videos))
    return {"json": str(out_dir / "eval.json"), "markdown": str(out_dir / "eval.md")}


def _mixed(results, n: int) -> list:
    ok = [r for r in results if r.success]
    bad = [r for r in results if not r.success]
    picks = []
    while len(picks) < n and (ok or bad):
        for group in (ok, bad):
            if group and len(picks) < n:
                picks.append(group.pop(0))
    return picks
