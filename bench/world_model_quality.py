"""World models side by side on held-out real episodes: is a cheaper one as good?

For each world model named: the open-loop drift against the real frames beside copy-last-frame
(PSNR and SSIM, whole frame and moving pixels, 1 and 5 chunks ahead and over whole episodes from
their first frame: `worldenv.measure.world_model`), the smallest margin over copy along the
whole-episode curves, the reflector's verdicts on its open-loop replays of the real actions
(`worldenv.measure.reflector.on_imagined`), and the cost of its B = 8 step in one thread's CPU
time. Alignment with LIBERO (imagined vs real outcomes of the policy from the same first frames)
is `worldenv align --world-model DIR` (reuse one real/ folder for every model).

Usage: .venv/bin/python bench/world_model_quality.py --models shipped,student=DIR --heldout DIR[,DIR]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import rollout

from worldenv import checkpoints, models
from worldenv.data import chunks
from worldenv.measure import reflector as measure_reflector
from worldenv.measure import world_model as measure_world_model


def step_ms(model, batch: int = 8, repeats: int = 7) -> float:
    """Median one-thread CPU time of a B = `batch` step, per item (ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    args = rollout.step_inputs(model, batch)
    model.predict(*args)
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        model.predict(*args)
        times.append(time.thread_time() - started)
    torch.set_num_threads(threads)
    return float(np.median(times)) / batch * 1000


def own_history_l1(model, heldout, depth: int) -> list[float]:
    """Frame L1 (residual, [-1, 1] units) of the transition d chunks after every held-out start
    with depth + 1 full chunks after it, its history rolled on the model's own frames, d = 0..depth
    (what `train world-model --own-history` trains; tiny-unet world models only)."""
    from worldenv.train import world_model as train_world_model
    w = train_world_model.windows(heldout, model.config.history, depth)
    sums = np.zeros(depth + 1)
    for i in range(0, len(w), 64):
        idx = np.arange(i, min(i + 64, len(w)))
        for d, at in enumerate(train_world_model.rolled(model, w, idx, depth)):
            sums[d] += train_world_model.losses(model, at)["frame"].item() * len(idx)
    return [float(v) for v in sums / len(w)]


def margin(drift, metric: str) -> tuple[float, int]:
    """Smallest (model - copy) along the whole-episode curve of `metric` (finite points), and where."""
    model, copy = (drift.curve(who, metric, whole_episode=True) for who in ("model", "copy"))
    finite = [h for h in model if np.isfinite(model[h]) and np.isfinite(copy[h])]
    h, gap = measure_world_model.smallest_margin({h: model[h] for h in finite}, copy)
    return gap, h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="shipped", help="comma-separated [name=]dir ('shipped' = worldenv's)")
    parser.add_argument("--heldout", required=True, help="held-out episode folders, comma-separated")
    parser.add_argument("--reflector", default="shipped", help="the reflector judging the replays")
    parser.add_argument("--own-history", type=int, default=0, help="also the frame L1 on the model's own history, "
                        "d = 0..N chunks from every held-out start (0 = not measured)")
    args = parser.parse_args()
    heldout = chunks.load([p for p in args.heldout.split(",") if p])
    reflector = models.load(checkpoints.model(args.reflector, "reflector"), role="reflector")
    print(f"{len(heldout)} held-out episodes, {sum(e.succeeded for e in heldout)} successes")
    rows = []
    for item in args.models.split(","):
        name, _, path = item.rpartition("=")
        name = name or path
        model = models.load(checkpoints.model(path, "world_model"), role="world_model")
        drift = measure_world_model.measure(model, heldout)
        s = drift.summary()
        judged = measure_reflector.on_imagined(reflector, model, heldout)
        rows.append((name, s, margin(drift, "psnr"), margin(drift, "psnr_moving"), judged, step_ms(model)))
        if args.own_history:
            l1 = own_history_l1(model, heldout, args.own_history)
            print(f"{name}: frame L1 on its own history, d = 0..{args.own_history}: "
                  + " ".join(f"{v:.4f}" for v in l1), flush=True)
        print(f"measured {name}", flush=True)
    copy = rows[0][1]["copy"]
    print("\n| world model | ms/item (B=8, 1 thread) | PSNR 1 / 5 / episode | moving PSNR 1 / 5 / episode | "
          "SSIM 1 / 5 / episode | min margin over copy, whole / moving (chunk) | reflector on replays: "
          "episodes acc / recall / FPR | frames acc |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = lambda r, f="{:.1f}": " / ".join(f.format(r[k]) for k in ("h1", "h5", "episode"))  # noqa: E731
    print(f"| copy last frame | | {fmt(copy['psnr'])} | {fmt(copy['psnr_moving'])} | {fmt(copy['ssim'], '{:.3f}')} | | | |")
    for name, s, whole, moving, judged, ms in rows:
        e, f = judged["episodes"], judged["frames"]
        print(f"| {name} | {ms:.2f} | {fmt(s['model']['psnr'])} | {fmt(s['model']['psnr_moving'])} | "
              f"{fmt(s['model']['ssim'], '{:.3f}')} | {whole[0]:+.2f} ({whole[1]}) / {moving[0]:+.2f} ({moving[1]}) | "
              f"{e['accuracy']:.0%} / {e['recall']:.0%} / {e['false_positive_rate']:.0%} | {f['accuracy']:.0%} |")


if __name__ == "__main__":
    main()
