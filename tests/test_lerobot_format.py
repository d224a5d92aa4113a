"""LeRobotDataset v3.0 interop: recorded and imagined episodes exported with `worldenv export
lerobot` load with LeRobot's own `LeRobotDataset` (in the LeRobot venv) with the same frames,
actions and task text; a LeRobot directory (ours, or one row per control step as LeRobot
records) reads back as chunked training data, and `worldenv train policy` trains on it."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import toy_episodes
from worldenv import cli
from worldenv.data import chunks, lerobot, mp4
from worldenv.data.episodes import EpisodeStore, synthetic_episode

ROOT = pathlib.Path(__file__).resolve().parents[1]
LEROBOT_PYTHON = pathlib.Path(os.environ.get("WORLDENV_LEROBOT_PYTHON") or ROOT / ".venv-lerobot" / "bin" / "python")
H264_TOLERANCE = 4.0   # mean absolute grey-level error of yuv420p H.264 at crf 18 on the toy frames


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_episodes.write(tmp_path_factory.mktemp("toy"), successes=3, failures=2)


def _export(tmp_path: pathlib.Path, data: pathlib.Path, codec: str) -> pathlib.Path:
    out = tmp_path / f"lerobot_{codec}"
    assert cli.main(["export", "lerobot", str(out), "--data", str(data), "--codec", codec]) == 0
    return out


def _load_with_lerobot(root: pathlib.Path, tmp_path: pathlib.Path) -> dict:
    if not LEROBOT_PYTHON.is_file():
        pytest.skip(f"LeRobot's reader runs in its own venv, absent at {LEROBOT_PYTHON}: "
                    "run `bash scripts/install-lerobot.sh` (lerobot 0.4.4 pins torch < 2.11)")
    out = tmp_path / "loaded.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([str(LEROBOT_PYTHON), str(ROOT / "tests" / "lerobot_load.py"), str(root), str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("codec", ["lossless", "h264"])
def test_an_export_loads_with_lerobots_own_dataset_class(toy, tmp_path, codec):
    episodes = chunks.load([toy])
    loaded = _load_with_lerobot(_export(tmp_path, toy, codec), tmp_path)
    frames = np.concatenate([e.frames for e in episodes])                      # (N, H, W, 3): every row's frame
    actions = np.concatenate([np.concatenate([e.actions, np.zeros_like(e.actions[:1])]) for e in episodes])
    assert int(loaded["num_episodes"]) == len(episodes) and list(loaded["camera_keys"]) == [lerobot.IMAGE_KEY]
    assert loaded["frames"].shape == frames.shape
    error = np.abs(loaded["frames"].astype(float) - frames).mean()
    assert error == 0 if codec == "lossless" else error < H264_TOLERANCE, error
    np.testing.assert_array_equal(loaded["actions"], actions)
    np.testing.assert_array_equal(loaded["state"], np.concatenate([e.proprio for e in episodes]))
    assert set(loaded["tasks"]) == {toy_episodes.INSTRUCTION}
    np.testing.assert_array_equal(loaded["p_done"], np.concatenate([e.success for e in episodes]).astype(float))


def test_imagined_episodes_from_the_store_round_trip_with_p_done_and_success(tmp_path, redis_client, redis_url):
    store = EpisodeStore(redis_client, prefix="lerobot-test")
    imagined = [synthetic_episode(f"ep{i}", steps=3 + i, image_size=16, seed=i, run_id="r1") for i in range(3)]
    for episode in [*imagined, synthetic_episode("other", steps=2, image_size=16, run_id="r2")]:
        store.put(episode)
    root = tmp_path / "imagined"
    assert cli.main(["export", "lerobot", str(root), "--imagined", "--redis-url", redis_url, "--prefix", "lerobot-test",
                     "--run-id", "r1", "--codec", "lossless"]) == 0
    back = chunks.load([root])
    assert len(back) == 3
    for before, after in zip(imagined, back):
        np.testing.assert_array_equal(after.frames, before.frames)
        np.testing.assert_array_equal(after.actions, before.actions)
        np.testing.assert_array_equal(after.success[1:], before.p_done > 0.5)
        assert after.instruction == before.instruction and after.lengths.tolist() == [8] * before.steps
    table = pq.read_table(root / "data/chunk-000/file-000.parquet").to_pydict()
    np.testing.assert_allclose(table["p_done"][1:4], imagined[0].p_done, rtol=1e-6)
    np.testing.assert_allclose(table["next.reward"][:3], imagined[0].p_done, rtol=1e-6)
    kinds = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").column("kind").to_pylist()
    assert kinds == ["imagined"] * 3
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == sum(e.steps + 1 for e in imagined)


def _per_step_dataset(root: pathlib.Path, steps: int = 19) -> tuple[np.ndarray, np.ndarray]:
    """A one-row-per-control-step dataset as LeRobot records LIBERO: action (7,), no success column."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (steps, 16, 16, 3), dtype=np.uint8)
    actions = rng.standard_normal((steps, 7)).astype(np.float32)
    with mp4.Writer(root / "videos" / lerobot.IMAGE_KEY / "chunk-000/file-000.mp4", 10, 16, 16, "lossless") as video:
        span = video.append(frames)
    data = {lerobot.STATE_KEY: rng.standard_normal((steps, 8)).astype(np.float32).tolist(), "action": actions.tolist(),
            "timestamp": (np.arange(steps) / 10).tolist(), "frame_index": list(range(steps)),
            "episode_index": [0] * steps, "index": list(range(steps)), "task_index": [0] * steps}
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(data), root / "data/chunk-000/file-000.parquet")
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    video = f"videos/{lerobot.IMAGE_KEY}"
    pq.write_table(pa.Table.from_pylist([{"episode_index": 0, "tasks": ["open the drawer"], "length": steps,
                                          f"{video}/chunk_index": 0, f"{video}/file_index": 0,
                                          f"{video}/from_timestamp": span[0], f"{video}/to_timestamp": span[1]}]),
                   root / "meta/episodes/chunk-000/file-000.parquet")
    lerobot.write_tasks(root, ["open the drawer"])
    features = {lerobot.IMAGE_KEY: {"dtype": "video", "shape": [16, 16, 3]},
                lerobot.STATE_KEY: {"dtype": "float32", "shape": [8]}, "action": {"dtype": "float32", "shape": [7]}}
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": 10, "features": features,
                                                     "video_path": lerobot.VIDEO_PATH, "data_path": lerobot.DATA_PATH}))
    return frames, actions


def test_a_per_step_lerobot_set_is_cut_into_chunks(tmp_path):
    frames, actions = _per_step_dataset(tmp_path / "steps")
    (episode,) = chunks.load([tmp_path / "steps"], k=8)
    assert episode.steps.tolist() == [0, 8, 16, 18] and episode.lengths.tolist() == [8, 8, 2]
    np.testing.assert_array_equal(episode.frames, frames[[0, 8, 16, 18]])
    np.testing.assert_array_equal(episode.actions[2, :2], actions[16:18])
    assert not episode.actions[2, 2:].any() and episode.success.tolist() == [False, False, False, True]
    assert episode.instruction == "open the drawer"


def test_train_policy_runs_on_an_imported_dataset(toy, tmp_path, capsys):
    root = _export(tmp_path, toy, "h264")
    model = json.dumps({"image_size": 32, "width": 16})
    assert cli.main(["train", "policy", "--data", str(root), "--out", str(tmp_path / "run"), "--steps", "4",
                     "--batch-size", "4", "--eval-every", "2", "--model", model]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])           # the train summary, after the export line
    assert summary["steps"] == 4 and summary["train_samples"] > 0
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_export_refuses_bad_input_by_flag(toy, tmp_path, capsys):
    assert cli.main(["export", "lerobot", str(tmp_path / "x")]) == 2
    assert "--data FILES or --imagined" in capsys.readouterr().err
    root = _export(tmp_path, toy, "lossless")
    assert cli.main(["export", "lerobot", str(root), "--data", str(toy)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1", "features": {}}))
    with pytest.raises(ValueError, match="codebase_version 'v2.1'"):
        chunks.load([root])



def test_the_reflector_trains_and_the_world_model_draws_the_same_transitions_from_an_import(toy, tmp_path):
    from worldenv.train import world_model
    root = _export(tmp_path, toy, "lossless")
    model = json.dumps({"image_size": 32, "width": 16, "instruction_encoder": "hashed", "max_frames": 4})
    assert cli.main(["train", "reflector", "--data", str(root), "--out", str(tmp_path / "run"), "--steps", "2",
                     "--batch-size", "4", "--eval-every", "2", "--model", model]) == 0
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    imported, recorded = (world_model.transitions(chunks.load([p]), history=2) for p in (root, toy))
    for name in ("history", "actions", "next_frame", "next_proprio"):
        np.testing.assert_array_equal(getattr(imported, name), getattr(recorded, name))
