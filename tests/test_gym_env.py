"""The Gymnasium wrapper, over real world-model and reflector servers and over in-process models."""
import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from servers import serving, tiny_model  # noqa: E402
from worldenv.client.gym_env import ImaginedEnv  # noqa: E402
from worldenv.data.start_bank import synthetic_bank  # noqa: E402


def test_imagined_env_follows_the_gymnasium_api():
    from gymnasium.utils.env_checker import check_env

    with serving("world-model") as wm, serving("reflector") as rf:
        with ImaginedEnv.connect(synthetic_bank(4), wm.address, rf.address, horizon=3, eta=0.999) as env:
            check_env(env, skip_render_check=True)
            obs, info = env.reset(seed=0, options={"start": 2})
            assert info["start_id"] == "synthetic/2/2" and obs["frame"].shape == (64, 64, 3)
            total = 0
            for t in range(3):
                obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
                assert 0 <= reward <= 1 and not terminated and info["step"] == t + 1
                total += 1
            assert truncated and total == 3
            assert env.observation_space.contains(obs)
            assert len(wm.service.sessions) == 1
        assert len(wm.service.sessions) == 0


def test_in_process_env_passes_the_checks_and_matches_the_served_one():
    from gymnasium.utils.env_checker import check_env

    bank = synthetic_bank(4)
    local = ImaginedEnv(bank, tiny_model("world-model"), tiny_model("reflector"), horizon=4, eta=0.999)
    check_env(local, skip_render_check=True)
    chunks = np.random.default_rng(0).uniform(-1.2, 1.2, (4, 8, 7)).astype(np.float32)
    with serving("world-model") as wm, serving("reflector") as rf:
        with ImaginedEnv.connect(bank, wm.address, rf.address, horizon=4, eta=0.999) as remote:
            for env in (local, remote):
                env.reset(seed=0, options={"start": 1})
            for chunk in chunks:
                a, b = local.step(chunk), remote.step(chunk)
                np.testing.assert_array_equal(a[0]["frame"], b[0]["frame"])
                np.testing.assert_array_equal(a[0]["proprio"], b[0]["proprio"])
                assert a[1:4] == b[1:4]
    local.close()


def test_vector_env_steps_as_gymnasiums_sync_vector_env_of_imagined_envs():
    from worldenv.client.vector_env import ImaginedVectorEnv
    bank, b = synthetic_bank(5), 3
    world, reflector = tiny_model("world-model"), tiny_model("reflector")
    ours = ImaginedVectorEnv(bank, b, world, reflector, horizon=3, eta=0.999)
    reference = gym.vector.SyncVectorEnv([lambda: ImaginedEnv(bank, world, reflector, horizon=3, eta=0.999)] * b)
    assert ours.observation_space == reference.observation_space and ours.action_space == reference.action_space
    obs_a, _ = ours.reset(seed=7)
    obs_b, _ = reference.reset(seed=7)
    chunks = np.random.default_rng(1).uniform(-1, 1, (7, b, 8, 7)).astype(np.float32)
    for t, chunk in enumerate([None, *chunks]):
        if chunk is not None:
            obs_a, r_a, term_a, trunc_a, _ = ours.step(chunk)
            obs_b, r_b, term_b, trunc_b, _ = reference.step(chunk)
            np.testing.assert_allclose(r_a, r_b, atol=1e-4)   # frames a grey level apart move p(done) slightly
            np.testing.assert_array_equal(term_a, term_b)
            np.testing.assert_array_equal(trunc_a, trunc_b)
        assert ours.observation_space.contains(obs_a)
        # one batch of 3 against three batches of 1: the same up to float rounding (a grey level or two at
        # a few pixels, carried a step or two through the memory bank; how many depends on the CPU's
        # kernels: up to 1.03 % of pixels on one machine here, under 1 % on another)
        diff = np.abs(obs_a["frame"].astype(int) - obs_b["frame"])
        assert diff.max() <= 2 and (diff > 0).mean() < 3e-2
        np.testing.assert_allclose(obs_a["proprio"], obs_b["proprio"], atol=1e-6)
    assert trunc_a.any(), "the horizon was reached and the autoreset exercised"
    ours.close()
    reference.close()


def test_vector_env_over_served_models_closes_its_sessions():
    from worldenv.client.vector_env import ImaginedVectorEnv
    with serving("world-model") as wm, serving("reflector") as rf:
        env = ImaginedVectorEnv.connect(synthetic_bank(4), 4, wm.address, rf.address, horizon=2, eta=0.999)
        obs, _ = env.reset(seed=0)
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs["frame"].shape == (4, 64, 64, 3) and reward.shape == (4,) and len(wm.service.sessions) == 4
        env.close()
        assert len(wm.service.sessions) == 0


def test_the_grasp_gate_keeps_an_episode_running_until_the_imagined_gripper_holds_something():
    bank, world, reflector = synthetic_bank(2), tiny_model("world-model"), tiny_model("reflector")
    open_chunk = np.zeros((8, 7), np.float32)
    open_chunk[:, -1] = -1.0                                    # the gripper never closes
    plain = ImaginedEnv(bank, world, reflector, horizon=3, eta=1e-9)  # every verdict is "done"
    gated = ImaginedEnv(bank, world, reflector, horizon=3, eta=1e-9, grasp_gate=0.015)
    for env in (plain, gated):
        env.reset(seed=0, options={"start": 0})
    assert plain.step(open_chunk)[2] is True
    steps = [gated.step(open_chunk) for _ in range(3)]
    assert [s[2] for s in steps] == [False] * 3 and steps[-1][3] is True     # never done; truncated at the horizon
    plain.close()
    gated.close()
