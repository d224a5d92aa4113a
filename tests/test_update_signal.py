"""`worldenv signal`: the signal and noise of LOOP's policy gradient. The estimators on vectors of
known signal, each group's gradient against the trainer's own PPO loss on a real (tiny) policy,
and the command end to end on tiny checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldenv import models
from worldenv.data.start_bank import synthetic_bank
from worldenv.measure import imagined, update_signal
from worldenv.models import laplace
from worldenv.models.roles import Observations
from worldenv.rl import loop_ppo


def _draws(k: int, d: int, signal: float, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K vectors mu + e, ||mu||^2 = signal, E||e||^2 = noise."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=d)
    mu *= np.sqrt(signal) / np.linalg.norm(mu)
    return mu + rng.normal(scale=np.sqrt(noise / d), size=(k, d)), mu


def test_signal_and_noise_recover_known_values_and_the_control_is_zero():
    v, _ = _draws(400, 2000, signal=1.0, noise=20.0, seed=0)
    got = update_signal.signal_and_noise(v @ v.T)
    assert got["groups"] == 400
    assert got["signal"] == pytest.approx(1.0, abs=0.3) and got["noise"] == pytest.approx(20.0, rel=0.05)
    assert got["snr"] == pytest.approx(0.05, abs=0.015)
    lo, hi = update_signal.bootstrap_signal(v @ v.T, 300, np.random.default_rng(1))
    assert lo < 1.0 < hi and lo > 0, "the interval holds the true signal and excludes zero"
    null, _ = _draws(400, 2000, signal=0.0, noise=20.0, seed=2)
    zero = update_signal.signal_and_noise(null @ null.T)
    assert abs(zero["signal"]) < 0.3 and zero["noise"] == pytest.approx(20.0, rel=0.05)
    lo, hi = update_signal.bootstrap_signal(null @ null.T, 300, np.random.default_rng(1))
    assert lo < 0 < hi
    one = update_signal.signal_and_noise(np.ones((1, 1)))
    assert one["groups"] == 1 and np.isnan(one["signal"]), "one group has no pair"


def test_the_signal_within_a_start_sees_directions_the_starts_do_not_share():
    """Each start has its own direction and the starts' average is zero: the signal across all
    pairs is about 0, the signal within a start about ||mu_s||^2."""
    rng = np.random.default_rng(5)
    d, per_start = 400, 2
    directions = rng.normal(size=(300, d))
    directions *= np.sqrt(2.0) / np.linalg.norm(directions, axis=1, keepdims=True)            # ||mu_s||^2 = 2
    starts = np.repeat(np.arange(300), per_start)
    v = directions[starts] + rng.normal(scale=np.sqrt(10.0 / d), size=(len(starts), d))
    gram = v @ v.T
    assert abs(update_signal.signal_and_noise(gram)["signal"]) < 0.1
    within = update_signal.within_start(gram, starts, 200, rng)
    assert within["pairs"] == 300 and within["signal"] == pytest.approx(2.0, abs=0.5)
    assert within["signal_ci95"][0] > 1.0, "the interval excludes zero"
    assert update_signal.within_start(gram[:3, :3], np.arange(3), 10, rng)["pairs"] == 0


def test_agreement_predicts_the_cosine_of_two_independent_updates():
    """B snr / (1 + B snr) against the cosine of sums of B independent draws, simulated."""
    snr, b = 0.05, 40
    rng = np.random.default_rng(3)
    cosines = []
    for seed in range(60):
        v, _ = _draws(2 * b, 500, signal=1.0, noise=1 / snr, seed=seed)
        a, c = v[:b].sum(0), v[b:].sum(0)
        cosines.append(a @ c / np.linalg.norm(a) / np.linalg.norm(c))
    assert np.mean(cosines) == pytest.approx(update_signal.agreement(snr, b), abs=0.05)
    split = update_signal.split_half_cosines(_draws(2 * b, 500, 1.0, 1 / snr, seed=99)[0], 200, rng)
    assert split.shape == (200,) and split.mean() == pytest.approx(update_signal.agreement(snr, b), abs=0.15)
    assert update_signal.agreement(-0.01, 10) == 0.0 and np.isnan(update_signal.agreement(float("nan"), 10))


def test_chunk_noise_draws_one_offset_per_chunk_and_scores_exactly_what_it_drew():
    """--noise chunk: each sampled chunk is loc + b z with z the same at every step; the
    log-probs `act` returns are the ones the trainer recomputes; seeded per item; z is a
    standard Laplace; deterministic items are loc."""
    torch.manual_seed(0)
    policy = models.build("policy")
    laplace.restart_scale(policy, 0.05)
    obs = Observations(synthetic_bank(64).frames, synthetic_bank(64).proprio, synthetic_bank(64).instructions)
    independent = policy.act(obs, False, seeds=list(range(1, 65)))
    policy.config = policy.config.model_copy(update={"noise": "chunk"})
    assert policy.noise == "chunk"
    chunk = policy.act(obs, [i % 4 == 0 for i in range(64)], seeds=list(range(1, 65)))
    z = (chunk.actions - chunk.loc) / chunk.scale                                             # (B, K, A)
    assert np.allclose(z, z[:, :1], atol=1e-4), "one offset per dimension, the same at every step"
    assert np.allclose(chunk.actions[::4], chunk.loc[::4]), "deterministic items are the mean"
    sampled = np.delete(z[:, 0], np.s_[::4], axis=0)
    assert np.abs(sampled).mean() == pytest.approx(1.0, abs=0.15) and abs(np.median(sampled)) < 0.15, "Laplace(0, 1)"
    z_ind = (independent.actions - independent.loc) / independent.scale
    assert not np.allclose(z_ind, z_ind[:, :1], atol=1e-2), "independent noise differs along the chunk"
    actions = torch.from_numpy(chunk.actions)
    terms = policy.log_prob_terms(obs, actions)
    assert terms.shape == (64, 1, 7)
    assert np.allclose(policy.log_prob(obs, actions).detach().numpy(), chunk.log_probs, atol=1e-3)
    by_hand = (-np.abs(z[:, 0]) - np.log(2 * chunk.scale[:, 0])).sum(axis=1)
    assert np.allclose(chunk.log_probs, by_hand, atol=1e-3)
    again = policy.act(Observations(obs.frames[1:3], obs.proprio[1:3], obs.instructions[1:3]), False, seeds=[2, 3])
    assert np.allclose(again.actions, chunk.actions[1:3], atol=1e-6), "seeded per item, whatever the batch"
    with pytest.raises(ValueError, match="noise"):
        laplace.act(torch.distributions.Laplace(torch.zeros(1, 2, 3), torch.ones(1, 2, 3)), noise="pink")


@pytest.mark.parametrize("noise", ["independent", "chunk"])
def test_a_groups_gradient_is_the_trainers_first_ppo_step(noise):
    """sum_i A_i h_i, from `episode_scores`, equals -T times the gradient of `loop_ppo.ppo_loss`
    over the group's T timesteps at ratio 1 (per chunk or per action: the same at ratio 1)."""
    torch.manual_seed(0)
    policy, world_model, reflector = models.build("policy"), models.build("world_model"), models.build("reflector")
    laplace.restart_scale(policy, 0.05)
    policy.config = policy.config.model_copy(update={"noise": noise})
    bank = synthetic_bank(1).subset([0, 0, 0])
    records = imagined.rollouts(policy, world_model, reflector, bank, 3, 0.999999, deterministic=False, seed=4,
                                episodes=True)
    episodes = [r["episode"] for r in records]
    rewards = torch.tensor([0.9, 0.1, 0.4], dtype=torch.float64)
    adv = loop_ppo.leave_one_out(rewards).numpy()
    parts = update_signal.action_parts(7)
    scores = [update_signal.episode_scores(policy, e, parts) for e in episodes]
    by_part = {p: adv @ np.stack([h[p] for h in scores]).astype(np.float64) for p in parts}
    mine = sum(by_part.values())
    whole = adv @ np.stack([update_signal.episode_scores(policy, e, {"actions": None})["actions"] for e in episodes])
    assert np.allclose(mine, whole, rtol=1e-3, atol=1e-4 * np.abs(whole).max()), "the parts sum to the whole"
    params = [p for p in policy.parameters() if p.requires_grad]
    frames = np.concatenate([np.stack(e.frames[:-1]) for e in episodes])
    obs = Observations(frames, np.concatenate([np.stack(e.proprio[:-1]) for e in episodes]).astype(np.float32),
                       [e.instruction for e in episodes for _ in e.actions])
    actions = torch.from_numpy(np.concatenate([np.stack(e.actions) for e in episodes]).astype(np.float32))
    steps = torch.from_numpy(np.repeat(adv, [len(e.actions) for e in episodes]).astype(np.float32))
    for per_action in (False, True):
        new = policy.log_prob_terms(obs, actions) if per_action else policy.log_prob(obs, actions)
        a = steps[:, None, None] if per_action else steps
        if per_action:
            assert new.shape[1] == (1 if noise == "chunk" else 8)
        loss, stats = loop_ppo.ppo_loss(new, new.detach(), a, clip=0.1)
        assert float(stats["ratio_mean"]) == pytest.approx(1.0)
        grad = torch.autograd.grad(loss, params)
        trainer = -np.concatenate([g.double().flatten().numpy() for g in grad]) * new.numel()
        assert np.allclose(mine, trainer, rtol=1e-3, atol=1e-3 * np.abs(trainer).max())
    mask = update_signal.mean_mask(policy)
    assert mask.shape == mine.shape and 0 < (~mask).sum() < mask.size, "the scale head's entries are left out"


def _assert_scores_chunks(policy, e, lo: int, hi: int) -> None:
    """`episode_scores` of episode `e` equals, by hand, the gradient of the log-probs of its
    chunks lo..hi-1 alone (the chunks it sampled at)."""
    h = update_signal.episode_scores(policy, e, {"actions": None})["actions"]
    params = [p for p in policy.parameters() if p.requires_grad]
    obs = Observations(np.stack(e.frames[lo:hi]), np.stack(e.proprio[lo:hi]).astype(np.float32),
                       [e.instruction] * (hi - lo))
    grads = torch.autograd.grad(policy.log_prob(obs, torch.from_numpy(np.stack(e.actions[lo:hi]))).sum(), params,
                                allow_unused=True)
    by_hand = np.concatenate([(g if g is not None else torch.zeros_like(p)).flatten().numpy()
                              for g, p in zip(grads, params)])
    assert np.allclose(h, by_hand, rtol=1e-4, atol=1e-5 * np.abs(by_hand).max())


def test_sampling_at_one_chunk_shares_the_rest_and_scores_that_chunk_alone():
    """`imagine(explore=...)`: a group sampling at chunk 1 only plays its mean at chunks 0 and 2,
    so its rollouts share the state up to chunk 1 and differ there; `episode_scores` counts that
    chunk's log-probs alone."""
    torch.manual_seed(0)
    policy, world_model, reflector = models.build("policy"), models.build("world_model"), models.build("reflector")
    laplace.restart_scale(policy, 0.05)
    bank = synthetic_bank(1).subset([0, 0, 0])
    mean = imagined.rollouts(policy, world_model, reflector, bank, 3, 0.999999, episodes=True)[0]["episode"]
    records = imagined.rollouts(policy, world_model, reflector, bank, 3, 0.999999, deterministic=False, seed=4,
                                episodes=True, explore=[{1}, {1}, {1}])
    episodes = [r["episode"] for r in records]
    for e in episodes:
        assert e.explored == [False, True, False]
        assert np.allclose(e.actions[0], mean.actions[0], atol=1e-5), "the mean before the sampled chunk"
        gap = np.abs(e.frames[1].astype(int) - mean.frames[1].astype(int))
        assert gap.max() <= 1, f"so the same state at the sampled chunk, up to rounding ({gap.max()} grey levels)"
        assert not np.allclose(e.actions[1], mean.actions[1], atol=1e-4), "sampled there"
    assert not np.allclose(episodes[0].actions[1], episodes[1].actions[1]), "each rollout its own draw"
    every = imagined.rollouts(policy, world_model, reflector, bank.subset([0]), 3, 0.999999, deterministic=False,
                              seed=4, episodes=True)[0]["episode"]
    assert every.explored == [True, True, True]
    _assert_scores_chunks(policy, episodes[0], 1, 2)
    with pytest.raises(ValueError, match="explore: expected 3"):
        imagined.rollouts(policy, world_model, reflector, bank, 3, 0.999999, deterministic=False, seed=4,
                          explore=[{1}])
    rng = np.random.default_rng(0)
    drawn = update_signal.explored_chunks([1, 5, 30] * 200, rng)
    assert set(drawn[0::3]) == {0} and set(drawn[1::3]) == set(range(5)) and max(drawn[2::3]) < 30


def test_sampling_from_one_chunk_on_shares_the_prefix_and_scores_the_tail():
    """'tail' samples at the drawn chunk and every later one: its rollouts play the mean
    before it and their own draws from it on, and the score counts those chunks alone."""
    assert update_signal.explored_set("one", 3, 30) == {3}
    assert update_signal.explored_set("tail", 3, 5) == {3, 4} and update_signal.explored_set("tail", 0, 2) == {0, 1}
    with pytest.raises(ValueError, match="explore"):
        update_signal.explored_set("every", 0, 2)
    torch.manual_seed(0)
    policy, world_model, reflector = models.build("policy"), models.build("world_model"), models.build("reflector")
    laplace.restart_scale(policy, 0.05)
    bank = synthetic_bank(1).subset([0, 0])
    mean = imagined.rollouts(policy, world_model, reflector, bank, 3, 0.999999, episodes=True)[0]["episode"]
    tail = [update_signal.explored_set("tail", 1, 3)] * 2
    records = imagined.rollouts(policy, world_model, reflector, bank, 3, 0.999999, deterministic=False, seed=4,
                                episodes=True, explore=tail)
    episodes = [r["episode"] for r in records]
    for e in episodes:
        assert e.explored == [False, True, True]
        assert np.allclose(e.actions[0], mean.actions[0], atol=1e-5), "the mean before the drawn chunk"
        assert not np.allclose(e.actions[2], mean.actions[2], atol=1e-4), "sampled after it too"
    assert not np.allclose(episodes[0].actions[2], episodes[1].actions[2]), "each rollout its own draws"
    _assert_scores_chunks(policy, episodes[0], 1, 3)


def _tiny_signal_args(flags) -> list[str]:
    """`worldenv signal` on tiny random checkpoints and 8 synthetic starts (`tiny_model_flags`):
    6 groups of 3, two per start, 2 chunks, never done (eta 0.999999), every group kept."""
    return ["signal", *flags(8), "--groups", "6",
            "--per-start", "2", "--group-size", "3", "--horizon", "2", "--eta", "0.999999", "--min-reward-spread", "0",
            "--shuffles", "2", "--splits", "5", "--bootstrap", "20"]


def test_signal_command_sampling_at_one_chunk(tmp_path, capsys, tiny_model_flags):
    from worldenv import cli
    one = tmp_path / "one.json"
    assert cli.main([*_tiny_signal_args(tiny_model_flags), "--exploration-scales", "0.2", "--noise", "chunk", "--explore", "one",
                     "--out", str(one)]) == 0
    (s,) = json.loads(one.read_text())["scales"]
    assert s["explore"] == "one" and len(s["explored_chunk"]) == 6 and all(0 <= t < 2 for t in s["explored_chunk"])
    assert np.isfinite(s["figures"]["p_done/all/true"]["noise"])
    assert "b=0.2, noise chunk, sampling at one chunk: 6 groups" in capsys.readouterr().out
    tail = tmp_path / "tail.json"
    assert cli.main([*_tiny_signal_args(tiny_model_flags), "--exploration-scales", "0.2", "--explore", "tail",
                     "--out", str(tail)]) == 0
    (t,) = json.loads(tail.read_text())["scales"]
    assert t["explore"] == "tail" and t["explored_chunk"] == s["explored_chunk"], "the same chunks drawn as 'one'"
    assert "sampling at one chunk and every later one: 6 groups" in capsys.readouterr().out


def test_signal_command_on_tiny_checkpoints(tmp_path, capsys, tiny_model_flags):
    from worldenv import cli
    args = [*_tiny_signal_args(tiny_model_flags), "--exploration-scales", "0.05,0.2", "--noise", "independent,chunk",
            "--out", str(tmp_path / "signal.json")]
    assert cli.main(args) == 0
    result = json.loads((tmp_path / "signal.json").read_text())
    assert [(s["noise"], s["scale"]) for s in result["scales"]] == [
        ("independent", 0.05), ("independent", 0.2), ("chunk", 0.05), ("chunk", 0.2)]
    for s in result["scales"]:
        assert s["groups"] == 6 and len(s["rewards"]) == 6 and all(len(r) == 3 for r in s["rewards"])
        assert s["informative"] == {"p_done": 6, "done": 0}, "p(done) differs between rollouts; none ends done"
        assert set(s["figures"]) == {f"{k}/{p}/{t}" for k in ("p_done", "done")
                                     for p in ("all", "mean", "translation", "rotation", "gripper", "mean_done",
                                               "mean_failed")
                                     for t in ("true", "shuffled")}
        assert np.isnan(s["figures"]["done/all/true"]["signal"]), "no informative group: nothing to pair"
        true, control = s["figures"]["p_done/all/true"], s["figures"]["p_done/all/shuffled"]
        assert true["groups"] == 6 and np.isfinite(true["signal"]) and true["noise"] > 0
        assert control["draws"] == 2 and len(control["signals"]) == 2
        assert len(true["signal_ci95"]) == 2
        assert true["within_start"]["pairs"] == 3 and "within_start" in control, "3 starts, 2 groups each"
        assert len(s["mean_done"]) == 6 and not any(s["mean_done"]), "no mean episode ends done at eta 0.999999"
        assert s["figures"]["p_done/mean_failed/true"]["groups"] == 6 and s["figures"]["p_done/mean_done/true"]["groups"] == 0
    assert len(set(result["scales"][0]["ids"])) == 3
    assert result["scales"][0]["rewards"] != result["scales"][1]["rewards"], "the scale is restarted"
    assert result["scales"][0]["rewards"] != result["scales"][2]["rewards"], "the noise is switched"
    again = tmp_path / "again.json"
    assert cli.main([*args[:-1], str(again)]) == 0
    assert json.loads(again.read_text())["scales"][0]["rewards"] == result["scales"][0]["rewards"], "seeded"
    out = capsys.readouterr().out
    assert out.count("b=0.05, noise independent, sampling at every chunk: 6 groups") == 2
    assert "b=0.2, noise chunk, sampling at every chunk: 6 groups" in out and "reward p_done: 6 informative groups (100 %)" in out
    assert "reward done: 0 informative groups (0 %)" in out and "shuffled (2 draws)" in out
    assert "snr per part, true / shuffled: translation" in out
    assert "by the start's mean episode: done 0 informative groups" in out and "failed 6 informative groups" in out


@pytest.mark.parametrize("flag,value,message", [("--exploration-scales", "", "name at least one scale"),
                                                ("--exploration-scales", "0.1,x", "comma-separated numbers"),
                                                ("--groups", "1", "--groups: must be >= 2"),
                                                ("--noise", "independent,pink", "comma-separated names among"),
                                                ("--explore", "every,twice", "comma-separated names among"),
                                                ("--per-start", "3", "64 is not a multiple of --per-start 3"),
                                                ("--policy", "/no/such/policy", "--policy")])
def test_signal_command_names_the_bad_flag(flag, value, message, capsys):
    from worldenv import cli
    try:
        code = cli.main(["signal", flag, value])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
