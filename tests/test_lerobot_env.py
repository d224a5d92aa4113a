"""The imagined env under its gymnasium id, where a LeRobot LIBERO env goes: made by
`gymnasium.make` over real world-model and reflector servers, it passes gymnasium's checker,
names its observations as LeRobot does and takes LeRobot's one action per step."""
from __future__ import annotations

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from servers import serving, tiny_model  # noqa: E402
from worldenv.client.gym_env import ImaginedEnv  # noqa: E402
from worldenv.client.registration import LIBERO_ENV_ID  # noqa: E402
from worldenv.data.start_bank import synthetic_bank  # noqa: E402


@pytest.fixture(scope="module")
def served():
    with serving("world-model") as wm, serving("reflector") as rf:
        yield wm.address, rf.address


@pytest.fixture(scope="module")
def bank_file(tmp_path_factory):
    return str(synthetic_bank(4).save(tmp_path_factory.mktemp("bank") / "starts.npz"))


@pytest.mark.parametrize("obs_type", ["lerobot", "pixels_agent_pos"])
@pytest.mark.parametrize("action_mode", ["step", "chunk"])
def test_the_env_id_makes_an_env_that_passes_gymnasiums_checker(served, bank_file, obs_type, action_mode):
    from gymnasium.utils.env_checker import check_env
    import worldenv.client  # noqa: F401  (registers the ids, as a LeRobot env package does)

    env = gym.make(LIBERO_ENV_ID, bank=bank_file, world_model=served[0], reflector=served[1], horizon=2,
                   eta=0.999, obs_type=obs_type, action_mode=action_mode)
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    keys = ["observation.images.image", "observation.state"] if obs_type == "lerobot" else ["pixels", "agent_pos"]
    assert list(obs) == keys and info["task"] == env.unwrapped.task_description != ""
    assert env.action_space.shape == ((7,) if action_mode == "step" else (8, 7))
    env.close()


def test_one_action_per_step_imagines_once_per_chunk_as_the_chunk_env_does(served, bank_file):
    env = gym.make(LIBERO_ENV_ID, bank=bank_file, world_model=served[0], reflector=served[1], horizon=3, eta=0.999)
    reference = ImaginedEnv(synthetic_bank(4), tiny_model("world-model"), tiny_model("reflector"), horizon=3,
                            eta=0.999)
    chunks = np.random.default_rng(0).uniform(-1, 1, (3, 8, 7)).astype(np.float32)
    obs, _ = env.reset(seed=0, options={"start": 1})
    first, _ = reference.reset(seed=0, options={"start": 1})
    np.testing.assert_array_equal(obs["observation.images.image"], first["frame"])
    for c, chunk in enumerate(chunks):
        for k, action in enumerate(chunk):
            obs, reward, terminated, truncated, info = env.step(action)
            if k < 7:
                assert reward == 0.0 and not (terminated or truncated)
        want = reference.step(chunk)
        np.testing.assert_array_equal(obs["observation.images.image"], want[0]["frame"])
        np.testing.assert_array_equal(obs["observation.state"], want[0]["proprio"])
        assert (reward, terminated, truncated) == want[1:4]
    assert truncated
    env.close()
    reference.close()


def test_bad_options_are_refused_by_name(served, bank_file):
    with pytest.raises(ValueError, match="obs_type"):
        gym.make(LIBERO_ENV_ID, bank=bank_file, world_model=served[0], reflector=served[1], obs_type="state")


def test_the_lerobot_style_example_loop_runs_over_served_models(served, bank_file, capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "lerobot_eval_loop.py"
    spec = importlib.util.spec_from_file_location("lerobot_eval_loop", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with serving("policy") as policy:
        results = example.main(["--episodes", "2", "--horizon", "2", "--bank", bank_file, "--world-model", served[0],
                                "--reflector", served[1], "--policy", policy.address])
    assert all(r["steps"] in (8, 16) and 0 <= r["reward"] <= 1 for r in results)   # one action a step, K = 8
    assert "'task'" in capsys.readouterr().out
