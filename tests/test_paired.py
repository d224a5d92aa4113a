import json

import numpy as np
import pytest

from worldenv.measure import paired


def test_mcnemar_exact_by_hand():
    # 1 pair only a, 6 pairs only b, 3 concordant: p = 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * 8/128
    a = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    out = paired.mcnemar(a, b)
    assert (out["only_a"], out["only_b"]) == (1, 6)
    assert out["p_value"] == pytest.approx(0.125)


def test_mcnemar_without_discordant_pairs_is_one():
    a = np.array([1, 0, 1], bool)
    assert paired.mcnemar(a, a.copy())["p_value"] == 1.0


def test_bootstrap_difference_brackets_the_mean():
    rng = np.random.default_rng(1)
    a = rng.random(150) < 0.4
    b = a | (rng.random(150) < 0.3)
    out = paired.bootstrap_difference(a, b, resamples=2000)
    assert out["difference"] == pytest.approx(b.mean() - a.mean())
    assert out["ci95"][0] < out["difference"] < out["ci95"][1]
    assert out["ci95"][0] > 0          # b only ever adds successes here


def test_pairs_match_ids_and_refuse_disjoint_runs():
    a, b = paired.pairs({"s/0/1": True, "s/0/2": False, "s/0/3": True}, {"s/0/2": True, "s/0/1": True})
    assert a.tolist() == [True, False] and b.tolist() == [True, True]
    with pytest.raises(ValueError, match="share no episode"):
        paired.pairs({"x": True}, {"y": True})


def test_by_task_finds_a_one_sided_task_the_total_hides():
    # task 1: 8 lost, none gained (p = 2/256); task 2: 8 gained, none lost; the total is level (p = 1)
    a = {f"s/1/{i}": i < 8 for i in range(10)} | {f"s/2/{i}": False for i in range(10)} | {"s/10/0": True}
    b = {f"s/1/{i}": False for i in range(10)} | {f"s/2/{i}": i < 8 for i in range(10)} | {"s/10/0": True}
    total = paired.mcnemar(*paired.pairs(a, b))
    assert (total["only_a"], total["only_b"], total["p_value"]) == (8, 8, 1.0)
    tasks = paired.by_task(a, b)
    assert list(tasks) == ["1", "2", "10"], "tasks in numeric order"
    assert (tasks["1"]["only_a"], tasks["1"]["only_b"], tasks["1"]["n"], tasks["1"]["a"], tasks["1"]["b"]) == (8, 0, 10, 8, 0)
    assert tasks["1"]["p_value"] == pytest.approx(2 / 256)
    assert (tasks["2"]["only_a"], tasks["2"]["only_b"]) == (0, 8)
    assert tasks["10"] == {"only_a": 0, "only_b": 0, "p_value": 1.0, "n": 1, "a": 1, "b": 1}


def _eval_dir(root, name, outcomes: dict[str, bool]):
    """A `worldenv eval --out` directory holding these episode outcomes."""
    import json
    folder = root / name
    folder.mkdir()
    episodes = [{"id": i, "success": s, "steps": 100} for i, s in outcomes.items()]
    (folder / "eval.json").write_text(json.dumps({"episodes": episodes}))
    return str(folder)


def test_compare_command_pairs_runs_and_groups_seeds(tmp_path, capsys):
    from worldenv import cli
    ids = [f"libero_object/{t}/{i}" for t in (0, 1) for i in range(10)]
    sft = _eval_dir(tmp_path, "sft", {i: n % 2 == 0 for n, i in enumerate(ids)})          # 10 of 20
    rl0 = _eval_dir(tmp_path, "rl0", {i: True for i in ids})                              # 20 of 20
    rl1 = _eval_dir(tmp_path, "rl1", {i: i.split("/")[1] == "0" for i in ids})            # 10 of 20: task 0 only
    out = tmp_path / "compare.json"
    assert cli.main(["compare", sft, f"{rl0},{rl1}", "--resamples", "500", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"| {sft} | {rl0} | 20 | 10 | 20 | +50.0" in printed
    import json
    result = json.loads(out.read_text())
    first, second = result["pairs"]
    assert (first["mcnemar"]["only_a"], first["mcnemar"]["only_b"]) == (0, 10)
    assert first["mcnemar"]["p_value"] == pytest.approx(2 / 1024)
    # rl1: task 0 gains the 5 odd inits SFT failed, task 1 loses the 5 even ones SFT found
    assert first["by_task"]["0"]["only_b"] == 5 and second["by_task"]["1"]["only_a"] == 5
    assert (second["mcnemar"]["only_a"], second["mcnemar"]["only_b"], second["mcnemar"]["p_value"]) == (5, 5, 1.0)
    g = result["groups"]
    assert g["n"] == 20 and g["difference"] == pytest.approx(0.25)    # (1.0 + 0.5) / 2 - 0.5
    assert g["candidate_rates"] == [1.0, 0.5] and g["candidate_spread"] == pytest.approx(0.5)
    assert g["baseline_spread"] == 0.0 and g["ci95"][0] <= 0.25 <= g["ci95"][1]
    assert "spread 50.0" in printed
    assert g["runs"] is None                       # one baseline run: no run-level test


def test_permutation_test_of_runs_by_hand():
    # pooled .3 .4 .5 .6, b = {.5, .6}: the 6 splits give differences -.2, -.1, 0, 0, .1, .2
    result = paired.permutation_test(np.array([0.3, 0.4]), np.array([0.5, 0.6]))
    assert result["difference"] == pytest.approx(0.2) and result["splits"] == 6
    assert result["p_value"] == pytest.approx(2 / 6) and result["smallest_p"] == pytest.approx(2 / 6)
    three = paired.permutation_test(np.array([0.30, 0.31, 0.32]), np.array([0.50, 0.51, 0.52]))
    assert three["splits"] == 20 and three["p_value"] == pytest.approx(0.1) == three["smallest_p"]
    assert paired.permutation_test(np.array([0.4, 0.5]), np.array([0.4, 0.5]))["p_value"] == 1.0


def test_runs_needed_by_hand():
    # 2 (1.96 + 0.84)^2 sd^2 / gain^2: 15.7 at sd = gain, a quarter of it at twice the gain
    assert paired.runs_needed(0.05, 0.05) == 16 and paired.runs_needed(0.05, 0.10) == 4
    assert paired.runs_needed(0.001, 0.10) == 2
    with pytest.raises(ValueError, match="gain"):
        paired.runs_needed(0.05, 0.0)


def test_compare_groups_test_the_runs_when_both_sides_have_several(tmp_path, capsys):
    from worldenv import cli
    ids = [f"libero_object/0/{i}" for i in range(10)]
    controls = [_eval_dir(tmp_path, f"c{k}", {i: n < 3 + k for n, i in enumerate(ids)}) for k in range(3)]  # 3, 4, 5
    rl = [_eval_dir(tmp_path, f"r{k}", {i: n < 6 + k for n, i in enumerate(ids)}) for k in range(3)]         # 6, 7, 8
    out = tmp_path / "groups.json"
    assert cli.main(["compare", ",".join(controls), ",".join(rl), "--resamples", "200", "--out", str(out)]) == 0
    import json
    runs = json.loads(out.read_text())["groups"]["runs"]
    assert runs["difference"] == pytest.approx(0.3) and runs["p_value"] == pytest.approx(0.1)
    assert runs["sd"] == pytest.approx(0.1)                        # each side's rates .1 apart: sd .1
    assert runs["runs_needed"] == {"0.05": paired.runs_needed(0.1, 0.05), "0.10": 16}
    assert "smallest p these numbers of runs can give: 0.100" in capsys.readouterr().out


def test_compare_command_names_a_missing_run(tmp_path, capsys):
    from worldenv import cli
    sft = _eval_dir(tmp_path, "sft", {"s/0/0": True})
    other = _eval_dir(tmp_path, "other", {"s/0/1": True})
    assert cli.main(["compare", sft, str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no eval.json" in capsys.readouterr().err
    assert cli.main(["compare", sft, other]) == 2
    assert "share no episode ids" in capsys.readouterr().err
    assert cli.main(["compare", sft, sft, "--resamples", "5"]) == 2
    assert "--resamples: must be >= 100" in capsys.readouterr().err


def _align_dir(root, name, rows):
    """A `worldenv align` output holding only what compare reads: per episode (id, real, imagined, replay)."""
    folder = root / name
    folder.mkdir()
    per_episode = [{"id": i, "task": int(i.split("/")[1]), "real": r, "imagined": c, "replay": p, "real_video": r}
                   for i, (r, c, p) in rows.items()]
    (folder / "alignment.json").write_text(json.dumps({"per_episode": per_episode}))
    return str(folder)


def test_compare_scores_align_outputs_by_agreement_with_libero(tmp_path, capsys):
    from worldenv import cli
    ids = [f"libero_object/{t}/{8000 + i}/policy" for t in (0, 1) for i in range(5)]
    real = {i: n % 2 == 0 for n, i in enumerate(ids)}                                   # 5 successes of 10
    # one world model imagines no success (agrees on the 5 failures), two imagine the real outcome but
    # for one episode each, whose replays all agree
    blind = _align_dir(tmp_path, "blind", {i: (real[i], False, real[i]) for i in ids})
    good = [_align_dir(tmp_path, f"good{k}", {i: (real[i], real[i] != (n == k), real[i]) for n, i in enumerate(ids)})
            for k in range(2)]
    out = tmp_path / "agreement.json"
    assert cli.main(["compare", blind, ",".join(good), "--resamples", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Measure: closed_loop agreement per episode (1 = agrees with LIBERO)" in printed
    result = json.loads(out.read_text())
    first = result["pairs"][0]
    assert (first["a"]["successes"], first["b"]["successes"]) == (5, 9)
    # good0 misjudges episode 0 (a real success blind misses too): good0 alone right on the other 4 successes
    assert (first["mcnemar"]["only_a"], first["mcnemar"]["only_b"]) == (0, 4)
    assert result["groups"]["candidate_rates"] == [0.9, 0.9]
    assert cli.main(["compare", blind, good[0], "--alignment", "replay", "--resamples", "200", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["pairs"][0]["a"]["successes"] == 10
    assert cli.main(["compare", blind, good[0], "--alignment", "imagined_actions"]) == 2
    assert "needs `worldenv align --in-libero` outputs" in capsys.readouterr().err
    # on its own actions: blind imagines no success and LIBERO gives none on its actions (agrees on all 10)
    executed = json.loads((tmp_path / "blind" / "alignment.json").read_text())
    for e in executed["per_episode"]:
        e["imagined_in_libero"] = False
    (tmp_path / "blind" / "alignment.json").write_text(json.dumps(executed))
    for k, folder in enumerate(good):   # good0's actions: LIBERO succeeds on the first two; good1's: none
        rows = json.loads((tmp_path / f"good{k}" / "alignment.json").read_text())
        for n, e in enumerate(rows["per_episode"]):
            e["imagined_in_libero"] = k == 0 and n < 2
        (tmp_path / f"good{k}" / "alignment.json").write_text(json.dumps(rows))
    assert cli.main(["compare", blind, good[0], "--alignment", "imagined_actions", "--resamples", "200",
                     "--out", str(out)]) == 0
    agreed = sum(real[i] != (n == 0) == (n < 2) for n, i in enumerate(ids))
    assert json.loads(out.read_text())["pairs"][0]["b"]["successes"] == agreed
    assert json.loads(out.read_text())["pairs"][0]["a"]["successes"] == 10
    evaluation = _eval_dir(tmp_path, "eval", {i: True for i in ids})
    assert cli.main(["compare", evaluation, blind]) == 2
    assert "all eval outputs (success) or all align outputs (agreement)" in capsys.readouterr().err
