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
