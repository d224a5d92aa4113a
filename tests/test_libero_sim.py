"""LIBERO ground truth, CI-sized: one task, a couple of episodes, short horizons.

Checks that matter: our success flag is LIBERO's own check; HDF5 round-trips exactly; a crashed
env process fails its episode (with the reason) and is replaced; bad arguments are rejected
before any env process starts.
"""
from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

pytest.importorskip("libero")
pytest.importorskip("robosuite")

from worldenv.data import hdf5  # noqa: E402
from worldenv.sim import env as env_mod, episode, expert, policies, pool, recording, suites  # noqa: E402
from worldenv.sim.recording import Recorder  # noqa: E402

pytestmark = pytest.mark.libero
SUITE, TASK = "libero_object", 0


@pytest.fixture(scope="module")
def libero_env():
    env = env_mod.LiberoEnv(env_mod.EnvConfig(SUITE, TASK, image_size=64, wrist=True))
    yield env
    env.close()


def _expert_episode(env, init_index: int, chunk: int = 8, max_steps: int = 200):
    """Run the expert in-process through step_chunk; returns (recorder, per-step flags, LIBERO's checks)."""
    obs = env.reset(init_index)
    scripted = expert.ScriptedExpert()
    scripted.reset(env)
    recorder, flags, checks = Recorder(wrist=True), [], []
    for _ in range(max_steps // chunk):
        result = env.step_chunk(np.zeros((chunk, 7)), first=obs, policy=lambda: scripted.act(env))
        recorder.add(result)
        flags += result.success.tolist()
        checks.append(bool(env.inner._check_success()))  # LIBERO's own check, after the chunk
        obs = result.obs
        if result.succeeded:
            break
    return recorder, flags, checks


def test_success_flag_matches_libero_check(libero_env):
    recorder, flags, checks = _expert_episode(libero_env, init_index=0)
    assert flags[-1] and not any(flags[:-1]), "the flag turns on exactly at the step the episode ends"
    assert checks[-1] is True and not any(checks[:-1])
    # the per-observation labels are LIBERO's check of each recorded state
    assert recorder.last.success is True
    assert not any(o.success for o in recorder.before)


def test_frames_upright_and_rendered_once_per_chunk(libero_env):
    obs = libero_env.reset(1)
    assert obs.frame.shape == (64, 64, 3) and obs.frame.dtype == np.uint8 and obs.wrist.shape == (64, 64, 3)
    # MuJoCo returns the bottom row first; ours is that image flipped upright
    raw = libero_env.inner.sim.render(camera_name="agentview", width=64, height=64)
    np.testing.assert_array_equal(obs.frame, raw[::-1])
    result = libero_env.step_chunk(np.tile(env_mod.NOOP, (8, 1)), first=obs)
    assert len(result.before) == 8 and result.before[0].frame is not None
    assert all(o.frame is None for o in result.before[1:]) and result.obs.frame is not None
    assert result.obs.proprio.shape == (8,) and result.obs.proprio.dtype == np.float32


def test_hdf5_round_trip_is_identical(libero_env, tmp_path):
    recorder, _, _ = _expert_episode(libero_env, init_index=2, max_steps=48)
    written = recorder.episode({"id": f"{SUITE}/{TASK}/2", "init_index": 2, "outcome": "horizon"},
                               log_probs=[-1.5, -2.0])
    attrs = recording.task_attrs(suites.task(SUITE, TASK), {"image_size": 64})
    path = hdf5.write(tmp_path / "t_demo.hdf5", attrs, [written, written])
    back = hdf5.read(path)
    assert back.instruction == suites.task(SUITE, TASK).instruction
    assert back.attrs["num_demos"] == 2 and back.attrs["env_args"] == {"image_size": 64}
    for got in back.episodes:
        for key in ("actions", "states", "rewards", "dones", "robot_states", "log_probs"):
            np.testing.assert_array_equal(getattr(got, key), getattr(written, key), err_msg=key)
        for group in ("obs", "final_obs"):
            assert set(getattr(got, group)) == set(getattr(written, group))
            for key, value in getattr(written, group).items():
                np.testing.assert_array_equal(getattr(got, group)[key], value, err_msg=f"{group}/{key}")
        assert got.attrs == {**written.attrs}
    assert written.obs["agentview_rgb"].shape[0] == 6  # 48 steps, one frame per 8-step chunk
    assert written.attrs["image_stride"] == 8


def test_reader_flips_libero_opengl_files(tmp_path):
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    ep = hdf5.RecordedEpisode(actions=np.zeros((2, 7)), states=np.zeros((2, 3)), rewards=np.zeros(2, np.uint8),
                      dones=np.zeros(2, np.uint8), obs={"agentview_rgb": frames})
    path = hdf5.write(tmp_path / "x.hdf5", {"problem_info": {"language_instruction": "x"}}, [ep])
    import h5py
    with h5py.File(path, "a") as f:  # pretend it is one of LIBERO's own files (upside-down images)
        f["data"].attrs["macros_image_convention"] = "opengl"
    np.testing.assert_array_equal(hdf5.read(path).episodes[0].obs["agentview_rgb"], frames[:, ::-1])


class _CrashingSource:
    """Kills the env process mid-episode, as a segfaulting renderer would."""

    name, chunk_length, image_size, in_env = "crasher", 8, None, False

    def __init__(self, process):
        self.process = process

    def act(self, frames, proprio, instructions, deterministic):
        self.process.call("crash")

    def close(self):
        pass


def test_crashed_env_fails_its_episode_and_is_replaced():
    with pool.EnvPool(1) as envs:
        process = envs.processes[0]
        first_pid = process.pid
        spec = episode.EpisodeSpec(env_mod.EnvConfig(SUITE, TASK), 0, max_steps=16)
        result = episode.run(process, spec, _CrashingSource(process))
        assert result.outcome.startswith("crashed") and not result.success
        assert process.pid != first_pid
        # the replacement runs the next episode normally
        ok = episode.run(process, spec, policies.ExpertSource())
        assert ok.outcome == "horizon" and ok.steps == 16


def test_pool_refuses_more_envs_than_fit():
    with pytest.raises(pool.PoolError, match="fit"):
        pool.check_size(10_000)
    assert 1 <= pool.default_size() <= 2


def _cli(*argv) -> int:
    from worldenv import cli
    return cli.main(list(argv))


@pytest.mark.parametrize("argv, message", [
    (["eval", "--policy", "expert", "--suite", "libero_nope", "--out", "x"], "unknown suite"),
    (["eval", "--policy", "expert", "--tasks", "12", "--out", "x"], "out of range"),
    (["demos", "collect", "--tasks", "0-10", "--out", "x"], "out of range"),
    (["starts", "build", "--suite", "libero_spatial", "--tasks", "0", "--inits", "50", "--out", "x.npz"], "out of range"),
    (["eval", "--policy", "127.0.0.1:1", "--tasks", "0", "--out", "x"], "unreachable"),
    (["explore", "--policy", "/nonexistent/ckpt", "--tasks", "0", "--out", "x"], "neither"),
    (["eval", "--policy", "expert", "--termination", "reflector", "--tasks", "0", "--out", "x"], "--reflector"),
    (["eval", "--policy", "expert", "--grasp-gate", "0.02", "--tasks", "0", "--out", "x"], "--grasp-gate: only with"),
    (["eval", "--policy", "expert", "--confirm", "2", "--tasks", "0", "--out", "x"], "--confirm: only with"),
])
def test_bad_arguments_fail_before_any_env_starts(argv, message, capsys):
    started = time.perf_counter()
    assert _cli(*argv) == 2
    assert message in capsys.readouterr().err
    assert multiprocessing.active_children() == []
    assert time.perf_counter() - started < 30


def test_eval_with_expert_writes_report(tmp_path):
    out = tmp_path / "eval"
    assert _cli("eval", "--policy", "expert", "--suite", SUITE, "--tasks", str(TASK), "--episodes-per-task", "2",
                "--env-processes", "1", "--videos", "1", "--out", str(out)) == 0
    import json
    report = json.loads((out / "eval.json").read_text())
    suite = report["suite_result"]
    assert suite["episodes"] == 2 and suite["successes"] == 2
    assert 0 <= suite["ci95"][0] <= suite["rate"] <= suite["ci95"][1] <= 1
    assert report["max_steps"] == suites.MAX_EPISODE_STEPS[SUITE]
    assert "Wilson" in (out / "eval.md").read_text() and report["video_files"]


def test_starts_build_writes_a_start_bank(tmp_path):
    from worldenv.data.start_bank import StartBank
    path = tmp_path / "starts.npz"
    assert _cli("starts", "build", "--suite", SUITE, "--tasks", str(TASK), "--inits", "0,1", "--workers", "1",
                "--out", str(path)) == 0
    bank = StartBank.load(path)
    assert bank.frames.shape == (2, 64, 64, 3) and bank.proprio.shape == (2, 8)
    assert bank.ids == [f"{SUITE}/{TASK}/0", f"{SUITE}/{TASK}/1"]
    assert bank.instructions[0] == suites.task(SUITE, TASK).instruction


def test_explore_records_successes_and_failures_with_log_probs(tmp_path):
    from worldenv.models.policy import LaplacePolicy
    ckpt = tmp_path / "policy"
    LaplacePolicy().save_pretrained(ckpt)  # random init: fails, which is what we record here
    out = tmp_path / "explore"
    assert _cli("explore", "--policy", str(ckpt), "--noise", "laplace", "--suite", SUITE, "--tasks", str(TASK),
                "--episodes-per-task", "1", "--max-steps", "16", "--env-processes", "1", "--out", str(out)) == 0
    (path,) = (out / SUITE).glob("*_demo.hdf5")
    (ep,) = hdf5.read(path).episodes
    assert len(ep) == 10 + 16 and ep.log_probs.shape == (2,) and np.isfinite(ep.log_probs).all()  # settle + policy
    assert ep.obs["agentview_rgb"].shape == (2, 64, 64, 3)               # rendered where the policy looked
    assert (ep.attrs["image_offset"], ep.attrs["image_stride"]) == (10, 8)
    assert ep.obs["success"].shape == (26,) and ep.attrs["success"] is False
    assert np.abs(ep.actions).max() <= 1.0


def _recorded_demo(env, init_index: int, max_steps: int = 200) -> hdf5.RecordedEpisode:
    """The expert's episode recorded the way `demos collect` records it: from the init state
    (the settle steps first), a frame at every step, written to HDF5 and read back."""
    obs = env.reset(init_index, render_each_step=True)
    scripted = expert.ScriptedExpert()
    scripted.reset(env)
    recorder = Recorder(wrist=False)
    recorder.add(env.settle)
    for _ in range(max_steps // 8):
        result = env.step_chunk(np.zeros((8, 7)), first=obs, policy=lambda: scripted.act(env), render_each_step=True)
        recorder.add(result)
        obs = result.obs
        if result.succeeded:
            break
    episode = recorder.episode({"id": f"{SUITE}/{TASK}/{init_index}", "settle_steps": env.config.settle_steps})
    return episode


def test_a_recorded_demo_replays_from_states0_to_success(libero_env, tmp_path):
    from worldenv.sim.replay import replay
    demo = _recorded_demo(libero_env, init_index=3)
    assert demo.success and demo.attrs["settle_steps"] == 10 and (demo.actions[:10] == env_mod.NOOP).all()
    np.testing.assert_array_equal(demo.states[0], libero_env._init_states[3])
    path = hdf5.write(tmp_path / "t_demo.hdf5", recording.task_attrs(suites.task(SUITE, TASK)), [demo])
    back = hdf5.read(path).episodes[0]
    result = replay(libero_env, back)
    assert result.success and result.recorded_success and result.steps == len(back)
    assert result.max_divergence < 1e-6, result


def test_training_inputs_equal_what_evaluation_feeds_the_policy(libero_env):
    """Eval resets (settle, one render) and renders once at each chunk's end; replaying the demo's
    chunks that way must show the policy exactly the frames and proprio training reads."""
    from worldenv.data import chunks
    demo = _recorded_demo(libero_env, init_index=4)
    episode = chunks.chunk(demo, "instruction")
    obs = libero_env.reset(4)
    seen = [obs]
    for actions, n in zip(episode.actions, episode.lengths):
        obs = libero_env.step_chunk(actions[:n], stop_on_success=False, first=obs).obs
        seen.append(obs)
    np.testing.assert_array_equal(np.stack([o.frame for o in seen]), episode.frames)
    np.testing.assert_array_equal(np.stack([o.proprio for o in seen]), episode.proprio)
    assert seen[-1].success and episode.success[-1]


def test_open_loop_executor_reproduces_a_recorded_episode_from_its_id(libero_env):
    """A recorded episode's own chunks, executed from the init state its id names (`align
    --in-libero` runs imagined chunks this way), give its proprio, outcome and step count exactly."""
    from worldenv.data import chunks
    from worldenv.sim import open_loop
    demo = _recorded_demo(libero_env, init_index=6)
    episode = chunks.chunk(demo, "instruction")
    with open_loop.Executor(envs={(SUITE, TASK): libero_env}) as executor:
        run = executor.run(demo.attrs["id"], [a[:n] for a, n in zip(episode.actions, episode.lengths)])
        assert executor._made == []                          # the env handed in is used, not a new one
    np.testing.assert_array_equal(run.proprio, episode.proprio)
    assert run.success and run.success_chunk == episode.chunks - 1 and run.steps == len(demo)
    with pytest.raises(ValueError, match="suite/task/init"):
        executor.run("libero_object/zero", [])


def test_sampled_init_states_spread_like_liberos_fixed_ones(libero_env):
    """Arm joints and object placements of sampled init states (1000+) against LIBERO's fixed
    ones (0-29): the same distribution by a two-sample KS test on the arm joints' deviations
    from their means, spreads within a factor 1.6, object x/y means within 3 spreads."""
    from scipy import stats
    model, robot = libero_env.inner.sim.model, libero_env.inner.robots[0]
    nq, arm = model.nq, np.asarray(robot._ref_joint_pos_indexes)
    objects = [model.jnt_qposadr[j] for j in range(model.njnt) if model.jnt_type[j] == 0]  # free joints
    fixed = suites.init_states(SUITE, TASK)[:30, 1:1 + nq]
    sampled = np.array([libero_env.init_state(i)[1:1 + nq] for i in range(1000, 1008)])
    deviation = [(q[:, arm] - q[:, arm].mean(0)).ravel() for q in (fixed, sampled)]
    assert stats.ks_2samp(*deviation).pvalue > 0.01
    assert 1 / 1.6 < deviation[1].std() / deviation[0].std() < 1.6
    assert len({tuple(q) for q in sampled[:, arm].round(6)}) == len(sampled)   # no two in one pose
    for adr in objects:
        xy_fixed, xy_sampled = fixed[:, adr:adr + 2], sampled[:, adr:adr + 2]
        spread = max(float(xy_fixed.std(0).max()), 0.005)
        np.testing.assert_allclose(xy_sampled.mean(0), xy_fixed.mean(0), atol=3 * spread)
        assert xy_sampled.std(0).max() < 3 * spread
    again = libero_env.init_state(1003)[1:1 + nq]
    np.testing.assert_array_equal(again, sampled[3])                            # the same index, the same state


def test_align_in_libero_runs_end_to_end_on_tiny_models(tmp_path, capsys):
    """`worldenv align --in-libero` on one real episode: the closed loop's own chunks are executed
    in LIBERO, their outcome and simulator steps land in alignment.json and the table."""
    import json
    from worldenv import models
    built = {"policy": models.build("policy", image_size=64, instruction_encoder="hashed", width=16),
             "world_model": models.build("world_model", image_size=64, block_out_channels=(8, 16)),
             "reflector": models.build("reflector", image_size=64, width=16)}
    for role, model in built.items():
        model.save_pretrained(tmp_path / role)
    out = tmp_path / "align"
    assert _cli("align", "--tasks", str(TASK), "--episodes-per-task", "1", "--policy", str(tmp_path / "policy"),
                "--world-model", str(tmp_path / "world_model"), "--reflector", str(tmp_path / "reflector"),
                "--in-libero", "--env-processes", "1", "--out", str(out)) == 0
    result = json.loads((out / "alignment.json").read_text())
    (row,) = result["per_episode"]
    assert row["imagined_in_libero"] is not None and result["imagined_actions"]["overall"]["n"] == 1
    if not row["imagined_in_libero"]:   # every chunk ran in full after the settle
        chunk = built["policy"].spec.chunk_length
        assert result["imagined_actions_sim_steps"] == 10 + chunk * row["imagined_chunks"]
    assert "imagination on its own actions" in (out / "alignment.md").read_text()
    assert "imagined_actions agreement" in capsys.readouterr().out
