"""The experiment report's markdown, from `experiment_report.collect`'s results."""
from __future__ import annotations

from worldenv.sim.report import rate


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _ci(r: dict) -> str:
    return f"{_pct(r['ci95'][0])}-{_pct(r['ci95'][1])}"


def command(config) -> str:
    defaults = type(config)()
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in config.model_dump().items()
               if v != getattr(defaults, k) and k not in ("auth_token",)]
    return " ".join(["worldenv experiment", *changed])


def headline(config, evals: dict, c: dict | None) -> list[str]:
    sft, rl = evals.get("eval_sft"), evals.get("eval_rl")
    if c is None:
        return ["The final evaluations have not run yet."]
    lines = [f"Real LIBERO, LIBERO's termination (success ends an episode), deterministic actions, "
             f"{config.eval_episodes} episodes per task at LIBERO's fixed init states 0-{config.eval_episodes - 1}, "
             "the same for both policies.", "",
             "| task | instruction | SFT | SFT Wilson 95 % | RL | RL Wilson 95 % | only SFT / only RL, McNemar |",
             "|---|---|---|---|---|---|---|"]
    for task, s in sft["tasks"].items():
        r, m = rl["tasks"][task], c["by_task"].get(str(task))
        flips = f"{m['only_a']} / {m['only_b']}, p = {m['p_value']:.2g}" if m else ""
        lines.append(f"| {task} | {s['instruction']} | {s['successes']}/{s['episodes']} = {_pct(s['rate'])} | {_ci(s)} | "
                     f"{r['successes']}/{r['episodes']} = {_pct(r['rate'])} | {_ci(r)} | {flips} |")
    lines.append(f"| **all** | | **{c['sft']['successes']}/{c['n']} = {_pct(c['sft']['rate'])}** | {_ci(c['sft'])} | "
                 f"**{c['rl']['successes']}/{c['n']} = {_pct(c['rl']['rate'])}** | {_ci(c['rl'])} | "
                 f"{c['mcnemar']['only_a']} / {c['mcnemar']['only_b']}, p = {c['mcnemar']['p_value']:.2g} |")
    b, m = c["bootstrap"], c["mcnemar"]
    verdict = ("RL is better beyond the paired interval" if b["ci95"][0] > 0 else
               "RL is worse beyond the paired interval" if b["ci95"][1] < 0 else
               "the difference is inside the noise: no gain shown")
    lines += ["", f"**RL - SFT: {100 * b['difference']:+.1f} points** (paired bootstrap over init states, 95 % "
              f"{100 * b['ci95'][0]:+.1f} to {100 * b['ci95'][1]:+.1f}); McNemar exact p = {m['p_value']:.3g} "
              f"({m['only_b']} init states only RL solved, {m['only_a']} only SFT solved): {verdict}."]
    return lines


def seed_spread(prov: dict | None) -> list[str]:
    """The SFT policy's success over its training seeds, beside the gain (a single seed is noise)."""
    rows = (prov or {}).get("sft_seeds") or []
    if not rows:
        return []
    rates = [r["successes"] / r["episodes"] for r in rows]
    seeds = ", ".join(f"seed {r['seed']}: {r['successes']}/{r['episodes']} = {_pct(x)}" for r, x in zip(rows, rates))
    return ["", f"SFT training-seed spread (the same demos, {rows[0]['episodes']} episodes at LIBERO's first fixed init "
                f"states, from the models report): {seeds}; max - min **{100 * (max(rates) - min(rates)):.0f} points**. "
                "The SFT policy here is the median seed; a gain smaller than this spread could come from the seed alone."]


def seeds_section(config, seeds: dict | None) -> list[str]:
    """Every RL seed's gain over SFT on the same episodes, and their mean (`experiment_report.seed_results`)."""
    if seeds is None:
        return []
    lines = ["", "## RL seeds",
             f"The same RL from the same SFT policy at each seed (--seed {config.seed} is the run above; "
             "the curve, Table 4 and the Dyna round follow it), each evaluated once, after its run, on the same "
             "init states as SFT.", "",
             "| RL seed | real success | per task | RL - SFT, paired bootstrap 95 % | McNemar (only SFT / only RL) |",
             "|---|---|---|---|---|"]
    for seed, c in seeds["per_seed"].items():
        b, m, r = c["bootstrap"], c["mcnemar"], c["rl"]
        tasks = " / ".join(str(t["successes"]) for t in c["tasks"].values())
        lines.append(f"| {seed} | {r['successes']}/{c['n']} = {_pct(r['rate'])} | {tasks} | "
                     f"{100 * b['difference']:+.1f} ({100 * b['ci95'][0]:+.1f} to {100 * b['ci95'][1]:+.1f}) | "
                     f"p = {m['p_value']:.3g} ({m['only_a']} / {m['only_b']}) |")
    mean = seeds["mean"]
    verdict = ("above SFT beyond the interval" if mean["ci95"][0] > 0 else
               "below SFT beyond the interval" if mean["ci95"][1] < 0 else "inside the noise: no gain shown")
    lines += ["", f"**Mean over {len(seeds['per_seed'])} seeds: RL - SFT {100 * mean['difference']:+.1f} points** "
                  f"(per init state the seeds' mean success minus SFT's, bootstrapped over the {seeds['n']} init states: "
                  f"95 % {100 * mean['ci95'][0]:+.1f} to {100 * mean['ci95'][1]:+.1f}): {verdict}. The seeds' gains "
                  f"spread {100 * seeds['spread']:.1f} points (max - min). The interval resamples init states with these "
                  "seeds fixed; it does not cover what other seeds would give, which the spread shows."]
    if seeds["missing"]:
        lines += ["", f"Not finished yet: seed{'s' if len(seeds['missing']) > 1 else ''} "
                       f"{', '.join(map(str, seeds['missing']))}."]
    return lines


def controls_section(controls: dict | None) -> list[str]:
    """RL against its shuffled-rewards controls (`experiment_report.control_results`)."""
    if controls is None:
        return []
    lines = ["", "## RL against its shuffled-rewards controls",
             "At each RL seed, the same RL with each group's rewards permuted among its rollouts: the same number "
             "and size of updates, no learning signal. What it does to the real success is what RL's updates do "
             "without learning anything; a gain counts only beyond it.", "",
             "| seed | RL | control | RL - control (paired) | control - SFT (paired) |", "|---|---|---|---|---|"]
    for seed, c in controls["per_seed"].items():
        pair, ctl = c["rl_vs_control"], c["control_vs_sft"]
        if pair is None:
            continue
        lines.append(f"| {seed} | {pair['rl']['successes']}/{pair['n']} | {pair['sft']['successes']}/{pair['n']} | "
                     f"{_diff(pair)} | {_diff(ctl) if ctl else ''} |")
    g = controls["groups"]
    if g:
        rates = lambda rs: ", ".join(_pct(r) for r in rs)  # noqa: E731
        lines += ["", f"**RL's seeds against the controls' (means per init state): {100 * g['difference']:+.1f} points** "
                      f"(95 % {100 * g['ci95'][0]:+.1f} to {100 * g['ci95'][1]:+.1f}, {g['n']} init states resampled, "
                      f"runs held fixed): {control_verdict(g)}. RL {rates(g['candidate_rates'])} (spread "
                      f"{100 * g['candidate_spread']:.1f} points); controls {rates(g['baseline_rates'])} (spread "
                      f"{100 * g['baseline_spread']:.1f})."]
    if controls["missing"]:
        lines += ["", f"Controls not finished yet: seed{'s' if len(controls['missing']) > 1 else ''} "
                       f"{', '.join(map(str, controls['missing']))}."]
    return lines


def control_verdict(g: dict) -> str:
    """What RL's seeds against the controls' show: a gain only where the init states' interval and
    the test with the runs as the unit (the seed's spread included) both exclude none."""
    r = g.get("runs")
    if r is None:
        return "one run a side: the seed's spread is not measured, so no conclusion beyond these runs"
    runs = (f"runs as the unit p = {r['p_value']:.3f}, the smallest p {r['splits']} splits can give "
            f"{r['smallest_p']:.3f}; at the runs' spread ({100 * r['sd']:.1f} points) a 10-point gain needs "
            f"{r['runs_needed']['0.10']} runs a side")
    if r["p_value"] < 0.05 and (g["ci95"][0] > 0 or g["ci95"][1] < 0):
        return f"RL {'above' if g['difference'] > 0 else 'below'} its controls ({runs})"
    return f"no gain over the controls shown ({runs})"


def sampled_section(config, sampled: dict) -> list[str]:
    """Real success of the actions RL samples vs the mean, for both policies on the same init states
    (`experiment_report.comparison`: "sft" = the mean, "rl" = sampled)."""
    rows = []
    for name, c in sampled.items():
        mean, drawn = c["sft"], c["rl"]
        ratio = f"{drawn['successes'] / mean['successes']:.2f}" if mean["successes"] else "n/a"
        rows.append(f"| {name.upper()} | {mean['successes']}/{c['n']} = {_pct(mean['rate'])} | "
                    f"{drawn['successes']}/{c['n']} = {_pct(drawn['rate'])} | {ratio} |")
    if not rows:
        return ["Not measured in this run."]
    return [f"Real LIBERO, the same fixed init states (the first {config.sampled_episodes} per task) for both: the "
            f"policy's mean vs actions sampled from its Laplace head at b = {config.exploration_scale:g} x each "
            "dimension's spread, as RL explores (the target: sampled at least 0.8 of the mean).", "",
            "| policy | mean (deterministic) | sampled | ratio |", "|---|---|---|---|", *rows]


def curve_section(gaps: list[dict], png: str) -> list[str]:
    if not gaps:
        return ["The curve has not run yet."]
    lines = [f"![curve]({png})", "",
             "Each point: the policy after that many RL iterations, deterministic, from the same init states in the real "
             "simulator and inside the world model (its first frame rendered by LIBERO, then imagined; the reflector "
             "decides success with the same eta, within the real episode's step budget).", "",
             "| RL iteration | real success | Wilson 95 % | success inside the world model | gap (imagined - real) | "
             "imagined done, real failed | real success, imagined not |", "|---|---|---|---|---|---|---|"]
    for g in gaps:
        lines.append(f"| {g['iteration']} | {_pct(g['real'])} ({g['n']} ep.) | {_pct(g['real_ci95'][0])}-"
                     f"{_pct(g['real_ci95'][1])} | {_pct(g['imagined'])} | {100 * (g['imagined'] - g['real']):+.0f} pts | "
                     f"{g['imagined_done_real_failed']} | {g['real_success_imagined_not']} |")
    return lines


def objective_section(config, rows: list[dict]) -> list[str]:
    """Does RL improve what it optimises? (`experiment_report.objective_results`)"""
    if not rows:
        return []
    lines = ["", "### RL's own objective",
             f"Imagined success (the served world model and reflector, horizon {config.horizon} chunks, eta "
             f"{config.eta}) from one fixed draw of {rows[0]['per_task']} start states per task of the bank RL "
             "trains on, the same at every row: with the policy's mean, and with actions sampled as RL samples them "
             "(seeded). If RL works in imagination, these rise.", "",
             "| policy | imagined success, mean | sampled | per task (mean) |", "|---|---|---|---|"]
    for r in rows:
        tasks = " / ".join(str(v) for v in r["tasks"].values())
        lines.append(f"| {r['label']} | {r['mean']}/{r['n']} = {_pct(r['mean'] / r['n'])} | "
                     f"{r['sampled']}/{r['n']} = {_pct(r['sampled'] / r['n'])} | {tasks} |")
    return lines


def table4(evals: dict, paired_t4: dict | None = None) -> list[str]:
    rows = [(name, evals.get(f"eval_{name}"), evals.get(f"table4_{name}")) for name in ("sft", "rl")]
    if not all(t for _, _, t in rows):
        return ["Not run (--no-table4) or not finished."]
    confirm = rows[0][2].get("confirm", 1)
    verdict = "p(done) > eta" if confirm == 1 else f"p(done) > eta at {confirm} chunks in a row"
    lines = [f"Both policies in real LIBERO, but an episode ends when the reflector's {verdict} (or at the step "
             "limit) instead of at LIBERO's success; success is LIBERO's judgement of the state where it stopped. "
             "The first column is the main evaluation's rate on the same init states (the first "
             f"{len(rows[0][2]['episodes']) // max(len(rows[0][2]['tasks']), 1)} per task).", "",
             "| policy | success, LIBERO's termination | success, reflector's termination | stopped by the reflector | "
             "of those, not a success | mean steps (reflector) |", "|---|---|---|---|---|---|"]
    for name, sim, t4 in rows:
        ids = {e["id"] for e in t4["episodes"]}
        same = [e["success"] for e in sim["episodes"] if e["id"] in ids]
        s, r = rate(sum(same), len(same)), t4["suite_result"]
        stopped = [e for e in t4["episodes"] if e["outcome"] == "reflector"]
        wrong = sum(not e["success"] for e in stopped)
        steps = sum(e["steps"] for e in t4["episodes"]) / max(len(t4["episodes"]), 1)
        lines.append(f"| {name.upper()} | {_pct(s['rate'])} ({_ci(s)}) | {_pct(r['rate'])} ({_ci(r)}) | "
                     f"{len(stopped)}/{len(t4['episodes'])} | {wrong} | {steps:.0f} |")
    if paired_t4:
        lines += ["", f"RL - SFT under the reflector's termination: {_diff(paired_t4)}."]
    return lines


def rl_section(rows: list[dict]) -> list[str]:
    if not rows:
        return ["RL has not run yet."]
    updates = [r for r in rows if not r.get("skipped")]
    first, last = rows[: max(1, len(rows) // 5)], rows[-max(1, len(rows) // 5):]
    mean = lambda rs, k: sum(r.get(k, 0.0) for r in rs) / len(rs)  # noqa: E731
    return [f"{len(rows)} iterations, {len(updates)} updates (an iteration whose groups all had the same reward "
            "skips its update). Mean over the first and the last fifth of the iterations:", "",
            "| | reward (p(done) at termination) | done fraction | episode length (chunks) | groups with no reward spread |",
            "|---|---|---|---|---|",
            f"| first {len(first)} | {mean(first, 'reward_mean'):.3f} | {mean(first, 'done_fraction'):.2f} | "
            f"{mean(first, 'episode_length'):.1f} | {mean(first, 'zero_advantage_groups'):.2f} |",
            f"| last {len(last)} | {mean(last, 'reward_mean'):.3f} | {mean(last, 'done_fraction'):.2f} | "
            f"{mean(last, 'episode_length'):.1f} | {mean(last, 'zero_advantage_groups'):.2f} |", "",
            f"Updates: clip fraction {mean(updates, 'clip_fraction'):.2f}, approximate KL {mean(updates, 'approx_kl'):.4f} "
            f"(means); imagined steps/s {mean(rows, 'imagined_steps_per_s'):.0f}.{_path(updates)} Every iteration: "
            "`rl/metrics.jsonl`, `rl/curves.png` in the experiment directory, and the debug API's run page while the "
            "stack runs." if updates else "No iteration updated the policy."]


def _path(updates: list[dict]) -> str:
    """Where the updates moved the mean action (rl/mean_path.py), when the run logged it."""
    walked = [r for r in updates if "mean_drift_b" in r]
    if not walked:
        return ""
    cos = [r["step_cosine"] for r in walked if "step_cosine" in r]
    return (f" The mean action moved {sum(r['mean_step_b'] for r in walked) / len(walked):.3f} b per update and ended "
            f"{walked[-1]['mean_drift_b']:.3f} b from the start (straightness {walked[-1]['straightness']:.2f}: 1 is a "
            f"straight line, about {len(walked) ** -0.5:.2f} a random walk of {len(walked)} steps"
            + (f"; successive steps' cosine {sum(cos) / len(cos):+.2f} on average)." if cos else ")."))


def _diff(c: dict) -> str:
    b, m = c["bootstrap"], c["mcnemar"]
    return (f"{100 * b['difference']:+.1f} pts (95 % {100 * b['ci95'][0]:+.1f} to {100 * b['ci95'][1]:+.1f}), "
            f"McNemar p = {m['p_value']:.3g}")


def dyna_section(config, results: dict) -> list[str]:
    d = results.get("dyna")
    if d is None:
        return ["Not run (--dyna-rounds 0) or not finished."]
    e, s = d["explore"], d["vs_rl"]["rl"]
    how = "its mean actions" if getattr(config, "dyna_noise", "none") == "none" else "actions sampled from its Laplace head"
    reflector = (f"and the reflector ({config.dyna_reflector_steps} steps) were" if d["reflector_tuned"] else
                 "was (the reflector was kept: the new episodes held one outcome only)")
    return [f"The RL policy explored the real simulator ({config.dyna_explore} episodes per task, {how}, new init "
            f"states 7000+); the world model ({config.dyna_world_model_steps} steps) {reflector} fine-tuned on those "
            f"episodes alone at lr {config.dyna_lr:g}; RL ran {config.dyna_iterations} more iterations from the RL "
            "policy, starting from keyframes of the new episodes; then the same real evaluation, compared on the "
            "init states both evaluations share.", "",
            "| round | policy | real success | Wilson 95 % | vs the round before | vs SFT | real data added |",
            "|---|---|---|---|---|---|---|",
            f"| 1 | RL after the Dyna round | {s['successes']}/{s['episodes']} = {_pct(s['rate'])} | {_ci(s)} | "
            f"{_diff(d['vs_rl'])} | {_diff(d['vs_sft']) if d['vs_sft'] else ''} | {e['episodes']} exploration "
            f"episodes ({e['successes']} successes), {e['steps']} simulator steps |"] + (
        ["", f"On these same init states RL (before the round) vs SFT was {_diff(d['rl_vs_sft_same'])}: compare the round "
             "with the row before it, not with the 150-episode figures."] if d.get("rl_vs_sft_same") else [])


def limits(results: dict, gaps: list[dict]) -> list[str]:
    """What the measurements say about the limits of this run, computed, not written by hand."""
    lines = []
    if gaps:
        g = gaps[0]
        agree = 1 - (g["imagined_done_real_failed"] + g["real_success_imagined_not"]) / g["n"]
        lines.append(f"- **Does the learned simulator judge outcomes as the real one does?** For the SFT policy "
                     f"(iteration 0), imagined and real outcomes agree on {_pct(agree)} of {g['n']} init states: the "
                     f"world model + reflector call {g['imagined_done_real_failed']} real failures a success (optimism, "
                     f"which RL can exploit) and miss {g['real_success_imagined_not']} real successes (pessimism: reward "
                     "RL never sees).")
        last = gaps[-1]
        lines.append(f"- **Reward hacking:** inside the world model the policy went from {_pct(g['imagined'])} to "
                     f"{_pct(last['imagined'])}; in the real simulator, from the same init states, from {_pct(g['real'])} "
                     f"to {_pct(last['real'])}.")
    rows = results["rl"]
    if rows:
        flat = sum(r.get("zero_advantage_groups", 0.0) for r in rows) / len(rows)
        done = sum(r.get("done_fraction", 0.0) for r in rows) / len(rows)
        lines.append(f"- **Learning signal:** {_pct(flat)} of the RL groups had no reward spread (their 8 rollouts "
                     f"judged alike), so they taught nothing; {_pct(done)} of the imagined episodes ended with p(done) "
                     "> eta.")
    t4 = [results["evals"].get(f"table4_{n}") for n in ("sft", "rl")]
    if all(t4):
        stopped = [e for t in t4 for e in t["episodes"] if e["outcome"] == "reflector"]
        wrong = sum(not e["success"] for e in stopped)
        lines.append(f"- **Reflector on real videos:** it stopped {len(stopped)} real episodes, {wrong} of them not a "
                     "success (a false positive ends an episode that might still have succeeded).")
    return lines or ["Nothing measured yet."]


def budget(results: dict) -> list[str]:
    lines = ["| data | episodes | simulator steps | used for |", "|---|---|---|---|"]
    prov = results["provenance"]
    for d in (prov or {}).get("data", []):
        lines.append(f"| models: {d['name']} | {d['episodes']} ({d['successes']} successes) | {d['sim_steps']} | {d['used_for']} |")
    if prov:
        seeds = prov.get("sft_seeds") or []
        episodes = f"{sum(r['episodes'] for r in seeds)} of the chosen candidate's seeds (others: the models report)" \
            if seeds else "see the models report"
        lines.append(f"| models: SFT selection | {episodes} | not recorded | {prov['selection']} |")
    lines.append("| RL in imagination | 0 | **0** | the trainer and the rollout workers never start a simulator |")
    for name, ev in sorted(results["evals"].items()):
        if ev:
            lines.append(f"| {name} | {len(ev['episodes'])} | {results['sim_steps'][name]} | measurement only |")
    if results.get("dyna"):
        e = results["dyna"]["explore"]
        lines.append(f"| Dyna round 1: exploration | {e['episodes']} ({e['successes']} successes) | {e['steps']} | "
                     "world model and reflector fine-tuning, RL start states |")
    curve = [p["real"] for p in results["curve"]]
    if curve:
        lines.append(f"| curve (real) | {sum(len(c['episodes']) for c in curve)} | {results['curve_sim_steps']} | "
                     "measurement only |")
    return lines


def render(config, results: dict, gaps: list[dict], png: str) -> str:
    prov = results["provenance"] or {}
    stage_rows = [f"| {name} | {r.wall_s / 60:.1f} min | {r.peak_rss_mb / 1024:.1f} GB |"
                  for name, r in sorted(results["stages"].items())]
    lines = ["# RL in imagination vs SFT, measured in the real LIBERO simulator", "",
             f"Suite {config.suite}, tasks {config.tasks}. Produced by `{command(config)}`.", "",
             "## Setup",
             f"- Models: {config.models}" + (f" ({prov.get('made_by', '')}). Policy: {prov.get('policy', '')}." if prov else "."),
             f"- Init states: {prov.get('init_states', 'see the models report')}. RL starts from keyframes of the demos "
             "and exploration episodes (the start-state bank); the curve's imagined episodes start from the first frame of "
             "evaluation init states, for measurement only.",
             f"- RL: {config.iterations} iterations x {config.groups} start states x {config.group_size} rollouts, horizon "
             f"{config.horizon} chunks, eta {config.eta}"
             + (f" and the grasp gate at {100 * config.grasp_gate:.2f} cm" if config.grasp_gate else "")
             + "; LOOP (leave-one-out advantages), PPO clip 0.1 "
             f"({'one ratio per action' if config.ratio == 'dimension' else 'one ratio per chunk'}), {config.epochs} "
             f"epochs, Adam lr {config.lr:g}, Laplace scale restarted at b = {config.exploration_scale:g}; world model "
             f"(U-Net autocast: {config.world_model_autocast}) and reflector frozen. These settings were set from training diagnostics (clip fraction, approximate KL, "
             "reward spread in imagination) of short runs, never from a real evaluation.", "",
             "## SFT vs RL in the real simulator", *headline(config, results["evals"], results["comparison"]),
             *seed_spread(prov), *seeds_section(config, results.get("seeds")),
             *controls_section(results.get("controls")), "",
             "## Sampled vs deterministic actions", *sampled_section(config, results.get("sampled", {})), "",
             "## Success vs RL iteration, and the reward-hacking gap", *curve_section(gaps, png),
             *objective_section(config, results.get("objective", [])), "",
             "## RL training", *rl_section(results["rl"]), "",
             "## Table 4 analogue: termination by the reflector", *table4(results["evals"], results.get("table4_comparison")), "",
             "## What limits the result (measured)", *limits(results, gaps), "",
             "## Beyond the paper: one Dyna round", *dyna_section(config, results), "",
             "## Real-data budget", *budget(results), "",
             *(["## Run notes (the experiment directory's NOTES.md)", results["notes"], ""] if results.get("notes") else []),
             "## Stages: wall time and peak memory (2-core CPU machine)", "| stage | wall | peak memory |", "|---|---|---|",
             *stage_rows, ""]
    return "\n".join(lines)
