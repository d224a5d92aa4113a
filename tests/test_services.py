"""Each service on a real gRPC server bound to port 0: answers, bad input, sessions, batching
(transport and limits: test_service_limits.py)."""
import concurrent.futures
import time

import grpc
import numpy as np
import pytest

from servers import actions, expect_error, frames, proprio, serving
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.models.roles import Observations
from worldenv.v1 import world_model_pb2, world_model_pb2_grpc
from worldenv.wire import codec

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def world_model():
    with serving("world-model", session_ttl_s=1.0, max_sessions=16, max_delay_ms=40) as server:
        with WorldModelClient(server.address) as client:
            yield client


@pytest.fixture(scope="module")
def policy():
    with serving("policy") as server, PolicyClient(server.address) as client:
        yield client


@pytest.fixture(scope="module")
def reflector():
    with serving("reflector") as server, ReflectorClient(server.address) as client:
        yield client


# ---- WorldModel ---------------------------------------------------------------------------

def test_world_model_spec_open_step_close(world_model):
    spec = world_model.spec
    assert (spec.service, spec.image_size, spec.chunk_length, spec.action_dim) == ("world_model", 64, 8, 7)
    start = frames(3)
    ids = world_model.open(start, proprio(3), ["a", "b", "c"])
    assert len(set(ids)) == 3
    out = world_model.step(ids, actions(3))
    assert out.frames.shape == (3, 64, 64, 3) and out.frames.dtype == np.uint8
    assert out.proprio.shape == (3, 8) and np.isfinite(out.proprio).all()
    assert out.steps == [1, 1, 1]
    assert not np.array_equal(out.frames, start), "prediction must not echo the start frame"
    again = world_model.step(ids, actions(3))
    assert again.steps == [2, 2, 2]
    assert world_model.close_sessions(ids) == 3
    expect_error(lambda: world_model.step(ids[:1], actions(1)), grpc.StatusCode.NOT_FOUND, "session_ids[0]")


def test_world_model_actions_change_the_prediction(world_model):
    start = np.repeat(frames(1), 2, axis=0)
    ids = world_model.open(start, np.repeat(proprio(1), 2, axis=0), ["x", "x"])
    chunk = np.stack([np.full((8, 7), -1.0, np.float32), np.full((8, 7), 1.0, np.float32)])
    out = world_model.step(ids, chunk)
    assert not np.array_equal(out.frames[0], out.frames[1])
    world_model.close_sessions(ids)


@pytest.mark.parametrize("field, message, words", [
    ("actions", lambda ids: world_model_pb2.StepRequest(session_ids=ids, actions=codec.encode(actions(1).astype(np.float64))),
     ["actions", "float32", "float64"]),
    ("actions", lambda ids: world_model_pb2.StepRequest(session_ids=ids, actions=codec.encode(actions(1)[:, :4])),
     ["actions", "(1, 8, 7)"]),
    ("actions", lambda ids: world_model_pb2.StepRequest(session_ids=ids, actions=codec.encode(
        np.where(np.arange(56).reshape(1, 8, 7) == 5, np.nan, actions(1)).astype(np.float32))), ["actions", "finite"]),
    ("actions", lambda ids: world_model_pb2.StepRequest(session_ids=ids), ["actions", "missing"]),
    ("session_ids", lambda ids: world_model_pb2.StepRequest(session_ids=ids + ids, actions=codec.encode(actions(2))),
     ["session_ids", "once"]),
    ("actions", lambda ids: world_model_pb2.StepRequest(session_ids=ids, actions=codec.encode(actions(2))),
     ["actions", "batch size 2"]),
])
def test_world_model_step_bad_input(world_model, field, message, words):
    ids = world_model.open(frames(1), proprio(1), ["t"])
    stub = world_model_pb2_grpc.WorldModelStub(world_model.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Step(message(ids))
    assert info.value.code() == INVALID
    for word in words:
        assert word in info.value.details()
    assert world_model.step(ids, actions(1)).steps == [1], "the server keeps serving the session"
    world_model.close_sessions(ids)


@pytest.mark.parametrize("start, words", [
    (lambda: frames(2).astype(np.float32), ["frames", "uint8", "float32"]),
    (lambda: frames(2, s=32), ["frames", "64"]),
    (lambda: frames(2)[..., :1], ["frames"]),
])
def test_world_model_open_bad_frames(world_model, start, words):
    expect_error(lambda: world_model.open(start(), proprio(2), ["a", "b"]), INVALID, *words)


def test_world_model_open_bad_proprio_and_instructions(world_model):
    bad = proprio(2)
    bad[1, 3] = np.inf
    expect_error(lambda: world_model.open(frames(2), bad, ["a", "b"]), INVALID, "proprio", "finite")
    expect_error(lambda: world_model.open(frames(2), proprio(3), ["a", "b"]), INVALID, "proprio", "batch size 3")
    expect_error(lambda: world_model.open(frames(2), proprio(2), ["a"]), INVALID, "instructions", "2")


def test_world_model_open_with_history(world_model):
    ids = world_model.open(frames(2, t=5), proprio(2), ["a", "b"])
    assert world_model.step(ids, actions(2)).frames.shape == (2, 64, 64, 3)
    world_model.close_sessions(ids)


def test_world_model_unknown_and_expired_sessions(world_model):
    expect_error(lambda: world_model.step(["nope"], actions(1)), grpc.StatusCode.NOT_FOUND, "session_ids[0]", "nope")
    ids = world_model.open(frames(1), proprio(1), ["t"])
    time.sleep(1.5)  # the server's idle TTL is 1 s
    expect_error(lambda: world_model.step(ids, actions(1)), grpc.StatusCode.NOT_FOUND, "expired")


def test_world_model_session_limit(world_model):
    ids = world_model.open(frames(10), proprio(10), [""] * 10)
    expect_error(lambda: world_model.open(frames(8), proprio(8), [""] * 8), grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "max_sessions", "16")
    world_model.close_sessions(ids)
    assert len(world_model.open(frames(8), proprio(8), [""] * 8)) == 8


def test_dynamic_batcher_merges_concurrent_steps(world_model):
    ids = world_model.open(frames(8), proprio(8), [""] * 8)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: world_model.step([ids[i]], actions(1)), range(8)))
    world_model.close_sessions(ids)
    sizes = [r.timing.batch_size for r in results]
    assert max(sizes) > 1, f"no request was merged: batch sizes {sizes}"
    assert max(r.timing.batch_requests for r in results) > 1
    assert all(r.timing.compute_ms > 0 and r.timing.server_ms >= r.timing.compute_ms for r in results)


def test_a_lone_client_never_waits_for_others_and_overlapping_requests_still_merge():
    import asyncio

    from worldenv.services.common.batching import DynamicBatcher

    async def run():
        batcher = DynamicBatcher(lambda batch: {"y": batch["x"] * 2}, 32, max_delay_ms=300)
        await batcher.start()
        started = time.perf_counter()
        for _ in range(3):  # one caller, one request at a time: nobody else can join
            await batcher.submit({"x": np.ones(2)}, 2)
        lone_s = time.perf_counter() - started
        replies = await asyncio.gather(*(batcher.submit({"x": np.ones(1)}, 1) for _ in range(6)))
        await batcher.stop()
        return lone_s, [info.batch_requests for _, info in replies]

    lone_s, merged = asyncio.run(run())
    assert lone_s < 0.3, f"a lone caller waited {lone_s:.2f} s for others"
    assert merged == [6] * 6


# ---- Reflector ----------------------------------------------------------------------------

def test_reflector_judges_probabilities(reflector):
    video = frames(4, t=6)
    out = reflector.judge(video, ["put the bowl on the plate"] * 4, eta=0.3)
    assert out.p_done.shape == (4,) and ((out.p_done >= 0) & (out.p_done <= 1)).all()
    assert out.done == [bool(p > 0.3) for p in out.p_done] and out.eta == pytest.approx(0.3)
    assert len(set(np.round(out.p_done, 6))) > 1, "different videos must get different judgements"
    default = reflector.judge(video, ["put the bowl on the plate"] * 4)
    assert default.eta == pytest.approx(0.5)


@pytest.mark.parametrize("call, words", [
    (lambda r: r.judge(frames(2, t=3), ["a"]), ["instructions", "2"]),
    (lambda r: r.judge(frames(2, t=3), ["a", "b"], eta=1.5), ["eta", "(0, 1)"]),
    (lambda r: r.judge(frames(2), ["a", "b"]), ["frames", "shape"]),
    (lambda r: r.judge(frames(2, t=3).astype(np.int16), ["a", "b"]), ["frames", "uint8"]),
    (lambda r: r.judge(np.zeros((2, 0, 64, 64, 3), np.uint8), ["a", "b"]), ["frames", "T >= 1"]),
])
def test_reflector_bad_input(reflector, call, words):
    expect_error(lambda: call(reflector), INVALID, *words)
    assert reflector.judge(frames(1, t=2), ["ok"]).p_done.shape == (1,)


@pytest.fixture(scope="module")
def reflector_sessions():
    with serving("reflector", session_ttl_s=1.0, max_sessions=8, max_delay_ms=40) as server, \
            ReflectorClient(server.address) as client:
        yield server, client


def test_reflector_sessions_give_judges_p_done_on_the_whole_video(reflector_sessions):
    server, client = reflector_sessions
    video, texts = frames(3, t=6), ["put the bowl on the plate", "open the drawer", ""]
    ids = client.open(video[:, 0], texts)
    assert len(set(ids)) == 3 and len(server.service.sessions) == 3
    for t in range(1, 6):
        out = client.observe(ids, video[:, t], eta=0.3)
        np.testing.assert_allclose(out.p_done, client.judge(video[:, :t + 1], texts).p_done, rtol=0, atol=1e-6)
        assert out.lengths == [t + 1] * 3 and out.eta == pytest.approx(0.3)
        assert out.done == [bool(p > 0.3) for p in out.p_done]
    assert client.observe(ids[:1], video[:1, 0]).eta == pytest.approx(0.5)  # the server's default
    assert client.close_sessions(ids) == 3 and len(server.service.sessions) == 0


def test_reflector_observe_merges_sessions_of_different_lengths(reflector_sessions):
    """Concurrent Observes go through one batcher: merged across requests and video lengths.
    Merging needs the four requests inside one 40 ms window, which a loaded machine can miss:
    up to three rounds on fresh sessions, each checked, one of them merged."""
    server, client = reflector_sessions
    merged = 1
    for _ in range(3):
        videos = [frames(1, t=2 + i) for i in range(4)]
        ids = [client.open(v[:, 0], ["a"]) for v in videos]
        for v, sid in zip(videos, ids):
            for t in range(1, v.shape[1] - 1):
                client.observe(sid, v[:, t])
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: client.observe(ids[i], videos[i][:, -1]), range(4)))
        client.close_sessions([sid for pair in ids for sid in pair])
        for v, r in zip(videos, results):
            assert r.lengths == [v.shape[1]]
            np.testing.assert_allclose(r.p_done, client.judge(v, ["a"]).p_done, rtol=1e-5, atol=1e-6)
        merged = max(merged, *(r.timing.batch_requests for r in results))
        if merged > 1:
            break
    assert merged > 1, "no Observe was merged in three rounds"


def test_reflector_unknown_expired_and_closed_sessions_are_not_found(reflector_sessions):
    server, client = reflector_sessions
    not_found = grpc.StatusCode.NOT_FOUND
    expect_error(lambda: client.observe(["nope"], frames(1)), not_found, "session_ids[0]", "nope")
    ids = client.open(frames(2), ["a", "b"])
    client.close_sessions(ids[1:])
    expect_error(lambda: client.observe(ids, frames(2)), not_found, "session_ids[1]", ids[1])
    time.sleep(1.5)  # the server's idle TTL is 1 s
    expect_error(lambda: client.observe(ids[:1], frames(1)), not_found, "session_ids[0]", "expired")
    assert len(server.service.sessions) == 0


def test_reflector_session_limit(reflector_sessions):
    server, client = reflector_sessions
    ids = client.open(frames(6), [""] * 6)
    expect_error(lambda: client.open(frames(3), [""] * 3), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_sessions", "8")
    client.close_sessions(ids)
    ids = client.open(frames(8), [""] * 8)
    assert client.observe(ids, frames(8)).lengths == [2] * 8
    assert client.close_sessions(ids) == 8
    assert client.spec.extra["max_sessions"] == "8" and client.spec.extra["session_ttl_s"] == "1.0"


def test_reflector_videos_are_bounded_by_max_video_mb():
    frame_mb = 64 * 64 * 3 / 2**20
    with serving("reflector", max_video_mb=10 * frame_mb) as server, ReflectorClient(server.address) as client:
        ids = client.open(frames(4), [""] * 4)                                   # 4 frames held
        client.observe(ids, frames(4))                                           # 8
        expect_error(lambda: client.observe(ids, frames(4)), grpc.StatusCode.RESOURCE_EXHAUSTED,
                     "max_video_mb", "8 frames", "limit 10 frames")
        expect_error(lambda: client.open(frames(3), [""] * 3), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_video_mb")
        assert client.observe(ids[:2], frames(2)).lengths == [3, 3]             # 10: up to the limit
        assert client.close_sessions(ids[2:]) == 2                               # 6: frees their 4
        assert client.observe(ids[:2], frames(2)).lengths == [4, 4]
        assert server.service.sessions.held() == 8
        assert client.spec.extra["max_video_mb"] == f"{10 * frame_mb}"


@pytest.mark.parametrize("call, words", [
    (lambda r, ids: r.open(frames(2, t=3), ["a", "b"]), ["frames", "shape", "(B, 64, 64, 3)"]),
    (lambda r, ids: r.open(frames(2, s=32), ["a", "b"]), ["frames", "shape"]),
    (lambda r, ids: r.open(frames(2).astype(np.float32), ["a", "b"]), ["frames", "uint8"]),
    (lambda r, ids: r.open(frames(2), ["a"]), ["instructions", "2"]),
    (lambda r, ids: r.observe(ids, frames(2, t=1)), ["frames", "shape", "(2, 64, 64, 3)"]),
    (lambda r, ids: r.observe(ids, frames(3)), ["frames", "batch size 3", "2"]),
    (lambda r, ids: r.observe(ids, frames(2).astype(np.int16)), ["frames", "uint8"]),
    (lambda r, ids: r.observe(ids, frames(2), eta=1.5), ["eta", "(0, 1)"]),
    (lambda r, ids: r.observe([], frames(0)), ["session_ids", "at least one"]),
    (lambda r, ids: r.observe([ids[0], ids[0]], frames(2)), ["session_ids", "at most once"]),
])
def test_reflector_sessions_bad_input(reflector_sessions, call, words):
    server, client = reflector_sessions
    ids = client.open(frames(2), ["a", "b"])
    expect_error(lambda: call(client, ids), INVALID, *words)
    assert client.observe(ids, frames(2)).lengths == [2, 2], "a refused call leaves the sessions as they were"
    client.close_sessions(ids)


class CountingReflector:
    """The tiny reflector, counting the frames it observes."""

    def __init__(self, model):
        self.model, self.spec, self.observed = model, model.spec, 0

    def judge(self, videos, instructions):
        return self.model.judge(videos, instructions)

    def start(self, frames, instructions):
        return self.model.start(frames, instructions)

    def observe(self, states, frames):
        self.observed += len(states)
        return self.model.observe(states, frames)


def test_reflector_sessions_over_max_request_items_are_refused_before_any_compute():
    from servers import tiny_model

    model = CountingReflector(tiny_model("reflector"))
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    with serving("reflector", model=model, max_request_items=2) as server, ReflectorClient(server.address) as client:
        expect_error(lambda: client.open(frames(3), [""] * 3), exhausted, "frames", "3 items", "limit 2",
                     "max_request_items")
        assert len(server.service.sessions) == 0
        ids = client.open(frames(2), [""] * 2) + client.open(frames(1), [""])
        expect_error(lambda: client.observe(ids, frames(3)), exhausted, "session_ids", "3 items", "limit 2")
        assert model.observed == 0, "a refused Observe must not reach the model"
        assert client.observe(ids[:2], frames(2)).lengths == [2, 2] and model.observed == 2


# ---- Policy -------------------------------------------------------------------------------

def test_policy_act_shapes_and_log_probs(policy):
    spec = policy.spec
    assert (spec.chunk_length, spec.action_dim, spec.proprio_dim) == (8, 7, 8)
    out = policy.act(frames(3), proprio(3), ["a", "b", "c"], seed=[1, 2, 3])
    assert out.actions.shape == out.loc.shape == out.scale.shape == (3, 8, 7)
    assert (out.scale > 0).all() and out.log_probs.shape == (3,) and np.isfinite(out.log_probs).all()
    expected = (-np.log(2 * out.scale) - np.abs(out.actions - out.loc) / out.scale).sum(axis=(1, 2))
    np.testing.assert_allclose(out.log_probs, expected, rtol=1e-4, atol=1e-3)
    assert not np.allclose(out.actions, out.loc)
    again = policy.act(frames(3) * 0 + 0, proprio(3), ["a", "b", "c"], seed=[1, 2, 3])
    assert not np.allclose(again.loc, out.loc), "the observation must change the action"


def test_policy_seeds_reproduce_and_deterministic_returns_loc(policy):
    f, p = frames(2), proprio(2)
    a = policy.act(f, p, ["x", "y"], seed=[7, 8])
    b = policy.act(f, p, ["x", "y"], seed=[7, 8])
    np.testing.assert_array_equal(a.actions, b.actions)
    det = policy.act(f, p, ["x", "y"], deterministic=True)
    np.testing.assert_array_equal(det.actions, det.loc)


@pytest.mark.parametrize("call, words", [
    (lambda c: c.act(frames(2).astype(np.float32), proprio(2), ["a", "b"]), ["frames", "uint8"]),
    (lambda c: c.act(frames(2), proprio(2)[:, :5], ["a", "b"]), ["proprio", "(2, 8)"]),
    (lambda c: c.act(frames(2), np.full((2, 8), np.nan, np.float32), ["a", "b"]), ["proprio", "finite"]),
    (lambda c: c.act(frames(2), proprio(2), ["a", "b"], seed=[1, 2, 3]), ["seeds", "2"]),
])
def test_policy_bad_input(policy, call, words):
    expect_error(lambda: call(policy), INVALID, *words)
    assert policy.act(frames(1), proprio(1), ["ok"]).actions.shape == (1, 8, 7)


def test_policy_load_weights_new_version_and_in_flight_requests_keep_old_weights():
    import torch
    from safetensors.torch import save

    from worldenv import models

    torch.manual_seed(0)
    served = models.build("policy")  # its own: the load writes into it
    pointers = [t.data_ptr() for t in served.state_dict().values()]
    torch.manual_seed(123)
    other = models.build("policy")
    data = save({k: v.contiguous() for k, v in other.state_dict().items()})
    with serving("policy", model=served, max_delay_ms=0) as server, PolicyClient(server.address) as client:
        f, p = frames(64), proprio(64)
        before = client.act(f[:2], p[:2], ["a", "b"], deterministic=True)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(client.act, f, p, ["a", "b"] * 32, True)
            time.sleep(0.05)
            version = client.load_weights(data, note="test", chunk_bytes=4096)
            old = in_flight.result()
        assert version == 2
        assert old.policy_version == 1
        np.testing.assert_allclose(old.loc[:2], before.loc, rtol=1e-5, atol=1e-6)
        after = client.act(f[:2], p[:2], ["a", "b"], deterministic=True)
        assert after.policy_version == 2 and not np.allclose(after.loc, before.loc)
        expected = other.act(Observations(f[:2], p[:2], ["a", "b"]), deterministic=True).loc
        np.testing.assert_allclose(after.loc, expected, rtol=1e-4, atol=1e-5)
        assert [t.data_ptr() for t in served.state_dict().values()] == pointers, "swapped in place, no copy"
        expect_error(lambda: client.load_weights(b"not safetensors"), INVALID, "data")
        expect_error(lambda: client.load_weights(b""), INVALID, "data")
        assert client.act(f[:1], p[:1], ["a"]).policy_version == 2
