"""The real job at a tiny budget: `worldenv up` in a subprocess, `worldenv rollout` of 16
episodes, and the episodes visible over REST with frames and video."""
import io
import json
import re
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from worldenv.data.start_bank import StartBank


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("worldenv-home")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["WORLDENV_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "worldenv.cli", "up", "--free-ports", "--batch-size", "8"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = home / "up.json"
    deadline = time.monotonic() + 240
    while not state.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"worldenv up did not come up:\n{proc.stdout.read()}")
        time.sleep(0.2)
    yield json.loads(state.read_text()), env
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped" in out and "(embedded)" in out


def test_rollout_of_16_episodes_visible_over_rest(stack):
    described, env = stack
    env = dict(env, REDIS_URL=described["redis_url"])
    out = subprocess.run([sys.executable, "-m", "worldenv.cli", "rollout", "--episodes", "16", "--horizon", "6",
                          "--run-id", "e2e", "--eta", "0.9"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "16 episodes" in out.stdout and "imagined steps/s" in out.stdout and "p99" in out.stdout
    api = described["debug-api"]
    listing = httpx.get(f"{api}/episodes", params={"run_id": "e2e", "limit": 50}).json()
    assert listing["total"] == 16
    episode = listing["items"][0]
    detail = httpx.get(f"{api}/episodes/{episode['id']}").json()
    assert detail["steps"] >= 1 and detail["policy_version"] == 1
    # the start bank the stack serves, as `up --rollout` uses: the shipped keyframes, not synthetic starts
    assert described["starts"] and detail["start_id"] in StartBank.load(described["starts"]).ids
    assert "enqueued 16 episodes" in out.stdout and "synthetic" not in out.stdout
    png = httpx.get(f"{api}/episodes/{episode['id']}/frames/1.png")
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (64, 64)
    gif = httpx.get(f"{api}/episodes/{episode['id']}/video")
    assert gif.status_code == 200 and gif.content[:4] == b"GIF8"
    rewards = httpx.get(f"{api}/episodes/{episode['id']}/rewards").json()
    assert len(rewards["p_done"]) == detail["steps"]
    assert httpx.get(f"{api}/episodes/nope").status_code == 404
    page = httpx.get(f"{api}/episodes/{episode['id']}/view")
    assert page.status_code == 200 and "<svg" in page.text


def test_rollout_without_a_stack_fails_clearly(tmp_path):
    env = dict(os.environ, WORLDENV_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "worldenv.cli", "rollout", "--episodes", "0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--episodes" in out.stderr


def test_committed_episodes_survive_a_restart_of_the_stack(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["WORLDENV_HOME"] = str(tmp_path)
    first = subprocess.run([sys.executable, "-m", "worldenv.cli", "up", "--free-ports", "--rollout", "4", "--exit"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "4 episodes" in first.stdout, first.stdout + first.stderr
    proc = subprocess.Popen([sys.executable, "-m", "worldenv.cli", "up", "--free-ports", "--workers", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "up.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "second `worldenv up` did not come up"
            time.sleep(0.2)
        api = json.loads((tmp_path / "up.json").read_text())["debug-api"]
        assert httpx.get(f"{api}/episodes").json()["total"] == 4
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def test_up_post_trains_the_shipped_policy_in_imagination_and_shows_the_run(tmp_path):
    """The README's main job at a tiny budget: `up --rl` with the shipped checkpoints."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["WORLDENV_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "worldenv.cli", "up", "--free-ports", "--rl", "2", "--rl-groups", "1",
                          "--group-size", "2", "--horizon", "2", "--exit"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.search(r"RL in imagination: 2 iterations, (\d) updates, policy version 2 -> (\d+)", out.stdout)
    assert found, out.stdout
    updates, version = int(found[1]), int(found[2])
    assert version == 2 + updates, "each update is one published version after the start sync"
    assert "mean reward of the rollouts: first iteration" in out.stdout
    (run,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1] and (run / "curves.png").is_file()
    assert sum(not r.get("skipped") for r in rows) == updates  # a group without reward spread skips its update
    assert f"/runs/{run.name}/view" in out.stdout
