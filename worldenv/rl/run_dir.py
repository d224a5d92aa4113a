"""What a `worldenv train rl` run directory holds, and how a run resumes from it: the policy
(servable), the trainer's state (optimiser, start replay, the mean's path) written
atomically after each iteration, metrics.jsonl (one row per iteration; a resume continues the
same curve), groups.jsonl (each iteration's groups: start, rewards, outcomes, whether the update
used them), run.json (the settings, what each resume changed, and the machine each start ran
on) and the policy snapshots."""
from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import platform

import torch

from worldenv.rl.settings import GROUPS_FILE, METRICS_FILE, SETTINGS_FILE, RLConfig

log = logging.getLogger(__name__)


def save_state(out: pathlib.Path, trainer, it: int) -> None:
    """The policy (in the checkpoint format, servable) and the resumable state, atomically."""
    trainer.policy.save_pretrained(out / "policy")
    payload = {"iteration": it, "version": trainer.publisher.version, "optimizer": trainer.optimizer.state_dict(),
               "start_replay": trainer.replay.state_dict(),
               "mean_path": trainer.mean_path.state_dict()}
    tmp = out / "trainer_state.pt.tmp"
    torch.save(payload, tmp)
    tmp.replace(out / "trainer_state.pt")


def load_state(out: pathlib.Path, trainer) -> int:
    """Restore the optimiser, the start replay and the mean's path; returns the next iteration (0
    if there is no state). Draws and minibatch orders are functions of the seed and the
    iteration (`trainer.iteration_rng`), so there is no RNG to restore; an older state's "rng" is not read."""
    path = out / "trainer_state.pt"
    if not path.is_file():
        return 0
    payload = torch.load(path, weights_only=False)
    try:
        trainer.optimizer.load_state_dict(payload["optimizer"])
    except ValueError as exc:  # other parameters: --head-lr or --learn-scale changed since the run started
        raise ValueError(f"head_lr, learn_scale: {path} was saved with {len(payload['optimizer']['param_groups'])} "
                         f"optimiser group(s), this run has {len(trainer.optimizer.param_groups)}; resume with the "
                         f"--head-lr and --learn-scale the run started with ({exc})") from None
    trainer.replay.load_state_dict(payload.get("start_replay", {}))
    trainer.mean_path.load_state_dict(payload.get("mean_path", {}))
    return int(payload["iteration"]) + 1


def snapshot_dir(out: pathlib.Path, iterations: int) -> pathlib.Path:
    """Where the policy after `iterations` RL iterations is kept (--snapshot-every; 0 = the start)."""
    return out / "snapshots" / f"iteration{iterations:04d}"


# Settings a resumed run may change without changing what it learns: where it runs and how long.
PLUMBING = frozenset({"redis_url", "prefix", "policy_addr", "auth_token", "weights_store", "policy_timeout_s",
                      "sync_every_s", "max_hopeless", "out", "iterations", "timeout", "run_id", "snapshot_every"})


def save_settings(out: pathlib.Path, config: RLConfig, first: int) -> dict:
    """Keep the settings of this start of the run in run.json (`worldenv compare` pairs runs by
    them; the bearer token is left out). A resume (`first` > 0) that changes what the run learns
    (anything but PLUMBING) is logged there under "resumes" with each change as [before, after],
    and warned about; returns the changes."""
    path = out / SETTINGS_FILE
    now = json.loads(config.model_dump_json(exclude={"auth_token"}))
    kept = json.loads(path.read_text()) if path.is_file() else {}
    before, resumes = kept.get("settings"), kept.get("resumes", [])
    changed = {k: [before.get(k), v] for k, v in now.items() if k not in PLUMBING and before.get(k) != v} \
        if before is not None and first > 0 else {}
    started = kept.get("machine") if before is not None and first > 0 else machine()
    if first > 0:
        resumes = resumes + [{"at_iteration": first, "changed": changed, "machine": machine()}]
    if changed:
        log.warning("resumed at iteration %d with other settings than before: %s", first,
                    ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    path.write_text(json.dumps({"settings": now, "machine": started, "resumes": resumes}, indent=2) + "\n")
    return changed


def machine() -> dict:
    """Where this start of the trainer runs, to read its wall times by (the services it calls may
    run elsewhere: their GetSpec says how they compute). `cpu_bfloat16`: whether this CPU computes
    bfloat16 natively, i.e. what a world model served here under `--autocast auto` (as `worldenv up`
    serves it) runs in: bfloat16 if so, else float32."""
    from worldenv.models.precision import native_bfloat16
    return {"at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "cores": os.cpu_count(), "cpu": torch.backends.cpu.get_cpu_capability(),
            "cpu_bfloat16": native_bfloat16("cpu"), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _append(path: pathlib.Path, row: dict) -> list[dict]:
    """Append `row` to the JSON lines at `path`, dropping rows of iterations at or after it (a
    resumed run continues the same record); returns every row."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    rows = [r for r in rows if r["iteration"] < row["iteration"]] + [row]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def log_row(out: pathlib.Path, row: dict) -> list[dict]:
    """Append the iteration's metrics row to metrics.jsonl; returns every row."""
    return _append(out / METRICS_FILE, row)


def log_groups(out: pathlib.Path, it: int, groups: list[dict]) -> None:
    """Append the iteration's groups (`Trainer.groups_seen`) to groups.jsonl: what a run and its
    control, drawing the same starts, did start by start (`worldenv compare` splits by task)."""
    _append(out / GROUPS_FILE, {"iteration": it, "groups": groups})
