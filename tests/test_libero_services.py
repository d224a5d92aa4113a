"""LIBERO against our own services: eval with a remote Policy server and Reflector termination,
and self-exploration from a remote policy - the two issues' seams, CI-sized."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("libero")
pytest.importorskip("robosuite")

from servers import serving  # noqa: E402
from worldenv import cli  # noqa: E402
from worldenv.data import chunks, hdf5  # noqa: E402
from worldenv.sim import env as env_mod  # noqa: E402

pytestmark = pytest.mark.libero
SUITE, TASK = "libero_object", 0


@pytest.fixture(scope="module")
def policy_server():
    with serving("policy") as server:
        yield server.address


def _judged_eval(policy: str, out, max_steps: int, *flags: str) -> dict:
    """One episode judged by a fresh served (untrained) reflector at eta 0.01 -> its eval.json."""
    with serving("reflector") as reflector:
        assert cli.main(["eval", "--policy", policy, "--suite", SUITE, "--tasks", str(TASK), "--episodes-per-task", "1",
                         "--max-steps", str(max_steps), "--env-processes", "1", "--videos", "0", "--termination",
                         "reflector", "--reflector", reflector.address, "--eta", "0.01", *flags, "--out", str(out)]) == 0
    return json.loads((out / "eval.json").read_text())


def test_eval_remote_policy_with_reflector_termination(policy_server, tmp_path):
    # eta 0.01: the (untrained) reflector's p(done) ~ 0.5 ends each episode at its first judgement
    report = _judged_eval(policy_server, tmp_path / "eval", 32)
    assert report["termination"] == "reflector" and report["suite_result"]["episodes"] == 1
    (episode,) = report["episodes"]
    assert episode["outcome"] == "reflector" and len(episode["p_done"]) == 1 and 0 <= episode["p_done"][0] <= 1
    assert report["suite_result"]["successes"] == 0  # random policy: LIBERO's check says no

    # with the grasp gate the same verdicts count only once the real gripper held something: the
    # random policy holds nothing, so every chunk is judged and the episode runs to the horizon
    report = _judged_eval(policy_server, tmp_path / "gated", 24, "--grasp-gate", "0.0175")
    (episode,) = report["episodes"]
    assert report["grasp_gate"] == 0.0175 and "grasp gate 1.75 cm" in (tmp_path / "gated" / "eval.md").read_text()
    assert episode["outcome"] == "horizon" and len(episode["p_done"]) == 3 and min(episode["p_done"]) > 0.01

    # --confirm 2: the same verdicts end the episode only at the second chunk in a row that says done
    report = _judged_eval(policy_server, tmp_path / "confirmed", 32, "--confirm", "2")
    (episode,) = report["episodes"]
    assert report["confirm"] == 2 and "2 verdicts in a row" in (tmp_path / "confirmed" / "eval.md").read_text()
    assert episode["outcome"] == "reflector" and len(episode["p_done"]) == 2 and episode["steps"] == 16


def test_explore_with_a_remote_policy(policy_server, tmp_path):
    out = tmp_path / "explore"
    assert cli.main(["explore", "--policy", policy_server, "--noise", "laplace", "--suite", SUITE,
                     "--tasks", str(TASK), "--episodes-per-task", "1", "--max-steps", "16", "--env-processes", "1",
                     "--out", str(out)]) == 0
    (path,) = (out / SUITE).glob("*_demo.hdf5")
    (ep,) = hdf5.read(path).episodes
    # the recording starts at the init state: 10 settle no-ops, then the policy's 16 steps
    assert len(ep) == 10 + 16 and ep.attrs["settle_steps"] == 10 and (ep.actions[:10] == env_mod.NOOP).all()
    assert ep.log_probs.shape == (2,) and ep.attrs["success"] is False
    assert chunks.chunk(ep, "x").chunks == 2
