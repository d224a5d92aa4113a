"""The LOOP trainer: one real iteration over a real Redis, real gRPC services with tiny models
and a rollout worker; resume; stale and failed episodes dropped."""
from __future__ import annotations

import json
import logging
import os
import threading

import numpy as np
import pytest
import torch

from servers import serving
from worldenv import models
from worldenv.models import precision
from worldenv.rl import trainer
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.rl.queue import RolloutQueue
from worldenv.rl.worker import RolloutWorker
from worldenv.data.episodes import EpisodeStore, ImaginedEpisode
from worldenv.data.start_bank import synthetic_bank
from worldenv.rl.settings import RLConfig


def _episode(i: int, group: str, version: int = 1, reward: float = 0.5, status: str = "horizon", steps: int = 2):
    return ImaginedEpisode(id=f"e{i}", status=status, policy_version=version, instruction="x", start_id="s",
                           group_id=group, reward=reward, frames=np.zeros((steps + 1, 8, 8, 3), np.uint8),
                           actions=np.zeros((steps, 8, 7), np.float32), log_probs=np.zeros(steps, np.float32),
                           p_done=np.zeros(steps, np.float32),
                           proprio=np.zeros((steps + 1, 8), np.float32))


def test_stale_failed_and_incomplete_groups_are_dropped_and_counted():
    episodes = ([_episode(i, "a", reward=float(i)) for i in range(2)] + [_episode(2, "b", version=1), _episode(3, "b", 3)]
                + [_episode(4, "c", 3), _episode(5, "c", 3, status="failed", steps=0)] + [_episode(6, "d", 3)])
    kept, dropped = trainer.fresh_groups(episodes, version=3, max_staleness=1, group_size=2)
    assert [[e.id for e in g] for g in kept] == [] and dropped["stale_episodes"] == 3
    kept, dropped = trainer.fresh_groups(episodes, version=2, max_staleness=1, group_size=2)
    assert [[e.id for e in g] for g in kept] == [["e0", "e1"], ["e2", "e3"]]
    assert dropped == {"stale_episodes": 0, "failed_episodes": 1, "dropped_groups": 2, "dropped_stale": 0,
                       "dropped_failed": 1, "dropped_incomplete": 1}
    batch, rewards = trainer.flatten(kept)
    assert rewards.tolist() == [[0.0, 1.0], [0.5, 0.5]]
    assert batch.advantages.tolist() == [-1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]       # broadcast over 2 steps


def test_the_shuffled_rewards_control_permutes_each_groups_rewards_among_its_rollouts():
    groups = [[_episode(g * 8 + i, f"g{g}", reward=float(i == g)) for i in range(8)] for g in range(3)]
    _, true = trainer.flatten(groups)
    runs = [trainer.flatten(groups, np.random.default_rng([0, it]))[1] for it in (0, 0, 1)]
    for rewards in runs:
        assert (np.sort(rewards, axis=1) == np.sort(true, axis=1)).all(), "each group keeps its rewards"
    assert (runs[0] == runs[1]).all(), "seeded by (seed, iteration): a resumed run shuffles the same way"
    assert not (runs[0] == true).all() and not (runs[0] == runs[2]).all()
    batch, rewards = trainer.flatten(groups, np.random.default_rng([0, 0]))
    winner = [int(np.argmax(r)) for r in rewards]                     # the rollout paid in each group
    assert [batch.advantages[2 * (g * 8 + w)] for g, w in enumerate(winner)] == [1.0] * 3


def test_controls_at_one_seed_part_by_their_shuffle_seed_alone(tmp_path):
    from worldenv.measure import training_runs
    base = dict(out=str(tmp_path / "run"), seed=5, shuffle_rewards=True)
    groups = [[_episode(g * 8 + i, f"g{g}", reward=float(i == g)) for i in range(8)] for g in range(3)]
    shuffled = {name: trainer.flatten(groups, trainer.shuffle_rng(RLConfig(**base, **extra), 4))[1]
                for name, extra in (("default", {}), ("own", {"shuffle_seed": 5}), ("other", {"shuffle_seed": 9}))}
    assert (shuffled["default"] == shuffled["own"]).all(), "no --shuffle-seed: the permutations of --seed"
    assert not (shuffled["default"] == shuffled["other"]).all()
    assert trainer.shuffle_rng(RLConfig(out=base["out"], seed=5), 4) is None, "RL permutes nothing"
    with pytest.raises(ValueError, match="shuffle_seed: .*--shuffle-rewards"):
        RLConfig(out=base["out"], shuffle_seed=9)
    settings = [json.loads(RLConfig(**base, shuffle_seed=seed).model_dump_json()) for seed in (None, 9)]
    assert training_runs.unpaired_settings(*settings) == [], "two controls pair: the same starts and sampling seeds"


def test_the_done_reward_pays_the_imagined_outcome_alone(tmp_path):
    """--reward done: a group whose rollouts all ended done with different p(done) gives no
    advantage (and is not informative); a mixed group pays the done ones 1."""
    alike = [_episode(i, "a", reward=r, status="done") for i, r in enumerate((0.91, 1.0))]
    mixed = [_episode(2, "b", reward=0.97, status="done"), _episode(3, "b", reward=0.02)]
    assert trainer.group_rewards([alike, mixed]).flatten().tolist() == pytest.approx([0.91, 1.0, 0.97, 0.02])
    batch, rewards = trainer.flatten([alike, mixed], reward="done")
    assert rewards.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert batch.advantages.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, -1.0, -1.0]
    p_done, _ = trainer.flatten([alike, mixed])
    assert p_done.advantages[:4].tolist() == pytest.approx([-0.09, -0.09, 0.09, 0.09]), "p(done) pays confidence"
    with pytest.raises(ValueError, match="reward"):
        trainer.group_rewards([alike], "success")
    with pytest.raises(ValueError, match="reward"):
        (tmp_path / "config.json").write_text("{}")
        RLConfig(out="x", reward="done", value=str(tmp_path))


@pytest.fixture()
def stack(request, redis_client, key_prefix, tmp_path):
    """The three services, tiny models, and a rollout worker; the policy (also at tmp/policy0)
    explores with the noise `request.param` names (indirect parametrisation), independent by default."""
    torch.manual_seed(5)
    served = models.build("policy")
    served.config = served.config.model_copy(update={"noise": getattr(request, "param", "independent")})
    served.save_pretrained(tmp_path / "policy0")
    with serving("world-model") as wm, serving("reflector") as rf, serving("policy", model=served) as po:
        clients = [PolicyClient(po.address).connect(), WorldModelClient(wm.address).connect(),
                   ReflectorClient(rf.address).connect()]
        worker = RolloutWorker.served(RolloutQueue(redis_client, key_prefix), EpisodeStore(redis_client, key_prefix), *clients,
                               batch_size=8, consumer="w", block_ms=100)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, kwargs={"stop": stop}, daemon=True)
        thread.start()
        yield {"policy_addr": po.address, "tmp": tmp_path, "worker": worker}
        stop.set()
        thread.join(10)
        for c in clients:
            c.close()


def test_a_restarted_trainer_picks_only_its_runs_earlier_attempts_jobs():
    earlier = trainer.earlier_attempts("run.1", "abc123")
    assert earlier("run.1-it0003-def456") and earlier("run.1-it12345-def456")
    assert earlier(trainer.iteration_run_id("run.1", 3, "def456")), "the format the trainer writes"
    assert not earlier(trainer.iteration_run_id("run.1", 3, "abc123"))
    assert not earlier("run.1-it0003-abc123"), "its own attempt's"
    assert not earlier("runx1-it0003-def456") and not earlier("run.1-x-it0003-def456"), "another run's"
    assert not earlier("run.1-it0003-def4567") and not earlier("rollout-run.1-it0003-def456")


def _config(stack, redis_url, key_prefix, out: str, bank: int = 4, **settings) -> RLConfig:
    """A run against the fixture's stack from a synthetic bank of `bank` start states."""
    tmp = stack["tmp"]
    synthetic_bank(bank).save(tmp / "starts.npz")
    return RLConfig(redis_url=redis_url, prefix=key_prefix, policy_addr=stack["policy_addr"], policy=str(tmp / "policy0"),
                    starts=str(tmp / "starts.npz"), out=str(tmp / out), horizon=2, eta=0.999, timeout=120, **settings)


def test_one_real_iteration_publishes_a_new_policy_and_resume_continues(stack, redis_url, key_prefix):
    tmp = stack["tmp"]
    config = _config(stack, redis_url, key_prefix, "run", iterations=1, groups=2, group_size=4, epochs=2, minibatch=8,
                     lr=1e-3, min_reward_spread=0.0)
    bank = synthetic_bank(4)
    with PolicyClient(stack["policy_addr"]) as client:
        before = client.act(bank.frames[:2], bank.proprio[:2], bank.instructions[:2], deterministic=True)
        summary = trainer.run(config)
        after = client.act(bank.frames[:2], bank.proprio[:2], bank.instructions[:2], deterministic=True)
    (row,) = summary["rows"]
    assert after.policy_version == summary["version"] == 3 > before.policy_version     # start sync, then one update
    assert not np.allclose(after.loc, before.loc), "the served policy changed"
    assert row["timesteps"] == 16 and row["dropped_groups"] == 0 and 0 <= row["reward_mean"] <= 1
    assert {"clip_fraction", "approx_kl", "zero_advantage_groups", "imagined_steps_per_s"} <= set(row)
    assert (tmp / "run" / "curves.png").is_file() and (tmp / "run" / "policy" / "config.json").is_file()
    resumed = trainer.run(config.model_copy(update={"iterations": 2}))
    assert resumed["resumed_at"] == 1 and [r["iteration"] for r in resumed["rows"]] == [0, 1]
    lines = (tmp / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1]
    first, second = resumed["rows"]
    assert first["mean_step_b"] > 0 and first["mean_drift_b"] == pytest.approx(first["mean_step_b"])
    assert "step_cosine" not in first and -1 <= second["step_cosine"] <= 1, "the resumed run kept the previous step"
    assert 0 < second["straightness"] <= 1 + 1e-9


def test_a_run_and_its_shuffled_control_keep_their_settings_and_pair_by_iteration(stack, redis_url, key_prefix):
    from worldenv.measure import training_runs
    tmp = stack["tmp"]
    settings = dict(iterations=2, groups=2, group_size=4, epochs=1, minibatch=8, lr=1e-3, min_reward_spread=0.0,
                    exploration_scale=0.1, seed=5, auth_token="secret")
    trainer.run(_config(stack, redis_url, key_prefix, "paired_rl", **settings))
    # the control also takes another number of minibatch passes: its updates use the RNG otherwise,
    # and its start draws must not follow them
    trainer.run(_config(stack, redis_url, key_prefix, "paired_ctl", shuffle_rewards=True, **(settings | {"epochs": 3})))
    kept = json.loads((tmp / "paired_ctl" / "run.json").read_text())
    assert kept["settings"]["shuffle_rewards"] is True and kept["settings"]["seed"] == 5
    assert "auth_token" not in kept["settings"] and kept["resumes"] == []
    rl, ctl = (training_runs.load_run(str(tmp / name)) for name in ("paired_rl", "paired_ctl"))
    result = training_runs.pair_runs(ctl, rl, resamples=200)
    assert result["start"]["a"] == result["start"]["b"], "the same policy, starts and sampling seeds at iteration 0"
    assert result["n"] == 1 and result["a_run"]["updates"] == result["b_run"]["updates"] == 2
    logged = [json.loads(line) for line in (tmp / "paired_rl" / "groups.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (tmp / "paired_rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in logged] == [0, 1]
    for row, groups in zip(metrics, (r["groups"] for r in logged)):
        assert len(groups) == 2 and all(len(g["done"]) == len(g["rewards"]) == 4 for g in groups)
        assert all(g["start"].startswith("synthetic/") for g in groups)
        assert row["zero_advantage_groups"] == pytest.approx(1 - np.mean([g["used"] for g in groups]))
        assert row["done_fraction"] == pytest.approx(np.mean([g["done"] for g in groups]))
    logged_ctl = [json.loads(line) for line in (tmp / "paired_ctl" / "groups.jsonl").read_text().splitlines()]
    assert [[g["start"] for g in r["groups"]] for r in logged] == [[g["start"] for g in r["groups"]] for r in logged_ctl]
    drawn = {g["start"].split("/")[1] for g in logged[1]["groups"]}       # both runs drew the same starts
    assert set(result["by_task"]) == drawn and all(v["n"] == 1 for v in result["by_task"].values())
    other = _config(stack, redis_url, key_prefix, "paired_other", **(settings | {"seed": 6, "iterations": 1}))
    trainer.run(other)
    with pytest.raises(ValueError, match="seed: the runs differ"):
        training_runs.pair_runs(ctl, training_runs.load_run(str(tmp / "paired_other")))
    # a resume elsewhere (another Redis prefix, more iterations) is not a change; another lr is, and is logged
    trainer.run(_config(stack, redis_url, key_prefix, "paired_rl", **(settings | {"iterations": 3, "lr": 2e-3})))
    kept = json.loads((tmp / "paired_rl" / "run.json").read_text())
    (resume,) = kept["resumes"]
    assert (resume["at_iteration"], resume["changed"]) == (2, {"lr": [1e-3, 2e-3]})
    for start in (kept["machine"], resume["machine"]):   # where each start ran, to read its wall times by
        assert start["cores"] == os.cpu_count() and start["torch"] == torch.__version__ and start["cpu"]
        assert start["cpu_bfloat16"] == precision.native_bfloat16("cpu")   # what `up`'s autocast 'auto' ran in
    assert kept["machine"]["at"] <= resume["machine"]["at"], "the first start's machine is kept on a resume"


def test_groups_without_reward_spread_skip_the_update_and_snapshots_are_kept(stack, redis_url, key_prefix):
    tmp = stack["tmp"]
    config = _config(stack, redis_url, key_prefix, "flat", iterations=2, groups=2, group_size=4, min_reward_spread=1.0,
                     snapshot_every=1, exploration_scale=0.1)
    summary = trainer.run(config)
    assert [r.get("skipped") for r in summary["rows"]] == [True, True]
    assert summary["version"] == 2, "no update was published after the start sync"
    assert all(r["zero_advantage_groups"] == 1.0 and 0 <= r["reward_mean"] <= 1 for r in summary["rows"])
    snaps = sorted(p.name for p in (tmp / "flat" / "snapshots").iterdir())
    assert snaps == ["iteration0000", "iteration0001", "iteration0002"]
    start = models.load(tmp / "flat" / "snapshots" / "iteration0000", role="policy")
    _, scale = start(torch.from_numpy(synthetic_bank(1).frames), torch.from_numpy(synthetic_bank(1).proprio), ["x"])
    assert torch.allclose(scale, torch.full_like(scale, 0.1), rtol=1e-4), "the policy restarts RL at the exploration scale"


def test_open_starts_are_replayed_and_remembered_across_a_resume(stack, redis_url, key_prefix):
    tmp = stack["tmp"]
    config = _config(stack, redis_url, key_prefix, "replay", bank=8, iterations=1, groups=4, group_size=4,
                     min_reward_spread=0.0, replay_open=0.5, exploration_scale=0.1)
    first = trainer.run(config)["rows"][0]
    assert first["replayed_groups"] == 0 and first["informative_replayed"] is None, "nothing seen yet"
    assert first["open_starts"] == 4 and first["informative_fresh"] == 1.0   # any spread counts at min spread 0
    state = torch.load(tmp / "replay" / "trainer_state.pt", weights_only=False)
    assert len(state["start_replay"]["scores"]) == 4
    resumed = trainer.run(config.model_copy(update={"iterations": 2}))
    second = resumed["rows"][1]
    assert resumed["resumed_at"] == 1 and second["replayed_groups"] == 2 and second["informative_replayed"] == 1.0
    assert second["open_starts"] >= 4, "the resumed run kept what the first iteration saw"


def test_a_fixed_scale_keeps_b_and_trains_the_mean(stack, redis_url, key_prefix):
    tmp = stack["tmp"]
    config = _config(stack, redis_url, key_prefix, "fixed", iterations=1, groups=2, group_size=4, epochs=2, minibatch=8,
                     lr=1e-3, min_reward_spread=0.0, exploration_scale=0.1, learn_scale=False)
    trainer.run(config)
    start = models.load(tmp / "policy0", role="policy")
    start.reset_scale(0.1)
    after = models.load(tmp / "fixed" / "policy", role="policy")
    for name, p in start.scale_head.state_dict().items():
        assert torch.equal(after.scale_head.state_dict()[name], p), f"scale_head.{name} is kept"
    assert not torch.equal(after.loc_head.weight, start.loc_head.weight), "the mean is trained"
    with pytest.raises(ValueError, match="head_lr, learn_scale:.*resume with the --head-lr and --learn-scale"):
        trainer.run(config.model_copy(update={"iterations": 2, "learn_scale": True}))


def test_a_fixed_scale_needs_a_scale_head():
    class NoHead(torch.nn.Module):
        spec = type("Spec", (), {"arch": "x"})()
    from worldenv.models import laplace
    with pytest.raises(ValueError, match="--learn-scale: the x policy has no Laplace scale head"):
        laplace.freeze_scale(NoHead(), "--learn-scale")


def test_a_ratio_per_action_clips_each_action_and_trains(stack, redis_url, key_prefix):
    tmp = stack["tmp"]
    config = _config(stack, redis_url, key_prefix, "per_action", iterations=1, groups=2, group_size=4, epochs=2,
                     minibatch=8, lr=1e-3, min_reward_spread=0.0, ratio="dimension")
    summary = trainer.run(config)
    (row,) = summary["rows"]
    assert row["timesteps"] == 16 and 0 <= row["clip_fraction"] <= 1 and row["approx_kl"] >= 0
    assert row["behaviour_gap"] < 1e-2, "the worker sampled with the trainer's weights: the same log-probs"
    start = models.load(tmp / "policy0", role="policy")
    after = models.load(tmp / "per_action" / "policy", role="policy")
    assert not torch.equal(after.loc_head.weight, start.loc_head.weight)


@pytest.mark.parametrize("stack", ["chunk"], indirect=True)
def test_a_policy_that_explores_one_offset_per_chunk_trains_through_the_services(stack, redis_url, key_prefix):
    """Noise correlated over the chunk end to end: the served policy samples it, the worker
    stores its log-probs, and the trainer's own copy (the same checkpoint) scores them the same
    way, one ratio per action dimension and chunk."""
    tmp = stack["tmp"]
    config = _config(stack, redis_url, key_prefix, "chunk", iterations=1, groups=2, group_size=4, epochs=2,
                     minibatch=8, lr=1e-3, min_reward_spread=0.0, ratio="dimension")
    summary = trainer.run(config)
    (row,) = summary["rows"]
    assert row["timesteps"] == 16 and row["behaviour_gap"] < 1e-2, "the worker's log-probs are the trainer's"
    after = models.load(tmp / "chunk" / "policy", role="policy")
    assert after.noise == "chunk", "the run's checkpoint keeps the noise it explored with"
    bank = synthetic_bank(4)
    with PolicyClient(stack["policy_addr"]) as client:
        drawn = client.act(bank.frames, bank.proprio, bank.instructions, deterministic=False)
    z = (drawn.actions - drawn.loc) / drawn.scale
    assert np.allclose(z, z[:, :1], atol=1e-3), "the served policy draws one offset per chunk"


def test_the_per_action_loss_is_the_chunk_loss_gradient_at_the_start():
    """At ratio 1 both surrogates follow the same policy gradient direction; the per-action one
    clips a single action that moved, the chunk one the whole timestep."""
    from worldenv.rl import loop_ppo
    torch.manual_seed(0)
    new = torch.randn(3, 2, 4, requires_grad=True)
    adv = torch.tensor([1.0, -0.5, 2.0])
    chunk, _ = loop_ppo.ppo_loss(new.sum(dim=(1, 2)), new.detach().sum(dim=(1, 2)), adv)
    (g_chunk,) = torch.autograd.grad(chunk, new)
    per, stats = loop_ppo.ppo_loss(new, new.detach(), adv[:, None, None])
    (g_per,) = torch.autograd.grad(per, new)
    assert torch.allclose(g_per * 8, g_chunk) and stats["clip_fraction"] == 0
    old = new.detach().clone()
    old[0, 0, 0] -= 0.5                                     # one action of timestep 0 moved
    _, stats = loop_ppo.ppo_loss(new, old, adv[:, None, None])
    assert stats["clip_fraction"] == pytest.approx(1 / 24)
    _, stats = loop_ppo.ppo_loss(new.sum(dim=(1, 2)), old.sum(dim=(1, 2)), adv)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)


def test_a_run_started_again_in_a_deleted_directory_gets_its_episodes(stack, redis_url, key_prefix):
    """The queue runs a job id once ever: a new trainer process makes new job ids, so starting a
    run again under the same run id (its directory deleted) does not wait for results it skipped."""
    import shutil
    config = _config(stack, redis_url, key_prefix, "again", iterations=1, groups=1, group_size=2, epochs=1, minibatch=8,
                     lr=1e-4, min_reward_spread=0.0)
    first = trainer.run(config)
    shutil.rmtree(stack["tmp"] / "again")
    second = trainer.run(config)
    assert [r["iteration"] for r in second["rows"]] == [0] and second["rows"][0]["timesteps"] == 4
    assert first["rows"][0]["timesteps"] == 4


def test_episodes_the_store_dropped_before_the_trainer_read_them_are_named(stack, redis_url, key_prefix, caplog):
    """A worker whose episode store keeps fewer episodes than one iteration makes (`up --max-episodes`)
    loses some before the trainer reads them. A group short of some is dropped as incomplete; one
    gone whole leaves no trace in the row (here the oldest 4, one group), so the trainer says so."""
    stack["worker"].store.max_episodes = 4
    config = _config(stack, redis_url, key_prefix, "short", iterations=1, groups=2, group_size=4, epochs=1,
                     minibatch=8, lr=1e-4, min_reward_spread=0.0)
    caplog.set_level(logging.WARNING, logger="worldenv.rl.trainer")
    (row,) = trainer.run(config)["rows"]
    assert row["timesteps"] == 4 * 2 and row["dropped_groups"] == 0, "one group of 4 x 2 steps trained"
    assert any("4 of 8 episodes left the episode store" in r.getMessage() and "--max-episodes" in r.getMessage()
               and "at least one iteration (8)" in r.getMessage() for r in caplog.records)
