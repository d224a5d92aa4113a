"""The world models' arm dynamics replayed open loop on recorded episodes (e.g. an `align` run's
real/, held out from every training): from each episode's first proprio, on its real actions,
the mean |error| at every chunk boundary, by chunk span, in the units a policy reads (its
standardised proprio features, clamped as it clamps them) by part, and the rotation in degrees.
A measurement (reports/learning-signal.md, "The arm dynamics in the policy's units").

  .venv/bin/python scripts/proprio_errors.py --data ALIGN_OUT/real --models shipped,name=DIR [--policy shipped]
"""
from __future__ import annotations

import argparse

import torch

from worldenv.data import chunks
from worldenv.measure.align import load_checkpoint
from worldenv.models.proprio import FEATURE_PARTS
from worldenv.models.proprio_dynamics import ArmState, read
from worldenv.train import proprio_dynamics as dyn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="recorded episodes (HDF5 files or directories, comma-separated)")
    parser.add_argument("--models", default="shipped", help="world models with a proprio dynamics: NAME=DIR or "
                        "'shipped', comma-separated")
    parser.add_argument("--policy", default="shipped", help="the policy whose proprio units the errors are read in")
    args = parser.parse_args()
    seq = dyn.sequences(chunks.load([p for p in args.data.split(",") if p]))
    reader = dyn.policy_reader(args.policy, "cpu")
    print(f"{len(seq)} episodes, {int(seq.chunks.sum())} chunk boundaries; units: the {args.policy} policy's input\n")
    spans = [f"{lo}-{hi or ''}" for lo, hi in dyn.SPANS]
    valid = torch.from_numpy(seq.scored())
    real = ArmState.from_raw(torch.from_numpy(seq.proprio[:, 1:]).reshape(-1, 8))
    inputs = read(reader, real).view(*valid.shape, -1)[valid]
    at_clamp = (inputs.abs() >= 10).float().mean(0)
    print("share of the real boundaries where the policy's input sits at its clamp: " + ", ".join(
        f"{part} {float(at_clamp[cols].mean()):.2f}" for part, cols in FEATURE_PARTS.items()) + "\n")
    print("| world model | rotation, degrees: " + " / ".join(s.replace("-", "+") if s.endswith("-") else s
                                                      for s in spans) + " | policy units: position / rotation / "
          "gripper | eef position, m |")
    print("|---|---|---|---|")
    for item in args.models.split(","):
        name, _, path = item.rpartition("=")
        model = load_checkpoint(path, "world_model", "--models")
        if getattr(model, "proprio_dynamics", None) is None:
            raise SystemExit(f"--models: {item} has no proprio dynamics")
        out = dyn.open_loop_errors(model.proprio_dynamics, seq, reader=reader)
        degrees = " / ".join(f"{out[f'rotation_deg_{s}']:.1f}" for s in spans if f"rotation_deg_{s}" in out)
        parts = " / ".join(f"{out[f'read_{p}']:.3f}" for p in FEATURE_PARTS)
        print(f"| {name or path} | {degrees} | {parts} | {out['position_m']:.3f} |")


if __name__ == "__main__":
    main()
