"""The supervised training loop the three models share: AdamW with warm-up and cosine decay,
gradient clipping, validation every `eval_every` steps with early stopping on its loss, the best
model saved atomically, and resume from where a killed run stopped (same curve, same batches).

    summary = supervised.fit(model, losses, draw, validate, FitConfig(steps=5000), out_dir, "policy")

`losses(model, batch) -> {"loss": scalar, ...}`; `draw(rng, batch_size) -> batch` samples the
training set with the loop's numpy generator (saved on resume); `validate(model) -> {"loss":
float, ...}` scores the validation set (lower "loss" is better).
"""
from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import tqdm

from worldenv.train.settings import FitConfig, TrainConfig

STATE_FILE, MODEL_DIR, HISTORY_FILE = "trainer_state.pt", "model", "history.jsonl"


def _schedule(config: FitConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.min_lr_fraction + (1 - config.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def fit(model: torch.nn.Module, losses: Callable[[Any, Any], dict[str, torch.Tensor]],
        draw: Callable[[np.random.Generator, int], Any], validate: Callable[[Any], dict[str, float]],
        config: FitConfig, out: str | pathlib.Path, desc: str = "train") -> dict:
    """Train `model` in place; returns {"steps", "best", "stopped", "wall_s", "history"}."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    state = _resume(out, model, optimizer, scheduler) or _fresh(config)
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    else:
        torch.manual_seed(config.seed)
    started, stopped = time.perf_counter() - state["wall_s"], "steps"
    bar = tqdm.tqdm(total=config.steps, initial=state["step"], desc=desc, dynamic_ncols=True)
    end = min(config.stop_at or config.steps, config.steps)
    if state.get("stopped") == "patience":
        end, stopped = state["step"], "patience"
    while state["step"] < end:
        out_losses = _step(model, losses, draw(rng, config.batch_size), optimizer, scheduler, trainable, config)
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{out_losses['loss'].item():.4f}", best=f"{state['best']:.4f}")
        if state["step"] % config.eval_every == 0 or state["step"] in (end, config.steps):
            row = _evaluate(model, validate, state, out_losses, time.perf_counter() - started, config.min_delta)
            state["rng"], state["torch_rng"] = rng.bit_generator.state, torch.get_rng_state()
            _checkpoint(out, model, optimizer, scheduler, state, row)
            if config.patience and state["bad_evals"] >= config.patience:
                stopped = state["stopped"] = "patience"
                _checkpoint(out, model, optimizer, scheduler, state, None)
                break
    stopped = "stop_at" if stopped == "steps" and state["step"] < config.steps else stopped
    bar.close()
    return {"steps": state["step"], "best": state["best"], "best_step": state["best_step"], "stopped": stopped,
            "wall_s": time.perf_counter() - started, "history": _history(out)}


def _step(model, losses, batch, optimizer, scheduler, trainable, config: FitConfig) -> dict[str, torch.Tensor]:
    """One optimiser step on `batch`; returns its losses."""
    model.train()
    with torch.autocast(model.device.type, torch.bfloat16, enabled=config.autocast == "bfloat16"):
        out = losses(model, batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
    optimizer.step()
    scheduler.step()
    return out


def _fresh(config: FitConfig) -> dict:
    return {"step": 0, "best": float("inf"), "best_step": 0, "bad_evals": 0, "wall_s": 0.0,
            "rng": np.random.default_rng(config.seed).bit_generator.state}


def _evaluate(model, validate, state: dict, train_losses: dict, wall_s: float, min_delta: float) -> dict:
    model.eval()
    with torch.no_grad():
        val = validate(model)
    if val["loss"] < state["best"] - min_delta * abs(state["best"]) or state["best"] == float("inf"):
        state.update(best=val["loss"], best_step=state["step"], bad_evals=0)
    else:
        state["bad_evals"] += 1
    state["wall_s"] = wall_s
    train = {f"train_{k}": float(v.detach()) for k, v in train_losses.items()}
    return {"step": state["step"], "wall_s": round(wall_s, 1), **train, **{f"val_{k}": v for k, v in val.items()},
            "best": state["best_step"] == state["step"]}


def _checkpoint(out: pathlib.Path, model, optimizer, scheduler, state: dict, row: dict | None) -> None:
    """The history row (if any), the best model when this is it, then the resumable state."""
    if row is not None and row["best"]:
        model.save_pretrained(out / MODEL_DIR)
    if row is not None:
        with (out / HISTORY_FILE).open("a") as f:
            f.write(json.dumps(row) + "\n")
    # publishable_state: the trained part (all of a small model; a paper-scale model's heads)
    payload = {"state": state, "model": model.publishable_state(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict()}
    tmp = out / (STATE_FILE + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out / STATE_FILE)


def _resume(out: pathlib.Path, model, optimizer, scheduler) -> dict | None:
    if not (out / STATE_FILE).is_file():
        return None
    payload = torch.load(out / STATE_FILE, weights_only=False, map_location=model.device)
    model.load_weights(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _truncate_history(out, payload["state"]["step"])
    return payload["state"]


def _truncate_history(out: pathlib.Path, step: int) -> None:
    """Drop history rows written after the state that is resumed (a kill between the two writes)."""
    rows = [r for r in _history(out) if r["step"] <= step]
    (out / HISTORY_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _history(out: pathlib.Path) -> list[dict]:
    path = out / HISTORY_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def initial_model(role: str, config: TrainConfig, **overrides):
    """A fresh model with `overrides`, or the --init checkpoint's (fine-tuning: its config is kept;
    'shipped' = worldenv's)."""
    from worldenv import checkpoints, models
    if config.init:
        return models.load(checkpoints.model(config.init, role), role=role, device=config.device)
    return models.build(role, device=config.device, **overrides)
