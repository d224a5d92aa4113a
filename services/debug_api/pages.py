"""Server-rendered HTML: the episode index and one episode's video beside its p(done) curve."""
from __future__ import annotations

import html
import time
from urllib.parse import quote

from worldenv.rl.progress import HOPELESS

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
.row{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}.done{color:#1a7f37}.failed{color:#c62828}
.stalled{background:#fdecea;border:1px solid #c62828;padding:.6em}"""


def _doc(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC"


def reward_svg(p_done: list[float], eta: float, done_step: int | None,
               width: int = 480, height: int = 240, pad: int = 32) -> str:
    """p(done) per step as an inline SVG: the curve, the eta line and the done step."""
    n = len(p_done)

    def x(t: float) -> float:  # step -> px
        return pad + (width - 2 * pad) * (t / max(n - 1, 1))

    def y(p: float) -> float:  # p in [0, 1] -> px, 1 at the top
        return height - pad - (height - 2 * pad) * min(max(p, 0.0), 1.0)

    points = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p in enumerate(p_done))
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' class='p-done'>",
             f"<rect x='{pad}' y='{pad}' width='{width - 2 * pad}' height='{height - 2 * pad}' fill='#fafafa' stroke='#999'/>",
             f"<line class='eta' x1='{pad}' x2='{width - pad}' y1='{y(eta):.1f}' y2='{y(eta):.1f}' "
             f"stroke='#e67e22' stroke-dasharray='6 4'/>",
             f"<text class='eta-label' x='{width - pad - 4}' y='{y(eta) - 4:.1f}' font-size='11' "
             f"text-anchor='end' fill='#e67e22'>eta {eta:g}</text>",   # inside the plot: never cut at the edge
             f"<polyline fill='none' stroke='#1f6feb' stroke-width='2' points='{points}'/>",
             f"<text x='{pad}' y='{height - 8}' font-size='11'>step 0</text>",
             f"<text x='{width - pad}' y='{height - 8}' font-size='11' text-anchor='end'>step {max(n - 1, 0)}</text>",
             f"<text x='4' y='{pad + 4}' font-size='11'>1</text><text x='4' y='{height - pad + 4}' font-size='11'>0</text>"]
    if done_step is not None and 0 <= done_step < n:
        parts.append(f"<line class='done-step' x1='{x(done_step):.1f}' x2='{x(done_step):.1f}' y1='{pad}' "
                     f"y2='{height - pad}' stroke='#1a7f37'/><circle cx='{x(done_step):.1f}' "
                     f"cy='{y(p_done[done_step]):.1f}' r='4' fill='#1a7f37'><title>done at step {done_step}</title></circle>")
    return "".join(parts) + "</svg>"


def _table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table class='meta'>{cells}</table>"


def episode_page(meta: dict, rewards: dict) -> str:
    """One episode: GIF (relative link to its video) beside the p(done) curve, then metadata."""
    eid = html.escape(meta["id"])
    eta = rewards["eta"] if rewards["eta"] is not None else 0.5
    scale = min(8, max(1, 256 // max(meta["frame_shape"][0], 1)))  # about 256 px on screen; the API allows 1..8
    video = f"video?format=gif&amp;scale={scale}"
    rows = {k: meta[k] for k in ("id", "status", "policy_version", "instruction", "start_id", "group_id",
                                 "run_id", "steps", "done_step", "reward", "error")}
    rows.update(created=_when(meta["created_at"]), frame_shape=meta["frame_shape"], action_shape=meta["action_shape"])
    links = " · ".join(f"<a href='{h}'>{t}</a>" for h, t in
                       ((f"../{quote(meta['id'])}", "metadata JSON"), ("rewards", "rewards JSON"),
                        ("frames/0.png", "first frame"), ("../..", "all episodes")))
    body = (f"<h1>Episode {eid}</h1><p>{html.escape(meta['instruction'])}</p><div class='row'>"
            f"<figure><img src='{video}' alt='imagined video'><figcaption>{meta['steps'] + 1} frames</figcaption></figure>"
            f"<figure>{reward_svg(rewards['p_done'], eta, rewards['done_step'])}<figcaption>p(done) per step</figcaption>"
            f"</figure></div>{_table(rows)}<p>{links}</p>")
    return _doc(f"episode {meta['id']}", body)


def index_page(items: list[dict], total: int) -> str:
    """Recent episodes, newest first, each linking to its page."""
    head = "<tr><th>id</th><th>status</th><th>policy</th><th>steps</th><th>reward</th><th>instruction</th><th>created</th></tr>"
    rows = "".join(
        f"<tr><td><a href='episodes/{quote(m['id'])}/view'>{html.escape(m['id'])}</a></td>"
        f"<td class='{html.escape(m['status'])}'>{html.escape(m['status'])}</td><td>{m['policy_version']}</td>"
        f"<td>{m['steps']}</td><td>{m['reward']:.3f}</td><td>{html.escape(m['instruction'])}</td>"
        f"<td>{_when(m['created_at'])}</td></tr>" for m in items)
    body = (f"<h1>Imagined episodes</h1><p>{len(items)} most recent of {total} · "
            f"<a href='docs'>API docs</a></p><table>{head}{rows}</table>")
    return _doc("worldenv episodes", body)


RUN_CURVES = (("reward_mean", "reward (p(done) at termination)"), ("zero_advantage_groups", "groups with zero advantage"),
              ("clip_fraction", "clip fraction"), ("approx_kl", "approximate KL"),
              ("episode_length", "episode length (chunks)"), ("imagined_steps_per_s", "imagined steps/s"))


def line_svg(xs: list[float], ys: list[float], title: str, width: int = 320, height: int = 180, pad: int = 30) -> str:
    """One metric per iteration as an inline SVG line chart with its range."""
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    span, n = (hi - lo) or 1.0, max(len(xs) - 1, 1)
    x = lambda i: pad + (width - 2 * pad) * i / n  # noqa: E731 - index -> px
    y = lambda v: height - pad - (height - 2 * pad) * (v - lo) / span  # noqa: E731 - value -> px
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ys))
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' class='curve'>"
            f"<text x='{pad}' y='16' font-size='12'>{html.escape(title)}</text>"
            f"<rect x='{pad}' y='{pad}' width='{width - 2 * pad}' height='{height - 2 * pad}' fill='#fafafa' stroke='#999'/>"
            f"<polyline fill='none' stroke='#1f6feb' stroke-width='2' points='{points}'/>"
            f"<text x='2' y='{pad + 4}' font-size='10'>{hi:.3g}</text>"
            f"<text x='2' y='{height - pad + 4}' font-size='10'>{lo:.3g}</text>"
            f"<text x='{width - pad}' y='{height - 8}' font-size='10' text-anchor='end'>iteration {xs[-1] if xs else 0}</text></svg>")


def stalled(rows: list[dict]) -> tuple[int, str | None]:
    """The run's last iterations that made no update, and the cause of the last of them."""
    n = 0
    for r in reversed(rows):
        if not r.get("skipped"):
            break
        n += 1
    return n, rows[-1].get("no_update_cause") if n else None


def _stalled_banner(rows: list[dict]) -> str:
    """A run whose last iterations (two or more, or one of a cause that stops runs) made no update."""
    n, cause = stalled(rows)
    if not n or (n < 2 and cause not in HOPELESS):
        return ""
    why = HOPELESS.get(cause, "their groups' rewards did not differ (no advantage to learn from)")
    last = rows[-1].get("drop_reason")
    return (f"<p class='stalled'><strong>This run has stopped learning:</strong> its last {n} iteration(s) made no "
            f"update, cause <code>{html.escape(str(cause))}</code>: {html.escape(why)}."
            + (f" Last: {html.escape(last)}" if last else "") + "</p>")


def _update_cell(r: dict) -> str:
    """Whether the iteration updated the policy, else why not (and why its groups were dropped)."""
    notes = "".join(f"<br><small>{n}</small>" for n in _replica_notes(r))
    if not r.get("skipped"):
        return f"updated{notes}"
    reason = r.get("drop_reason") or ""
    return (f"<span class='failed'>skipped: {html.escape(str(r.get('no_update_cause') or 'no usable group'))}</span>"
            + (f"<br><small>{html.escape(reason)}</small>" if reason else "") + notes)


def _replica_notes(r: dict) -> list[str]:
    """What happened to the policy replicas during the iteration."""
    counts = (("restarted_replicas", "replica(s) restarted"), ("republished", "sent the weights again"),
              ("unreachable_replicas", "unreachable"))
    return [f"{r[key]} {what}" for key, what in counts if r.get(key)]


def _dropped_cell(r: dict) -> str:
    causes = ", ".join(f"{r[f'dropped_{c}']} {c}" for c in ("stale", "failed", "incomplete") if r.get(f"dropped_{c}"))
    return f"{r.get('dropped_groups', 0)}" + (f" ({causes})" if causes else "")


def run_page(run_id: str, rows: list[dict], episodes: dict[int, list[dict]]) -> str:
    """A training run: its curves beside the episodes each iteration imagined, why iterations
    dropped groups or skipped their update, and a flag when the run has stopped learning."""
    xs = [r["iteration"] for r in rows]
    charts = "".join(line_svg(xs, [float(r.get(k, 0.0)) for r in rows], title) for k, title in RUN_CURVES)
    head = ("<tr><th>iteration</th><th>policy version</th><th>reward</th><th>clip fraction</th><th>approx KL</th>"
            "<th>dropped groups</th><th>update</th><th>episodes</th></tr>")
    body_rows = "".join(
        f"<tr><td>{r['iteration']}</td><td>{r['version']}</td><td>{r.get('reward_mean', 0):.3f}</td>"
        f"<td>{r.get('clip_fraction', 0):.2f}</td><td>{r.get('approx_kl', 0):.3g}</td><td>{_dropped_cell(r)}</td>"
        f"<td>{_update_cell(r)}</td><td>"
        + " ".join(f"<a href='../../episodes/{quote(m['id'])}/view' class='{html.escape(m['status'])}'>"
                   f"{m['reward']:.2f}</a>" for m in episodes.get(r["iteration"], []))
        + "</td></tr>" for r in rows)
    body = (f"<h1>Run {html.escape(run_id)}</h1>{_stalled_banner(rows)}<p>{len(rows)} iterations · "
            f"<a href='metrics'>metrics JSON</a></p><div class='row'>{charts}</div><table>{head}{body_rows}</table>")
    return _doc(f"run {run_id}", body)
