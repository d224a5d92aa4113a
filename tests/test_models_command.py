"""`worldenv models inspect|build|attach-head` on real (tiny) checkpoints of the paper-scale archs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from worldenv import cli, models
from worldenv.models.roles import Observations


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["models", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_build_then_inspect_reports_the_layout_and_the_published_part(tmp_path, capsys):
    code, out, _ = run(capsys, "build", str(tmp_path / "p"), "--arch", "openvla-oft", "--size", "tiny")
    assert code == 0 and json.loads(out)["arch"] == "openvla-oft"
    code, out, _ = run(capsys, "inspect", str(tmp_path / "p"))
    info = json.loads(out)
    assert code == 0 and (info["role"], info["chunk_length"], info["action_dim"]) == ("policy", 8, 7)
    assert 0 < info["publishable_parameters"] < info["parameters"]       # LoRA + heads, not the backbone
    assert {"worldenv.json", "dataset_statistics.json", "config.json"} <= set(info["files"])
    assert any(f.startswith("action_head--") for f in info["files"])


def test_attach_head_completes_an_oft_directory_without_our_files(tmp_path, capsys):
    models.build("openvla-oft", size="tiny", image_size=32).save_pretrained(tmp_path / "oft")
    (tmp_path / "oft" / "worldenv.json").unlink()
    for f in (tmp_path / "oft").glob("scale_head--*"):
        f.unlink()
    code, _, err = run(capsys, "inspect", str(tmp_path / "oft"))
    assert code == 2 and "worldenv.json" in err
    code, out, _ = run(capsys, "attach-head", str(tmp_path / "oft"), "--arch", "openvla-oft", "--scale", "0.05",
                       "--options", json.dumps({"size": "tiny", "image_size": 32}))
    assert code == 0 and json.loads(out)["head"].endswith("scale_head--0_checkpoint.pt")
    policy = models.load(tmp_path / "oft", role="policy")
    obs = Observations(np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 8), np.float32), ["open the drawer"] * 2)
    scale = policy.act(obs, deterministic=True).scale
    assert np.allclose(scale, 0.05, rtol=1e-4), "b starts at --scale (neutral statistics: env units = normalised)"


def test_attach_head_puts_a_reward_head_on_a_llava_directory(tmp_path, capsys):
    models.build("llava-reward", size="tiny").save_pretrained(tmp_path / "llava")
    (tmp_path / "llava" / "worldenv.json").unlink()
    (tmp_path / "llava" / "reward_head.safetensors").unlink()
    code, out, _ = run(capsys, "attach-head", str(tmp_path / "llava"), "--arch", "llava-reward",
                       "--options", json.dumps({"size": "tiny", "max_frames": 8}))
    assert code == 0
    code, out, _ = run(capsys, "inspect", str(tmp_path / "llava"))
    info = json.loads(out)
    assert code == 0 and info["arch"] == "llava-reward" and info["max_frames"] == 8


@pytest.mark.parametrize("argv, named", [
    (["build", "{tmp}/x", "--arch", "no-such-arch"], "no-such-arch"),
    (["attach-head", "{tmp}", "--arch", "llava-reward"], "config.json"),
    (["attach-head", "{tmp}", "--arch", "llava-reward", "--options", "[1]"], "--options"),
])
def test_bad_requests_exit_2_naming_what_is_wrong(tmp_path, capsys, argv, named):
    code, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and named in err, err
