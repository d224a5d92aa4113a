"""The experiment's pieces that run without LIBERO: imagined success from given start states
with real (tiny) models, the paired comparison and the reward-hacking gap on evaluation
records, the report, settings and resumable in-process stages."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldenv import models
from worldenv.data.start_bank import synthetic_bank
from worldenv.measure import imagined
from worldenv.pipeline import experiment, experiment_markdown, experiment_report, stages


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return models.build("policy"), models.build("world_model"), models.build("reflector")


def test_imagined_rollouts_one_per_start_and_stop_at_eta(tiny):
    bank = synthetic_bank(5)
    bank.ids[:] = [f"libero_object/0/{i}" for i in range(5)]
    never = imagined.rollouts(*tiny, bank, horizon=3, eta=0.999999, batch=2)
    assert [e["id"] for e in never] == bank.ids
    assert all(e["chunks"] == 3 and not e["done"] and 0 <= e["p_done"] <= 1 for e in never)
    always = imagined.rollouts(*tiny, bank, horizon=3, eta=1e-9, batch=4)
    assert all(e["chunks"] == 1 and e["done"] for e in always)
    again = imagined.rollouts(*tiny, bank, horizon=3, eta=0.999999, batch=5)
    assert [e["p_done"] for e in again] == pytest.approx([e["p_done"] for e in never], abs=1e-3), \
        "deterministic, and batching does not change an episode"


def test_objective_on_a_fixed_draw_is_reproducible_and_sampled_as_seeded(tiny):
    bank = synthetic_bank(12)
    tasks = lambda b: [i.split("/")[1] for i in b.ids]  # noqa: E731
    draw = imagined.fixed_draw(bank, 2, seed=5)
    assert sorted(tasks(draw)) == sorted(t for t in set(tasks(bank)) for _ in range(2))
    assert draw.ids == imagined.fixed_draw(bank, 2, seed=5).ids, "one fixed draw"
    assert draw.ids == [i for i in bank.ids if i in draw.ids], "in bank order"
    assert len(imagined.fixed_draw(bank, 100)) == len(bank), "a task with fewer entries gives them all"
    first = imagined.objective(*tiny, draw, horizon=3, eta=0.999999, seed=1)
    again = imagined.objective(*tiny, draw, horizon=3, eta=0.999999, seed=1)
    for mode in ("mean", "sampled"):
        assert [e["id"] for e in first[mode]] == draw.ids
        assert [e["p_done"] for e in again[mode]] == pytest.approx([e["p_done"] for e in first[mode]], abs=1e-6)
    assert [e["p_done"] for e in first["sampled"]] != pytest.approx([e["p_done"] for e in first["mean"]], abs=1e-6)
    batched = imagined.rollouts(*tiny, draw, 3, 0.999999, deterministic=False, batch=2, seed=1)
    assert [e["p_done"] for e in batched] == pytest.approx([e["p_done"] for e in first["sampled"]], abs=1e-3), \
        "per-episode seeds: the batch does not change a sampled episode"


def _eval(successes: list[bool], steps: int = 40) -> dict:
    return {"episodes": [{"id": f"libero_object/0/{i}", "success": s, "steps": steps, "outcome": "success" if s else "horizon"}
                         for i, s in enumerate(successes)],
            "tasks": {"0": {"instruction": "pick", "successes": sum(successes), "episodes": len(successes),
                            "rate": sum(successes) / len(successes), "ci95": [0.1, 0.9]}},
            "suite_result": {"successes": sum(successes), "episodes": len(successes), "rate": sum(successes) / len(successes),
                             "ci95": [0.1, 0.9]}}


def test_comparison_and_gap_by_hand():
    sft, rl = _eval([True, False, False, False]), _eval([True, True, True, False])
    c = experiment_report.comparison(sft, rl)
    assert (c["mcnemar"]["only_a"], c["mcnemar"]["only_b"]) == (0, 2)
    assert c["bootstrap"]["difference"] == pytest.approx(0.5)
    assert c["by_task"] == {"0": {"only_a": 0, "only_b": 2, "p_value": 0.5, "n": 4, "a": 1, "b": 3}}
    point = {"iteration": 10, "real": sft, "imagined": {"episodes": [
        {"id": f"libero_object/0/{i}", "done": d} for i, d in enumerate([True, True, False, False])]}}
    g = experiment_report.gap(point)
    assert (g["real"], g["imagined"], g["imagined_done_real_failed"], g["real_success_imagined_not"]) == (0.25, 0.5, 1, 0)
    assert experiment_report.sim_steps(sft) == 4 * 40 + 4 * 10       # policy steps + settle no-ops


def test_report_renders_the_figures(tmp_path):
    root = tmp_path / "exp"
    sft, rl = _eval([True, False, False, False]), _eval([True, True, True, False])
    sampled_rl = _eval([True, False])                                       # the first 2 init states, sampled
    for name, ev in (("eval_sft", sft), ("eval_rl", rl), ("curve/real_0000", sft), ("sampled_rl", sampled_rl)):
        (root / name).mkdir(parents=True)
        (root / name / "eval.json").write_text(json.dumps(ev))
    (root / "curve" / "imagined_0000.json").write_text(json.dumps(
        {"episodes": [{"id": f"libero_object/0/{i}", "done": True} for i in range(4)]}))
    (root / "rl").mkdir()
    (root / "rl" / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "reward_mean": 0.2, "done_fraction": 0.3,
                                                           "episode_length": 20, "zero_advantage_groups": 0.5,
                                                           "clip_fraction": 0.1, "approx_kl": 0.01,
                                                           "imagined_steps_per_s": 40}) + "\n")
    config = experiment.ExperimentConfig(home=str(root), report=str(tmp_path / "r" / "experiment.md"), iterations=1,
                                         curve_every=5, table4=False)
    path = experiment_report.write(config, root)
    text = path.read_text()
    assert "**RL - SFT: +50.0 points**" in text and "McNemar exact p = 0.5" in text
    assert text.count("| 0 / 2, p = 0.5 |") == 2, "the flips of task 0 and of all, in the main table"
    assert "| 0 | 25 % (4 ep.)" in text and "+75 pts" in text          # the reward-hacking gap at iteration 0
    assert "| RL in imagination | 0 | **0** |" in text
    assert (tmp_path / "r" / "experiment-curve.png").is_file()
    assert experiment_markdown.command(config).startswith("worldenv experiment --home")
    assert "| RL | 2/2 = 100 % | 1/2 = 50 % | 0.50 |" in text           # sampled vs the mean on the same init states
    assert "| sampled_rl | 2 |" in text                                    # its simulator steps are in the budget


def test_every_rl_seed_is_compared_with_sft_and_their_mean_by_hand(tmp_path):
    """--extra-seeds: each seed's gain on the same init states, and the mean of the seeds'
    per-init-state success minus SFT's (4 init states: SFT 1, seed 0 3, seed 1 1, seed 2 not run)."""
    root = tmp_path / "exp"
    runs = {"eval_sft": [True, False, False, False], "eval_rl": [True, True, True, False],
            "eval_rl_s1": [False, True, False, False]}
    for name, successes in runs.items():
        (root / name).mkdir(parents=True)
        (root / name / "eval.json").write_text(json.dumps(_eval(successes)))
    config = experiment.ExperimentConfig(home=str(root), report=str(tmp_path / "r" / "experiment.md"), iterations=1,
                                         table4=False, extra_seeds="1,2")
    results = experiment_report.collect(config, root)
    seeds = results["seeds"]
    assert list(seeds["per_seed"]) == [0, 1] and seeds["missing"] == [2] and seeds["n"] == 4
    assert seeds["per_seed"][0]["bootstrap"]["difference"] == pytest.approx(0.5)
    assert seeds["per_seed"][1]["bootstrap"]["difference"] == pytest.approx(0.0)
    assert seeds["mean"]["difference"] == pytest.approx((0.5 + 1 + 0.5 + 0) / 4 - 0.25)    # seeds' mean - SFT
    assert seeds["spread"] == pytest.approx(0.5)
    text = experiment_report.write(config, root).read_text()
    assert "| 1 | 1/4 = 25 % | 1 | +0.0" in text and "**Mean over 2 seeds: RL - SFT +25.0 points**" in text
    assert "Not finished yet: seed 2." in text and "| eval_rl_s1 | 4 |" in text     # its steps are in the budget
    assert experiment_markdown.seeds_section(experiment.ExperimentConfig(), None) == []


def test_objective_rows_are_read_per_snapshot_and_seed(tmp_path):
    root = tmp_path / "exp"
    (root / "objective").mkdir(parents=True)
    record = lambda done: [{"id": f"libero_object/{t}/1/x", "done": d} for t, d in zip((0, 0, 1, 1), done)]  # noqa: E731
    for name, mean, sampled in (("0000", [False, False, True, False], [False, True, True, False]),
                                ("rl_s1", [True, False, True, True], [False, False, False, False])):
        (root / "objective" / f"{name}.json").write_text(json.dumps({"mean": record(mean), "sampled": record(sampled)}))
    config = experiment.ExperimentConfig(home=str(root), report=str(tmp_path / "r" / "experiment.md"), iterations=1,
                                         curve_every=5, table4=False, extra_seeds="1")
    rows = experiment_report.objective_results(config, root)
    assert [(r["label"], r["mean"], r["sampled"], r["tasks"]) for r in rows] == [
        ("seed 0, iteration 0", 1, 2, {"0": 0, "1": 1}), ("seed 1, iteration 1", 3, 0, {"0": 1, "1": 2})]
    text = "\n".join(experiment_markdown.objective_section(config, rows))
    assert "2 start states per task" in text and "| seed 1, iteration 1 | 3/4 = 75 % | 0/4 = 0 % | 1 / 2 |" in text


def test_seed_spread_is_printed_from_the_provenance():
    prov = {"sft_seeds": [{"seed": 0, "episodes": 60, "successes": 26}, {"seed": 1, "episodes": 60, "successes": 21},
                          {"seed": 2, "episodes": 60, "successes": 19}]}
    text = "\n".join(experiment_markdown.seed_spread(prov))
    assert "seed 0: 26/60 = 43 %" in text and "max - min **12 points**" in text
    assert experiment_markdown.seed_spread({}) == []


def test_settings_name_the_field():
    with pytest.raises(ValueError, match="give all four or none"):
        experiment.ExperimentConfig(policy_addr="127.0.0.1:1")
    with pytest.raises(ValueError, match="--demos: only with --models pipeline"):
        experiment.ExperimentConfig(demos=5)
    for bad, message in (("0", "each seed once"), ("1,1", "each seed once"), ("x", "comma-separated"),
                         ("-1", ">= 0")):
        with pytest.raises(ValueError, match=f"--extra-seeds: .*{message}"):
            experiment.ExperimentConfig(extra_seeds=bad)
    assert experiment.ExperimentConfig(seed=3, extra_seeds="0, 1").seeds == [3, 0, 1]
    assert experiment.ExperimentConfig(iterations=25, curve_every=10).curve_points == [0, 10, 20, 25]


def test_inline_stage_runs_once(tmp_path):
    calls = []
    stages.inline(tmp_path, "measure", lambda: calls.append(1))
    stages.inline(tmp_path, "measure", lambda: calls.append(1))
    assert calls == [1] and stages.finished(tmp_path, "measure")
    assert stages.records(tmp_path)["measure"].returncode == 0


@pytest.mark.parametrize("auth_token", [None, "secret"])
def test_stage_argv_is_built_from_typed_settings_and_parses_back_through_the_cli(tmp_path, auth_token):
    """The RL and Dyna stages' command lines are settings objects turned into flags; the real
    `worldenv` parser reads them back into the same settings, so a renamed flag fails here."""
    from worldenv import cli, config as settings
    from worldenv.commands import flags
    from worldenv.rl.settings import RLConfig

    exp = experiment.ExperimentConfig(home=str(tmp_path), iterations=7, groups=3, lr=2e-6, auth_token=auth_token,
                                      replay_open=0.25)
    addresses = {"redis": "redis://10.0.0.1:6379/0", "policy": "10.0.0.2:50053"}
    built = experiment.rl_config(exp, addresses, tmp_path / "sft", tmp_path / "starts.npz", tmp_path / "rl", 7, "x-rl")
    line = ["train", "rl", *settings.argv(built)]
    args = cli.build_parser().parse_args(line)
    assert flags.settings_from(RLConfig, args) == built
    assert built.redis_url == addresses["redis"] and built.snapshot_every == exp.curve_every and built.lr == 2e-6
    assert built.replay_open == 0.25 and built.seed == exp.seed
    assert experiment.rl_config(exp, addresses, tmp_path / "sft", tmp_path / "starts.npz", tmp_path / "rl_s2", 7,
                                "x-rl_s2", seed=2).seed == 2
    for role in ("world_model", "reflector"):
        tune = experiment.tune_config(exp, role, tmp_path / "explore", tmp_path / role, tmp_path / "out", 300)
        args = cli.build_parser().parse_args(["train", role.replace("_", "-"), *settings.argv(tune)])
        assert flags.settings_from(type(tune), args) == tune and tune.warmup == 0 and tune.eval_every == 60
    with pytest.raises(SystemExit):   # what a renamed flag does: the parser refuses the stage's line
        cli.build_parser().parse_args([*line, "--no-such-flag", "1"])


def test_objective_command_compares_policies_and_scales_on_one_draw(tiny, tmp_path, capsys):
    from worldenv import cli
    policy, world_model, reflector = tiny
    dirs = {}
    for name, model in (("policy", policy), ("world_model", world_model), ("reflector", reflector)):
        model.save_pretrained(tmp_path / name)
        dirs[name] = str(tmp_path / name)
    other = models.build("policy")
    other.save_pretrained(tmp_path / "other")
    bank = synthetic_bank(6)
    bank.ids[:] = [f"libero_object/{i % 2}/{i}" for i in range(6)]
    bank.save(tmp_path / "starts.npz")
    args = ["objective", "--policies", f"{dirs['policy']},{tmp_path / 'other'}", "--starts", str(tmp_path / "starts.npz"),
            "--world-model", dirs["world_model"], "--reflector", dirs["reflector"], "--per-task", "2",
            "--horizon", "2", "--eta", "0.999999", "--exploration-scales", "0.02,0.5", "--samples", "2",
            "--out", str(tmp_path / "objective.json")]
    assert cli.main(args) == 0
    result = json.loads((tmp_path / "objective.json").read_text())
    rows = result["rows"]
    assert [(r["policy"].split("/")[-1], r["scale"]) for r in rows] == [
        ("policy", 0.02), ("policy", 0.5), ("other", 0.02), ("other", 0.5)]
    assert result["starts"] == 4 and all(len(r["mean"]) == 4 and len(r["sampled"]) == 2 for r in rows)
    assert rows[0]["mean"] == rows[1]["mean"], "the mean does not depend on the exploration scale"
    p = lambda episodes: [e["p_done"] for e in episodes]  # noqa: E731
    assert p(rows[0]["sampled"][0]) != pytest.approx(p(rows[1]["sampled"][0]), abs=1e-6), "the scale is restarted"
    assert p(rows[0]["sampled"][0]) != pytest.approx(p(rows[0]["sampled"][1]), abs=1e-6), "K seeds, K draws"
    again = imagined.rollouts(models.load(dirs["policy"], role="policy"), world_model, reflector,
                              imagined.fixed_draw(bank, 2, experiment.OBJECTIVE_DRAW), 2, 0.999999)
    assert p(rows[0]["mean"]) == pytest.approx(p(again), abs=1e-3), "the experiment's fixed draw"
    out = capsys.readouterr().out
    assert "sampled/mean" in out and out.count("vs ") == 2 and "McNemar" in out
    assert out.count("per task, only the first / only this: 0: ") == 2 and " 1: " in out, "discordant starts per task"


@pytest.mark.parametrize("flag,value,message", [("--exploration-scales", "0.1,x", "comma-separated numbers"),
                                                ("--exploration-scales", "0.1,0", "must be > 0"),
                                                ("--policies", "/no/such/policy", "--policies"),
                                                ("--samples", "0", "--samples: must be >= 1"),
                                                ("--against", "nope", "--against: 'nope' names 0 of the policies")])
def test_objective_command_names_the_bad_flag(flag, value, message, capsys):
    from worldenv import cli
    try:
        code = cli.main(["objective", flag, value])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err


def test_the_sampled_stage_samples_and_eval_refuses_a_scale_without_sampling(tmp_path, capsys):
    """The experiment's sampled-actions evaluation parses through the real `worldenv eval` parser
    into a run that samples at the exploration scale; a scale without --sample (which the
    sampled stage once passed, evaluating the mean twice) is refused, naming the flag."""
    from worldenv import cli
    from worldenv.commands import flags
    from worldenv.sim.policy_runs import EvalConfig
    exp = experiment.ExperimentConfig(home=str(tmp_path), exploration_scale=0.1)
    line = ["eval", "--policy", "expert", *experiment.sampled_args(exp), "--out", str(tmp_path / "e")]
    built = flags.settings_from(EvalConfig, cli.build_parser().parse_args(line))
    assert built.sample and built.exploration_scale == 0.1
    assert cli.main(["eval", "--policy", "expert", "--exploration-scale", "0.1", "--out", str(tmp_path / "e")]) == 2
    assert "--exploration-scale: only with --sample" in capsys.readouterr().err


def test_table4_confirms_the_reflectors_verdict_when_asked_and_says_so(tmp_path):
    """Table 4's stage line parses through the real `worldenv eval` parser: the reflector decides
    termination, after --table4-confirm chunks in a row (1, the paper's rule, passes no flag), and
    the report's Table 4 names the rule its evaluations ran with."""
    from worldenv import cli
    from worldenv.commands import flags
    from worldenv.sim.policy_runs import EvalConfig
    for confirm in (1, 2):
        exp = experiment.ExperimentConfig(home=str(tmp_path), table4_confirm=confirm, grasp_gate=0.0175)
        line = ["eval", "--policy", "expert", *experiment.table4_args(exp, "127.0.0.1:50052"), "--out", str(tmp_path)]
        built = flags.settings_from(EvalConfig, cli.build_parser().parse_args(line))
        assert (built.termination, built.reflector, built.confirm, built.grasp_gate) == (
            "reflector", "127.0.0.1:50052", confirm, 0.0175)
        assert ("--confirm" in line) == (confirm > 1)
        t4 = {**_eval([True, False, True]), "confirm": confirm}
        t4["episodes"][0]["outcome"] = "reflector"
        text = "\n".join(experiment_markdown.table4({"eval_sft": _eval([True, False, True]), "table4_sft": t4,
                                                      "eval_rl": _eval([True, True, False]), "table4_rl": t4}))
        assert ("at 2 chunks in a row" in text) == (confirm == 2) and "| SFT |" in text


def test_the_rl_section_reads_the_mean_actions_path_by_hand():
    rows = [{"iteration": i, "reward_mean": 0.2, "mean_step_b": 0.1, "mean_drift_b": d, "straightness": s,
             **({"step_cosine": c} if c is not None else {})}
            for i, (d, s, c) in enumerate([(0.1, 1.0, None), (0.15, 0.75, 0.2), (0.1, 0.33, -0.4)])]
    text = "\n".join(experiment_markdown.rl_section(rows))
    assert ("moved 0.100 b per update and ended 0.100 b from the start (straightness 0.33: 1 is a straight line, "
            "about 0.58 a random walk of 3 steps; successive steps' cosine -0.10 on average)") in text
    unlogged = [{k: v for k, v in r.items() if k in ("iteration", "reward_mean")} for r in rows]
    old = "\n".join(experiment_markdown.rl_section(unlogged))
    assert "moved" not in old and "Updates: clip fraction" in old


def test_controls_are_run_per_seed_and_compared_with_rl_by_hand(tmp_path):
    """--controls: RL against its shuffled-rewards control at each seed, and RL's seeds against the
    controls' as groups (4 init states: SFT 1, RL 3 and 1, controls 2 and 2; seed 2's control not run)."""
    root = tmp_path / "exp"
    runs = {"eval_sft": [True, False, False, False], "eval_rl": [True, True, True, False],
            "eval_rl_s1": [False, True, False, False], "eval_control_s0": [True, True, False, False],
            "eval_control_s1": [False, False, True, True]}
    for name, successes in runs.items():
        (root / name).mkdir(parents=True)
        (root / name / "eval.json").write_text(json.dumps(_eval(successes)))
    config = experiment.ExperimentConfig(home=str(root), report=str(tmp_path / "r" / "experiment.md"), iterations=1,
                                         table4=False, extra_seeds="1,2", controls=True)
    controls = experiment_report.collect(config, root)["controls"]
    assert controls["missing"] == [2] and controls["per_seed"][2] == {"rl_vs_control": None, "control_vs_sft": None}
    assert controls["per_seed"][0]["rl_vs_control"]["bootstrap"]["difference"] == pytest.approx(0.25)
    assert controls["per_seed"][1]["control_vs_sft"]["bootstrap"]["difference"] == pytest.approx(0.25)
    g = controls["groups"]
    assert g["difference"] == pytest.approx(0.0) and g["candidate_rates"] == [0.75, 0.25]   # (0.75 + 0.25) / 2 - 0.5
    assert g["baseline_spread"] == 0.0 and g["candidate_spread"] == pytest.approx(0.5)
    text = experiment_report.write(config, root).read_text()
    assert "## RL against its shuffled-rewards controls" in text and "| 0 | 3/4 | 2/4 | +25.0 pts" in text
    assert "**RL's seeds against the controls' (means per init state): +0.0 points**" in text
    # runs as the unit: RL .75, .25 against controls .5, .5: every split of the 4 rates gives |d| <= .25
    assert g["runs"]["p_value"] == pytest.approx(1.0) and g["runs"]["splits"] == 6
    assert "no gain over the controls shown (runs as the unit p = 1.000, the smallest p 6 splits can give 0.667" in text   # ties
    assert "Controls not finished yet: seed 2." in text and "| eval_control_s1 | 4 |" in text
    # the stages: a control RL run is `train rl --shuffle-rewards` at its seed
    addresses = {"redis": "redis://x", "policy": "p:1"}
    settings = experiment.rl_config(config, addresses, tmp_path, tmp_path / "s.npz", tmp_path / "o", 1, "r", 1, shuffle=True)
    assert settings.shuffle_rewards and settings.seed == 1
    assert not experiment.rl_config(config, addresses, tmp_path, tmp_path / "s.npz", tmp_path / "o", 1, "r").shuffle_rewards


def test_objective_results_pairs_rows_of_earlier_files_and_refuses_other_draws(tmp_path, capsys):
    """--results reads earlier --out files: each row against the first, the mean paired by start and
    the sampled episodes by start and seed (hand-made outcomes, so the counts are known); a file on
    another draw is refused, naming the flag and the setting."""
    from worldenv import cli
    ids = [f"libero_object/{i % 2}/{i}" for i in range(6)]

    def row(policy, mean, sampled):
        return {"policy": policy, "scale": 0.02, "mean": [{"id": i, "done": d} for i, d in zip(ids, mean)],
                "sampled": [[{"id": i, "done": d} for i, d in zip(ids, seed)] for seed in sampled]}

    settings = {"starts": 6, "per_task": 3, "draw_seed": 12345, "horizon": 30, "eta": 0.0, "grasp_gate": 0.0, "confirm": 1}
    first = {**settings, "rows": [row("sft", [1, 0, 0, 0, 1, 0], [[0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]])]}
    # the mean: only sft 0, only rl 2 (ids 1, 3); sampled: only sft 1 (seed 2, id 0), only rl 3
    second = {**settings, "rows": [row("rl", [1, 1, 0, 1, 1, 0], [[0, 1, 1, 0, 1, 0], [0, 0, 0, 1, 0, 0]])]}
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(second))
    out = tmp_path / "both.json"
    assert cli.main(["objective", "--results", f"{tmp_path / 'a.json'},{tmp_path / 'b.json'}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("sft  b=0.02  mean 2/6") and "sampled 2/12" in printed[0] and " vs " not in printed[0]
    assert printed[1].startswith("rl  b=0.02  mean 4/6") and "sampled 4/12" in printed[1]
    assert "vs sft: +2 (McNemar p = 0.5" in printed[1] and "0: 0/0 1: 0/2" in printed[1]
    assert "sampled +2 (only the first / only this 1/3, McNemar p = 0.62)" in printed[1]
    merged = json.loads(out.read_text())
    assert [r["policy"] for r in merged["rows"]] == ["sft", "rl"] and merged["draw_seed"] == 12345
    assert cli.main(["objective", "--results", str(out), "--against", "rl"]) == 0   # the same pairs, the other way
    printed = capsys.readouterr().out.splitlines()
    assert "vs rl: -2" in printed[0] and "sampled -2 (only the first / only this 3/1" in printed[0]
    assert " vs " not in printed[1]

    (tmp_path / "c.json").write_text(json.dumps({**second, "draw_seed": 7}))
    assert cli.main(["objective", "--results", f"{tmp_path / 'a.json'},{tmp_path / 'c.json'}"]) == 2
    assert "--results: " in (err := capsys.readouterr().err) and "draw_seed = 7" in err
    (tmp_path / "d.json").write_text("{}")
    assert cli.main(["objective", "--results", str(tmp_path / "d.json")]) == 2
    assert "has no rows" in capsys.readouterr().err


def test_objective_holds_each_row_against_the_controls_gap(tmp_path, capsys):
    """--controls: every other row's lead over each control, mean and sampled, against the largest
    gap between two controls (hand-made counts: controls 3 / 1 mean and 2 / 4 sampled, so gaps 2 and
    2); a row above by more on both is said to lead, one that is not is not; one name is refused,
    naming the flag."""
    from worldenv import cli
    ids = [f"libero_object/0/{i}" for i in range(8)]

    def row(policy, mean, sampled):
        return {"policy": policy, "scale": 0.02, "mean": [{"id": i, "done": i_ < mean} for i_, i in enumerate(ids)],
                "sampled": [[{"id": i, "done": i_ < sampled} for i_, i in enumerate(ids)]]}

    settings = {"starts": 8, "per_task": 8, "draw_seed": 12345, "horizon": 30, "eta": 0.0, "grasp_gate": 0.0,
                "confirm": 1}
    rows = [row("sft", 2, 2), row("runs/ctl", 3, 2), row("runs/ctl2", 1, 4), row("runs/rl", 6, 7),
            row("rl_close", 5, 6)]
    (tmp_path / "a.json").write_text(json.dumps({**settings, "rows": rows}))
    out = tmp_path / "verdict.json"
    args = ["objective", "--results", str(tmp_path / "a.json"), "--controls", "ctl,ctl2", "--out", str(out)]
    assert cli.main(args) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if "over the controls" in line]
    assert len(printed) == 3, "sft, rl and rl_close; the controls are not held against themselves"
    rl = next(line for line in printed if line.startswith("runs/rl "))
    assert "mean +3 / +5 (gap 2); sampled +5 / +3 (gap 2): leads every control" in rl
    close = next(line for line in printed if line.startswith("rl_close "))
    assert "mean +2 / +4 (gap 2)" in close and "does not lead" in close, "a lead equal to the gap is not above it"
    verdicts = {v["policy"]: v for v in json.loads(out.read_text())["against_controls"]}
    assert verdicts["runs/rl"]["above"] and not verdicts["rl_close"]["above"] and not verdicts["sft"]["above"]
    assert verdicts["sft"]["leads"] == {"mean": [-1, 1], "sampled": [0, -2]}
    assert verdicts["sft"]["gap"] == {"mean": 2, "sampled": 2}
    assert verdicts["runs/rl"]["resamples"] == 2000 and "with the starts redrawn 2000 times it leads so in" in rl
    assert verdicts["runs/rl"]["resampled_above"] > verdicts["rl_close"]["resampled_above"]
    # redrawn starts on known outcomes: two identical controls failing everywhere (gap 0 in every
    # redraw), a row succeeding everywhere (leads in every redraw), one equal to the controls (never)
    known = [row("ctl_a", 0, 0), row("ctl_b", 0, 0), row("best", 8, 8), row("same", 0, 0)]
    (tmp_path / "c.json").write_text(json.dumps({**settings, "rows": known}))
    assert cli.main(["objective", "--results", str(tmp_path / "c.json"), "--controls", "ctl_a,ctl_b",
                     "--resamples", "300", "--out", str(out)]) == 0
    redrawn = {v["policy"]: v["resampled_above"] for v in json.loads(out.read_text())["against_controls"]}
    assert redrawn == {"best": 1.0, "same": 0.0}
    assert cli.main(["objective", "--results", str(tmp_path / "c.json"), "--controls", "ctl_a,ctl_b",
                     "--resamples", "0", "--out", str(out)]) == 0
    assert "resampled_above" not in json.loads(out.read_text())["against_controls"][0]
    known[2]["mean"][0]["id"] = "libero_object/0/99"   # a start the controls did not play
    (tmp_path / "d.json").write_text(json.dumps({**settings, "rows": known}))
    assert cli.main(["objective", "--results", str(tmp_path / "d.json"), "--controls", "ctl_a,ctl_b"]) == 2
    assert "--controls: best did not play the controls' starts" in capsys.readouterr().err
    assert cli.main(["objective", "--results", str(tmp_path / "a.json"), "--controls", "ctl"]) == 2
    assert "controls" in (err := capsys.readouterr().err) and "at least two" in err
    assert cli.main(["objective", "--results", str(tmp_path / "a.json"), "--controls", "ctl,nope"]) == 2
    assert "--controls: 'nope' names 0 of the policies" in capsys.readouterr().err
    rows[4]["sampled"].append(rows[4]["sampled"][0])   # a second seed for one row: its sampled count is not comparable
    (tmp_path / "b.json").write_text(json.dumps({**settings, "rows": rows}))
    assert cli.main(["objective", "--results", str(tmp_path / "b.json"), "--controls", "ctl,ctl2"]) == 2
    assert "--controls: the rows drew different numbers of sampled seeds" in capsys.readouterr().err
