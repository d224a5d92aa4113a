"""reports/experiment.md: SFT vs RL in the real simulator, the curve with the reward-hacking gap,
Table 4's reflector termination, the real-data budget and the stages' wall time."""
from __future__ import annotations

import collections
import json
import pathlib

from worldenv.measure import compare
from worldenv.pipeline import stages
from worldenv.sim.env import EnvConfig
from worldenv.sim.report import rate


def _json(path: pathlib.Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


outcomes = compare.outcomes    # episode id (suite/task/init) -> LIBERO's success


def sim_steps(evaluation: dict) -> int:
    """Every simulator step of an evaluation: the policy's and the settle no-ops after each reset."""
    return sum(e["steps"] for e in evaluation["episodes"]) + EnvConfig.settle_steps * len(evaluation["episodes"])


def collect(config, root: pathlib.Path) -> dict:
    """Everything the report shows, read from the stages' outputs."""
    from worldenv.pipeline.experiment import control_name, models_dir, seed_name
    folder = models_dir(config, root)
    extra = [f"eval_{seed_name(seed)}" for seed in config.seeds[1:]]
    extra += [f"eval_{control_name(seed)}" for seed in config.seeds] if config.controls else []
    evals = {name: _json(root / name / "eval.json") for name in ("eval_sft", "eval_rl", "sampled_sft", "sampled_rl",
                                                                  "table4_sft", "table4_rl", "eval_dyna", *extra)}
    curve = []
    for k in config.curve_points:
        real, imagined = _json(root / "curve" / f"real_{k:04d}" / "eval.json"), _json(root / "curve" / f"imagined_{k:04d}.json")
        if real and imagined:
            curve.append({"iteration": k, "real": real, "imagined": imagined})
    rows = [json.loads(line) for line in (root / "rl" / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (root / "rl" / "metrics.jsonl").is_file() else []
    both = evals["eval_sft"] and evals["eval_rl"]
    return {"evals": evals, "curve": curve, "rl": rows, "stages": stages.records(root),
            "provenance": _json(folder / "provenance.json"),
            "comparison": comparison(evals["eval_sft"], evals["eval_rl"]) if both else None,
            "seeds": seed_results(config, evals),
            "controls": control_results(config, evals),
            "objective": objective_results(config, root),
            "sim_steps": {name: sim_steps(ev) for name, ev in evals.items() if ev},
            "curve_sim_steps": sum(sim_steps(p["real"]) for p in curve),
            "dyna": dyna_results(root, evals),
            "sampled": {name: comparison(_only(evals[f"eval_{name}"], evals[f"sampled_{name}"]), evals[f"sampled_{name}"])
                        for name in ("sft", "rl") if evals[f"eval_{name}"] and evals[f"sampled_{name}"]},
            "notes": (root / "NOTES.md").read_text().strip() if (root / "NOTES.md").is_file() else "",
            "table4_comparison": comparison(evals["table4_sft"], evals["table4_rl"])
            if evals["table4_sft"] and evals["table4_rl"] else None}


def objective_results(config, root: pathlib.Path) -> list[dict]:
    """RL's own objective at each measured snapshot: imagined successes on the fixed start states,
    the mean's and the sampled actions', overall and per task (of the mean)."""
    from worldenv.measure.imagined import by_task
    from worldenv.measure.paired import task
    from worldenv.pipeline.experiment import seed_name
    named = [(f"seed {config.seed}, iteration {k}", f"{k:04d}") for k in config.curve_points]
    named += [(f"seed {s}, iteration {config.iterations}", seed_name(s)) for s in config.seeds[1:]]
    rows = []
    for label, name in named:
        found = _json(root / "objective" / f"{name}.json")
        if found is None:
            continue
        mean, sampled = found["mean"], found["sampled"]
        starts = collections.Counter(task(e["id"]) for e in mean)
        rows.append({"label": label, "n": len(mean), "mean": sum(e["done"] for e in mean),
                     "sampled": sum(e["done"] for e in sampled), "tasks": by_task(mean),
                     "per_task": max(starts.values(), default=0)})
    return rows


def seed_results(config, evals: dict) -> dict | None:
    """With --extra-seeds: each finished RL seed against SFT on the same init states, and their
    mean (per init state, the seeds' mean success minus SFT's, bootstrapped over init states)."""
    from worldenv.pipeline.experiment import seed_name
    if len(config.seeds) < 2 or not evals.get("eval_sft"):
        return None
    runs = {seed: evals.get("eval_rl" if seed == config.seed else f"eval_{seed_name(seed)}") for seed in config.seeds}
    runs = {seed: ev for seed, ev in runs.items() if ev}
    if not runs:
        return None
    mean = compare.groups([outcomes(evals["eval_sft"])], [outcomes(ev) for ev in runs.values()])
    per_seed = {seed: comparison(evals["eval_sft"], ev) | {"tasks": ev["tasks"]} for seed, ev in runs.items()}
    gains = [c["bootstrap"]["difference"] for c in per_seed.values()]
    return {"per_seed": per_seed, "missing": [s for s in config.seeds if s not in runs], "n": mean["n"],
            "mean": mean, "spread": max(gains) - min(gains)}


def control_results(config, evals: dict) -> dict | None:
    """With --controls: at each seed RL against its shuffled-rewards control and the control against
    SFT, on the same init states; and RL's seeds against the controls' as groups."""
    from worldenv.pipeline.experiment import control_name, seed_name
    if not config.controls:
        return None
    rl = {s: evals.get("eval_rl" if s == config.seed else f"eval_{seed_name(s)}") for s in config.seeds}
    ctl = {s: evals.get(f"eval_{control_name(s)}") for s in config.seeds}
    sft = evals.get("eval_sft")
    per_seed = {s: {"rl_vs_control": comparison(ctl[s], rl[s]) if rl[s] and ctl[s] else None,
                    "control_vs_sft": comparison(sft, ctl[s]) if sft and ctl[s] else None} for s in config.seeds}
    runs_rl, runs_ctl = [outcomes(e) for e in rl.values() if e], [outcomes(e) for e in ctl.values() if e]
    return {"per_seed": per_seed, "missing": [s for s in config.seeds if not ctl[s]],
            "groups": compare.groups(runs_ctl, runs_rl) if runs_rl and runs_ctl else None}


def dyna_results(root: pathlib.Path, evals: dict) -> dict | None:
    """The Dyna round's exploration data and its policy against the RL policy it started from."""
    if not (evals.get("eval_dyna") and evals.get("eval_rl")):
        return None
    from worldenv.pipeline.models_report import budget
    data = budget(root / "dyna", names=("explore",))["explore"]
    return {"explore": data, "reflector_tuned": (root / "dyna" / "reflector" / "model" / "config.json").is_file(),
            "vs_rl": comparison(evals["eval_rl"], evals["eval_dyna"]),
            "vs_sft": comparison(evals["eval_sft"], evals["eval_dyna"]) if evals.get("eval_sft") else None,
            "rl_vs_sft_same": comparison(_only(evals["eval_sft"], evals["eval_dyna"]), _only(evals["eval_rl"], evals["eval_dyna"]))
            if evals.get("eval_sft") else None}


def _only(evaluation: dict, like: dict) -> dict:
    """`evaluation` restricted to the episode ids `like` has."""
    ids = set(outcomes(like))
    return {**evaluation, "episodes": [e for e in evaluation["episodes"] if e["id"] in ids]}


def comparison(sft: dict, rl: dict) -> dict:
    """Paired outcomes of the two policies on the same init states."""
    both = compare.pair(outcomes(sft), outcomes(rl))
    return {"n": both["n"], "sft": both["a"], "rl": both["b"], "mcnemar": both["mcnemar"],
            "bootstrap": both["bootstrap"], "by_task": both["by_task"]}


def gap(point: dict) -> dict:
    """Imagined vs real success of one snapshot from the same init states, overall and per episode."""
    real = outcomes(point["real"])
    imagined = {e["id"]: e["done"] for e in point["imagined"]["episodes"]}
    common = sorted(set(real) & set(imagined))
    false_done = sum(imagined[i] and not real[i] for i in common)
    missed = sum(real[i] and not imagined[i] for i in common)
    return {"iteration": point["iteration"], "n": len(common), "real": sum(real[i] for i in common) / len(common),
            "imagined": sum(imagined[i] for i in common) / len(common), "imagined_done_real_failed": false_done,
            "real_success_imagined_not": missed,
            "real_ci95": rate(sum(real[i] for i in common), len(common))["ci95"]}


def plot_curve(gaps: list[dict], rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = [g["iteration"] for g in gaps]
    real = [g["real"] for g in gaps]
    err = [[r - g["real_ci95"][0] for r, g in zip(real, gaps)], [g["real_ci95"][1] - r for r, g in zip(real, gaps)]]
    axes[0].errorbar(x, real, yerr=err, fmt="-o", capsize=3, label="real LIBERO (Wilson 95 %)")
    axes[0].plot(x, [g["imagined"] for g in gaps], "--s", label="inside the world model (reflector)")
    axes[0].set(title="success vs RL iteration, same init states", xlabel="RL iteration", ylabel="success", ylim=(0, 1))
    axes[0].legend()
    axes[1].plot([r["iteration"] for r in rows], [r["reward_mean"] for r in rows], "-o", ms=3, label="mean reward")
    axes[1].plot([r["iteration"] for r in rows], [r["done_fraction"] for r in rows], "-", label="done fraction")
    axes[1].set(title="RL rollouts (from keyframes)", xlabel="RL iteration", ylim=(0, 1))
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(config, root: pathlib.Path) -> pathlib.Path:
    from worldenv.pipeline import experiment_markdown
    results = collect(config, root)
    path = pathlib.Path(config.report)
    gaps = [gap(p) for p in results["curve"]]
    png = path.with_name(path.stem + "-curve.png")
    if gaps:
        plot_curve(gaps, results["rl"], png)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(experiment_markdown.render(config, results, gaps, png.name))
    return path
