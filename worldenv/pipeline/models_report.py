"""The models report: measurements on held-out episodes and the stages' records, as markdown
with a drift PNG beside it; optionally the final models copied to a checkpoints folder."""
from __future__ import annotations

import json
import pathlib
import shutil
import time


from worldenv.pipeline import stages

# Other world models measured beside the main one when their run directories exist: the
# diffusion mode, and the ablation of World-Env's Table 5 (trained on demos only).
VARIANTS = ("world_model_diffusion", "ablation_demos_only/wm_residual", "ablation_demos_only/wm_diffusion")


def measure(root: pathlib.Path) -> dict:
    """World-model drift and reflector verdicts on the held-out episodes (cached in measure.json)."""
    cache = root / "measure.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from worldenv import models
    from worldenv.data import chunks
    from worldenv.measure import reflector as measure_reflector, world_model as measure_world_model
    started = time.perf_counter()
    heldout = chunks.load([root / "heldout_demos", root / "heldout_explore"])
    from worldenv.pipeline.models import world_model_dir
    world = models.load(world_model_dir(root), role="world_model")
    reflector = models.load(root / "reflector" / "model", role="reflector")
    drift = measure_world_model.measure(world, heldout)
    variants = {name: measure_world_model.measure(models.load(root / name / "model", role="world_model"), heldout).summary()
                for name in VARIANTS if (root / name / "model" / "config.json").is_file()}
    out = {"episodes": len(heldout), "successes": sum(e.succeeded for e in heldout),
           "world_model": drift.summary(), "curves": _curves(drift), "world_model_variants": variants,
           "reflector_real": measure_reflector.on_real(reflector, heldout),
           "reflector_imagined": measure_reflector.on_imagined(reflector, world, heldout),
           "wall_s": time.perf_counter() - started}
    cache.write_text(json.dumps(out, indent=2))
    return out


def _curves(drift) -> dict:
    return {who: {metric: {str(h): v for h, v in drift.curve(who, metric, whole_episode=True).items()}
                  for metric in ("psnr", "psnr_moving")} for who in ("model", "copy")}


def plot_drift(curves: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    for ax, metric, title in zip(axes, ("psnr", "psnr_moving"), ("whole frame", "moving pixels")):
        for who, style in (("model", "-o"), ("copy", "--s")):
            points = sorted((int(h), v) for h, v in curves[who][metric].items())
            ax.plot([h for h, _ in points], [v for _, v in points], style, ms=3,
                    label="world model" if who == "model" else "copy last frame")
        ax.set(title=f"PSNR, {title}", xlabel="chunks ahead (open loop from the episode start)", ylabel="dB")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def budget(root: pathlib.Path, names=("demos", "explore", "heldout_demos", "heldout_explore")) -> dict:
    """Real data per dataset: episodes, successes and simulator steps."""
    from worldenv.data import hdf5
    out = {}
    for name in names:
        episodes = [e for f in sorted((root / name).rglob("*.hdf5")) for e in hdf5.read(f).episodes]
        out[name] = {"episodes": len(episodes), "successes": sum(e.success for e in episodes),
                     "steps": int(sum(len(e) for e in episodes))}
    return out


def copy_checkpoints(root: pathlib.Path, chosen: tuple[int, int], target: pathlib.Path, every: int = 4) -> None:
    """The chosen policy, the world model and the reflector as <target>/<role> (atomic per role),
    and starts.npz: keyframes (every `every`-th chunk boundary, one frame of history) of the
    demos and exploration episodes - the training distribution, never the evaluation states."""
    from worldenv import checkpoints
    from worldenv.data import chunks, start_bank
    from worldenv.pipeline.models import sft_name, world_model_dir
    for role, source in (("policy", root / sft_name(*chosen) / "model"), ("world_model", world_model_dir(root)),
                         ("reflector", root / "reflector" / "model")):
        tmp = target / f".{role}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(target / role, ignore_errors=True)
        tmp.rename(target / role)
    episodes = chunks.load([root / "demos", root / "explore"])
    start_bank.keyframes(episodes, history=1, every=every).save(target / checkpoints.STARTS)


def sft_seeds(root: pathlib.Path, demos: int) -> list[dict]:
    """The chosen candidate's real success at each training seed (eval_sft_n{demos}_s{seed}), so a
    report that starts from the shipped policy can print the SFT seed spread beside a gain."""
    rows = []
    for path in sorted(root.glob(f"eval_sft_n{demos}_s*/eval.json")):
        episodes = json.loads(path.read_text())["episodes"]
        rows.append({"seed": int(path.parent.name.rsplit("_s", 1)[1]), "episodes": len(episodes),
                     "successes": sum(bool(e["success"]) for e in episodes)})
    return sorted(rows, key=lambda r: r["seed"])


def provenance(config, chosen: tuple[int, int], data: dict, seeds: list[dict] | None = None) -> dict:
    """What the exported models were made from, for reports that start from them (the real-data budget,
    the SFT seed spread)."""
    k, seed = chosen
    used = {"demos": f"policy SFT (first {k} per task), world model, reflector, RL start states",
            "explore": "world model, reflector, RL start states"}
    return {"made_by": f"worldenv pipeline --suite {config.suite} --tasks {config.tasks}", "suite": config.suite,
            "tasks": [int(t) for t in config.tasks.split(",")],
            "policy": f"SFT on {k} expert demos per task, training seed {seed}: chosen among {config.sft_demos} demos "
                      f"per task as the candidate whose median real success over seeds {config.sft_seeds} is nearest "
                      "50 %, and that candidate's median seed",
            "init_states": "demos, exploration and held-out episodes from sampled init states >= 1000; LIBERO's fixed "
                           "init states 0-49 only for evaluation",
            "data": [{"name": name, "episodes": d["episodes"], "successes": d["successes"], "sim_steps": d["steps"],
                      "used_for": used.get(name, "measurement only")} for name, d in data.items()],
            "sft_seeds": seeds or [],
            "selection": f"each SFT candidate evaluated on {config.eval_episodes} episodes per task at LIBERO's fixed "
                         "init states to pick the one nearest 50 %; no RL setting was chosen on them"}


def write(config, root: pathlib.Path, chosen: tuple[int, int]) -> pathlib.Path:
    """Measure, plot, and write the markdown report; copy the checkpoints if asked."""
    from worldenv.pipeline import models_markdown
    measured = measure(root)
    path = pathlib.Path(config.report)
    plot_drift(measured["curves"], path.with_name(path.stem + "-drift.png"))
    data = budget(root)
    text = models_markdown.render(config, root, chosen, measured, data, stages.records(root))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if config.checkpoints:
        target = pathlib.Path(config.checkpoints)
        copy_checkpoints(root, chosen, target)
        (target / "provenance.json").write_text(json.dumps(provenance(config, chosen, data, sft_seeds(root, chosen[0])),
                                                                  indent=2))
    print(f"report -> {path}", flush=True)
    return path


