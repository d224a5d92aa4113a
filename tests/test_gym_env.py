"""The Gymnasium wrapper over real world-model and reflector servers."""
import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from servers import serving  # noqa: E402
from worldenv.client.gym_env import ImaginedEnv  # noqa: E402
from worldenv.data.start_bank import synthetic_bank  # noqa: E402


def test_imagined_env_follows_the_gymnasium_api():
    from gymnasium.utils.env_checker import check_env

    with serving("world-model") as wm, serving("reflector") as rf:
        with ImaginedEnv(synthetic_bank(4), wm.address, rf.address, horizon=3, eta=0.999) as env:
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
