"""`worldenv compare` on `train rl` runs: on-policy imagined success paired by iteration."""
import json
import pathlib

import pytest

from worldenv.measure import training_runs

SETTINGS = {"policy": "shipped", "starts": "shipped", "seed": 31, "groups": 128, "group_size": 8, "horizon": 30,
            "eta": 0.0, "grasp_gate": 0.0, "confirm": 1, "exploration_scale": 0.02, "replay_open": 0.0, "value": None,
            "lr": 1e-6, "auth_token": None}


def _run(root, name, done, settings=None, extra_rows=(), resumes=()):
    """A run directory holding what compare reads: metrics rows (iteration, done fraction, the
    trainer's update figures) and, unless `settings` is False, run.json."""
    folder = root / name
    folder.mkdir()
    rows = [{"iteration": i, "done_fraction": d, "zero_advantage_groups": 0.75, "approx_kl": 0.01,
             "clip_fraction": 0.2, "mean_drift_b": 0.01 * i} for i, d in enumerate(done)] + list(extra_rows)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if settings is not False:
        (folder / "run.json").write_text(json.dumps({"settings": settings or SETTINGS, "resumes": list(resumes)}))
    return str(folder)


def test_a_run_ahead_in_every_iteration_leads_its_control(tmp_path, capsys):
    from worldenv import cli
    control = _run(tmp_path, "control", [0.20, 0.20, 0.21, 0.22, 0.20, 0.21, 0.22],
                   SETTINGS | {"shuffle_rewards": True, "lr": 1e-6})
    rl = _run(tmp_path, "rl", [0.20, 0.23, 0.24, 0.25, 0.24, 0.26, 0.27], SETTINGS | {"shuffle_rewards": False},
              resumes=[{"at_iteration": 3, "changed": {}}, {"at_iteration": 5, "changed": {"lr": [1e-6, 2e-6]}}])
    out = tmp_path / "compare.json"
    assert cli.main(["compare", control, rl, "--resamples", "500", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (p,) = json.loads(out.read_text())["pairs"]
    assert p["n"] == 6 and p["iterations"] == [1, 6], "iteration 0 (the same start policy) is left out"
    assert p["start"] == {"a": 0.20, "b": 0.20}
    assert (p["sign_test"]["only_b"], p["sign_test"]["only_a"]) == (6, 0)
    assert p["sign_test"]["p_value"] == pytest.approx(2 / 64)                  # 2 * 0.5 ** 6
    assert p["bootstrap"]["difference"] == pytest.approx((0.03 + 0.03 + 0.03 + 0.04 + 0.05 + 0.05) / 6)
    assert p["bootstrap"]["ci95"][0] > 0, "ahead by 3 to 5 points in every iteration"
    assert p["halves"] == [{"iterations": [1, 3], "a_mean": pytest.approx(0.21), "b_mean": pytest.approx(0.24)},
                           {"iterations": [4, 6], "a_mean": pytest.approx(0.21), "b_mean": pytest.approx(0.2566667)}]
    assert training_runs.verdict(p) == "leads"
    assert "| 6 / 0 | 0.031 |" in printed and "| leads |" in printed
    assert "| 3, 5 (lr 1e-06 -> 2e-06) |" in printed, "the resumes, and the setting one of them changed"
    # 128 groups x 25 % informative x 7 iterations; the last row's drift
    assert p["b_run"]["informative_groups"] == 224 and p["b_run"]["mean_drift_b"] == pytest.approx(0.06)
    assert p["a_run"]["shuffle_rewards"] is True and p["b_run"]["shuffle_rewards"] is False


def test_a_mixed_record_is_no_separation_and_a_resumed_row_replaces_the_earlier(tmp_path, capsys):
    from worldenv import cli
    # iteration 3 was written twice (a run killed after logging it, resumed): the last row counts
    control = _run(tmp_path, "control", [0.2, 0.2, 0.3, 0.1], extra_rows=[{"iteration": 3, "done_fraction": 0.3}])
    rl = _run(tmp_path, "rl", [0.2, 0.3, 0.2, 0.2])
    assert cli.main(["compare", control, rl, "--resamples", "500"]) == 0
    printed = capsys.readouterr().out
    result = training_runs.pair_runs(training_runs.load_run(control), training_runs.load_run(rl), 500)
    assert (result["sign_test"]["only_b"], result["sign_test"]["only_a"]) == (1, 2)
    assert result["sign_test"]["p_value"] == 1.0 and training_runs.verdict(result) == "no separation"
    assert "| no separation |" in printed


def test_runs_on_other_draws_or_without_shared_iterations_are_refused(tmp_path, capsys):
    from worldenv import cli
    control = _run(tmp_path, "control", [0.2, 0.2, 0.2])
    other_seed = _run(tmp_path, "other", [0.2, 0.3, 0.3], SETTINGS | {"seed": 32, "groups": 64})
    assert cli.main(["compare", control, other_seed]) == 2
    assert "seed, groups: the runs differ here" in capsys.readouterr().err
    short = _run(tmp_path, "short", [0.2])
    assert cli.main(["compare", control, short]) == 2
    assert "share no iteration from 1 on" in capsys.readouterr().err
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "eval.json").write_text(json.dumps({"episodes": [{"id": "s/0/0", "success": True}]}))
    assert cli.main(["compare", control, str(ev)]) == 2
    assert "give all `train rl` run directories" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"iteration": 0}\nnot json\n')
    assert cli.main(["compare", control, str(broken)]) == 2
    assert "broken.jsonl line 2: not a metrics row" in capsys.readouterr().err


def test_a_metrics_file_kept_alone_pairs_without_its_settings(tmp_path):
    kept = tmp_path / "rl_metrics.jsonl"
    kept.write_text("".join(json.dumps({"iteration": i, "done_fraction": d}) + "\n"
                            for i, d in enumerate([0.2, 0.25, 0.3])))
    control = _run(tmp_path, "control", [0.2, 0.2, 0.2], SETTINGS | {"seed": 99})
    run = training_runs.load_run(str(kept))
    assert run["settings"] is None and training_runs.is_run(str(kept))
    result = training_runs.pair_runs(training_runs.load_run(control), run, 500)   # unchecked: no settings a side
    assert result["n"] == 2 and result["b_run"]["informative_groups"] is None


def _groups(folder, per_iteration):
    """groups.jsonl: per iteration, {task: list of groups' done flags}."""
    rows = [{"iteration": i, "groups": [{"start": f"libero_object/{t}/100{k}/demo/step0", "rewards": [0.5] * len(d),
                                          "done": d, "used": 0 < sum(d) < len(d)}
                                         for t, groups in tasks.items() for k, d in enumerate(groups)]}
            for i, tasks in enumerate(per_iteration)]
    (pathlib.Path(folder) / "groups.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_groups_split_the_comparison_by_task(tmp_path, capsys):
    from worldenv import cli
    control = _run(tmp_path, "control", [0.25, 0.25, 0.25])
    rl = _run(tmp_path, "rl", [0.25, 0.375, 0.375])
    same = {"0": [[0, 0, 0, 0]], "1": [[1, 1, 0, 0]]}
    _groups(control, [same, same, same])
    # task 1 gains a success in iterations 1 and 2 (2/4 -> 3/4); task 0 stays at 0/4
    _groups(rl, [same, {"0": [[0, 0, 0, 0]], "1": [[1, 1, 1, 0]]}, {"0": [[0, 0, 0, 0]], "1": [[1, 1, 1, 0]]}])
    out = tmp_path / "c.json"
    assert cli.main(["compare", control, rl, "--resamples", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (p,) = json.loads(out.read_text())["pairs"]
    assert set(p["by_task"]) == {"0", "1"}
    one, zero = p["by_task"]["1"], p["by_task"]["0"]
    assert one["n"] == 2 and (one["a_mean"], one["b_mean"]) == (0.5, 0.75)
    assert (one["sign_test"]["only_b"], one["sign_test"]["only_a"]) == (2, 0)
    assert zero["bootstrap"]["difference"] == 0 and zero["sign_test"]["p_value"] == 1.0
    assert (one["a_informative"], one["b_informative"], zero["b_informative"]) == (1.0, 1.0, 0.0)
    assert p["same_starts"] == {"checked": 3, "same": [0, 1, 2]}
    assert "| 1 | 2 | 50.0 | 75.0 | +25.0 (+25.0 to +25.0) | 2 / 0 | 0.500 | 100.0 / 100.0 % |" in printed
    assert "the same starts in 3 of the 3 iterations both logged (groups.jsonl), iterations 0-2." in printed
    broken = pathlib.Path(rl) / "groups.jsonl"
    broken.write_text('{"iteration": 0, "groups": [{"done": [1]}]}\n')
    assert cli.main(["compare", control, rl]) == 2
    assert "groups.jsonl line 1: not a groups row" in capsys.readouterr().err


def test_several_seeds_pair_by_position_and_the_pairs_become_the_unit(tmp_path, capsys):
    from worldenv import cli
    runs, controls = [], []
    for seed, gap in ((21, 0.02), (31, -0.03), (41, 0.04)):      # each pair: the run ahead by `gap` throughout
        settings = SETTINGS | {"seed": seed}
        controls.append(_run(tmp_path, f"ctl{seed}", [0.2, 0.2, 0.2, 0.2], settings))
        runs.append(_run(tmp_path, f"rl{seed}", [0.2] + [0.2 + gap] * 3, settings))
    out = tmp_path / "c.json"
    assert cli.main(["compare", ",".join(controls), ",".join(runs), "--resamples", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [p["candidate"] for p in result["pairs"]] == runs, "one pair per seed, not every run against every control"
    across = result["across_pairs"]
    assert across["differences"] == pytest.approx([0.02, -0.03, 0.04])
    assert (across["ahead"], across["behind"]) == (2, 1)
    # 8 sign flips of (2, -3, 4): |mean| >= 1 for all but (+2, +3, -4) and (-2, -3, +4) -> 6 / 8
    assert across["p_value"] == pytest.approx(0.75) and across["smallest_p"] == pytest.approx(0.25)
    assert "Pairs as the unit (3 seeds): mean difference +1.0 points (per pair: +2.0, -3.0, +4.0)" in printed
    # crossed seeds are refused by their settings; an unequal count by the lists
    assert cli.main(["compare", ",".join(controls[:2]), ",".join(runs[1::-1])]) == 2
    assert "seed: the runs differ here" in capsys.readouterr().err
    assert cli.main(["compare", controls[0], ",".join(runs[:2])]) == 2
    assert "give one control run per run, in the same order" in capsys.readouterr().err


def test_same_starts_only_pairs_the_iterations_whose_starts_match(tmp_path, capsys):
    """Two runs whose draws parted in iterations 1-2 and met again from 3 on: `--same-starts-only`
    pairs iterations 3-4 alone, the per-task rows too; runs with no such iteration are refused."""
    from worldenv import cli
    control = _run(tmp_path, "control", [0.5, 0.5, 0.5, 0.5, 0.5])
    rl = _run(tmp_path, "rl", [0.5, 0.25, 0.25, 0.75, 0.75])
    tasks = lambda done: {"1": [done]}  # noqa: E731
    _groups(control, [tasks([1, 1, 0, 0])] * 5)
    _groups(rl, [tasks([1, 1, 0, 0]), tasks([1, 0, 0, 0]), tasks([1, 0, 0, 0]), tasks([1, 1, 1, 0]), tasks([1, 1, 1, 0])])
    moved = pathlib.Path(rl) / "groups.jsonl"
    rows = [json.loads(line) for line in moved.read_text().splitlines()]
    for row in rows[1:3]:   # other starts drawn in iterations 1 and 2
        row["groups"][0]["start"] = "libero_object/1/2000/demo/step0"
    moved.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "c.json"
    assert cli.main(["compare", control, rl, "--resamples", "200", "--out", str(out)]) == 0
    (every,) = json.loads(out.read_text())["pairs"]
    assert every["n"] == 4 and every["same_starts"]["same"] == [0, 3, 4] and every["by_task"]["1"]["n"] == 4
    capsys.readouterr()
    assert cli.main(["compare", control, rl, "--same-starts-only", "--resamples", "200", "--out", str(out)]) == 0
    assert "only the iterations where groups.jsonl shows both runs drew the same starts" in capsys.readouterr().out
    (same,) = json.loads(out.read_text())["pairs"]
    assert same["n"] == 2 and same["iterations"] == [3, 4] and same["b_mean"] == 0.75
    assert same["by_task"]["1"]["n"] == 2 and same["by_task"]["1"]["b_mean"] == 0.75
    bare = _run(tmp_path, "bare", [0.5, 0.5, 0.5, 0.5, 0.5])   # no groups.jsonl: no iteration shown the same
    assert cli.main(["compare", control, bare, "--same-starts-only"]) == 2
    assert "and the same starts" in capsys.readouterr().err


def test_a_forked_run_pairs_from_the_fork_on(tmp_path, capsys):
    """A second control forked from the first after iteration 2 carries its rows 0-2: pairing them
    would count one record twice, so compare refuses and names --from-iteration. Iteration 3, the
    fork's first, collected with one policy in both (the same success, other updates): the check."""
    from worldenv import cli
    control = _run(tmp_path, "control", [0.2, 0.21, 0.22, 0.20, 0.25, 0.23, 0.25], SETTINGS | {"shuffle_rewards": True})
    forked = _run(tmp_path, "forked", [0.2, 0.21, 0.22, 0.20, 0.24, 0.26, 0.27],
                  SETTINGS | {"shuffle_rewards": True, "shuffle_seed": 32},
                  resumes=[{"at_iteration": 3, "changed": {"shuffle_seed": [None, 32]}}])
    metrics = pathlib.Path(forked) / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows[3]["approx_kl"] = 0.02   # its own permutation: another update from the same rollouts
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["compare", control, forked]) == 2
    err = capsys.readouterr().err
    assert "from_iteration: iterations 1-2 are the same record in both runs" in err and "--from-iteration 4" in err
    out = tmp_path / "c.json"
    assert cli.main(["compare", control, forked, "--from-iteration", "4", "--resamples", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "paired by iteration from 4 on" in printed and "| 3: 20.0 / 20.0 |" in printed
    (p,) = json.loads(out.read_text())["pairs"]
    assert p["n"] == 3 and p["iterations"] == [4, 6] and p["first"] == 4 and p["check"] == 3
    assert (p["sign_test"]["only_b"], p["sign_test"]["only_a"]) == (2, 1)
    assert p["bootstrap"]["difference"] == pytest.approx((-0.01 + 0.03 + 0.02) / 3)
    assert cli.main(["compare", control, forked, "--from-iteration", "7"]) == 2
    assert "share no iteration from 7 on" in capsys.readouterr().err
    assert cli.main(["compare", control, forked, "--from-iteration", "4", "--to-iteration", "5", "--out", str(out)]) == 0
    assert "paired by iteration from 4 to 5" in capsys.readouterr().out
    (p,) = json.loads(out.read_text())["pairs"]
    assert p["iterations"] == [4, 5] and p["bootstrap"]["difference"] == pytest.approx((-0.01 + 0.03) / 2)
    assert cli.main(["compare", control, forked, "--from-iteration", "4", "--to-iteration", "3"]) == 2
    assert "to_iteration: 3 is before --from-iteration 4" in capsys.readouterr().err
    rl = _run(tmp_path, "rl", [0.2, 0.22, 0.23, 0.22, 0.27, 0.28, 0.29])   # started beside the control: check 0
    assert cli.main(["compare", control, rl, "--from-iteration", "4", "--out", str(out)]) == 0
    assert "| 0: 20.0 / 20.0 |" in capsys.readouterr().out and json.loads(out.read_text())["pairs"][0]["check"] == 0
