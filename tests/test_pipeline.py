"""The pipeline's pieces that run without LIBERO: resumable stages with their records, the SFT
choice, and `worldenv starts keyframes` as a stage."""
from __future__ import annotations

import pytest

import toy_episodes
from worldenv.data.start_bank import StartBank
from worldenv.pipeline import stages
from worldenv.pipeline.models import PipelineConfig, choose, median, median_seed, models, world_model_dir


def test_choice_prefers_the_candidate_nearest_half_inside_the_window():
    assert choose({1: 0.4, 3: 0.53, 10: 0.97}) == 3
    assert choose({1: 0.1, 3: 0.9}) == 1     # none inside: the nearest 50 %, ties to fewer demos
    assert choose({1: 0.05, 5: 0.97, 10: 0.99}) == 1


def test_the_choice_reads_the_median_seed():
    rates = {1: {0: 0.2, 1: 0.6, 2: 0.5}, 10: {0: 0.9, 1: 0.7, 2: 0.95}}
    assert median([0.2, 0.6, 0.5]) == 0.5 and median([0.3, 0.1, 0.2, 0.4]) == 0.2   # even: the lower middle
    assert choose({k: median(list(r.values())) for k, r in rates.items()}) == 1
    assert median_seed(rates[1]) == 2 and median_seed({0: 0.4, 1: 0.4, 2: 0.1}) == 0


def test_a_stage_runs_once_records_itself_and_a_failure_raises(tmp_path):
    data = toy_episodes.write(tmp_path)
    args = ["starts", "keyframes", "--data", str(data), "--history", "2", "--out", str(tmp_path / "kf.npz")]
    first = stages.run(tmp_path, "keyframes", args)
    assert first.returncode == 0 and first.peak_rss_mb > 0 and len(StartBank.load(tmp_path / "kf.npz")) > 0
    (tmp_path / "kf.npz").unlink()
    again = stages.run(tmp_path, "keyframes", args)
    assert again == first and not (tmp_path / "kf.npz").exists(), "a finished stage is not run again"
    assert set(stages.records(tmp_path)) == {"keyframes"}
    with pytest.raises(RuntimeError, match="stage broken failed"):
        stages.run(tmp_path, "broken", ["starts", "keyframes", "--data", str(tmp_path / "nothing"), "--out", "x.npz"])
    assert "broken" not in stages.records(tmp_path)


def test_episode_ids_name_the_policy_not_a_path_of_the_recording_machine():
    from worldenv.data.chunks import policy_label
    assert policy_label("/root/.worldenv/pipeline/libero_object/sft_n1_s0/model") == "sft_n1_s0"
    assert policy_label("/data/runs/rl-7/policy/") == "policy"
    assert policy_label("expert") == "expert" and policy_label("127.0.0.1:50053") == "127.0.0.1:50053"


def test_the_later_stages_use_the_world_model_with_its_proprio_dynamics_once_that_stage_ran(tmp_path, monkeypatch):
    """world_model -> world_model_dynamics (--init the first, --proprio-dynamics) -> the reflector's replays."""
    ran = []
    monkeypatch.setattr(stages, "run", lambda root, name, args, log=None: ran.append((name, args)))
    models(PipelineConfig(home=str(tmp_path)), tmp_path)
    names = [name for name, _ in ran]
    assert names == ["world_model", "world_model_dynamics", "reflector"]
    dynamics = dict(ran)["world_model_dynamics"]
    assert "--proprio-dynamics" in dynamics and dynamics[dynamics.index("--init") + 1] == str(tmp_path / "world_model" / "model")
    assert world_model_dir(tmp_path) == tmp_path / "world_model" / "model"      # that stage has not run yet
    (tmp_path / "world_model_dynamics" / "model").mkdir(parents=True)
    (tmp_path / "world_model_dynamics" / "model" / "config.json").write_text("{}")
    assert world_model_dir(tmp_path) == tmp_path / "world_model_dynamics" / "model"
    ran.clear()
    models(PipelineConfig(home=str(tmp_path), proprio_dynamics_steps=0), tmp_path)
    assert [name for name, _ in ran] == ["world_model", "reflector"]
