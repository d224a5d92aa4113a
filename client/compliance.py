"""Compliance checks any implementation of the worldenv services must pass.

Point them at a running server (ours or yours) from pytest:

    from worldenv.client import compliance

    class TestMyPolicy(compliance.PolicyCompliance):
        address = "127.0.0.1:50053"

Each check talks only to the wire contract (`protos/worldenv/v1`): shapes from GetSpec,
valid answers, and bad input answered with INVALID_ARGUMENT naming the field while the server
keeps serving.
"""
from __future__ import annotations

import grpc
import numpy as np
import pytest

from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.client.errors import ServiceError


def _frames(spec, *lead) -> np.ndarray:
    s = spec.image_size
    return np.random.default_rng(len(lead)).integers(0, 256, (*lead, s, s, 3), dtype=np.uint8)


def _proprio(spec, b: int) -> np.ndarray:
    return np.random.default_rng(b).standard_normal((b, spec.proprio_dim)).astype(np.float32)


def _invalid(fn, field: str) -> None:
    with pytest.raises(ServiceError) as info:
        fn()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert field in info.value.details, info.value.details


class _Compliance:
    address: str = ""
    client_class: type
    auth_token: str | None = None

    @pytest.fixture(scope="class")
    def client(self):
        if not self.address:
            pytest.skip("set `address` on the compliance class")
        with self.client_class(self.address, auth_token=self.auth_token) as client:
            yield client


class WorldModelCompliance(_Compliance):
    client_class = WorldModelClient

    def test_spec(self, client):
        spec = client.spec
        assert spec.image_size > 0 and spec.chunk_length > 0 and spec.action_dim > 0 and spec.proprio_dim > 0

    def test_open_step_close(self, client):
        spec = client.spec
        ids = client.open(_frames(spec, 2), _proprio(spec, 2), ["a", "b"])
        assert len(set(ids)) == 2
        actions = np.zeros((2, spec.chunk_length, spec.action_dim), np.float32)
        out = client.step(ids, actions)
        assert out.frames.shape == (2, spec.image_size, spec.image_size, 3) and out.frames.dtype == np.uint8
        assert out.proprio.shape == (2, spec.proprio_dim) and np.isfinite(out.proprio).all()
        assert client.close_sessions(ids) == 2

    def test_bad_actions_and_unknown_session(self, client):
        spec = client.spec
        ids = client.open(_frames(spec, 1), _proprio(spec, 1), ["a"])
        nan = np.full((1, spec.chunk_length, spec.action_dim), np.nan, np.float32)
        _invalid(lambda: client.step(ids, nan), "actions")
        _invalid(lambda: client.step(ids, np.zeros((1, 1, 1), np.float32)), "actions")
        client.close_sessions(ids)
        with pytest.raises(ServiceError) as info:
            client.step(ids, np.zeros((1, spec.chunk_length, spec.action_dim), np.float32))
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "session_ids" in info.value.details


class ReflectorCompliance(_Compliance):
    client_class = ReflectorClient

    def test_judge_probabilities(self, client):
        out = client.judge(_frames(client.spec, 3, 4), ["a", "b", "c"], eta=0.5)
        assert out.p_done.shape == (3,) and ((out.p_done >= 0) & (out.p_done <= 1)).all()
        assert out.done == [bool(p > 0.5) for p in out.p_done]

    def test_bad_input(self, client):
        _invalid(lambda: client.judge(_frames(client.spec, 2, 2), ["a"]), "instructions")
        _invalid(lambda: client.judge(_frames(client.spec, 2, 2), ["a", "b"], eta=2.0), "eta")
        assert client.judge(_frames(client.spec, 1, 1), ["a"]).p_done.shape == (1,)

    def test_sessions_observe_equals_judge(self, client):
        video = _frames(client.spec, 2, 3)
        ids = client.open(video[:, 0], ["a", "b"])
        assert len(set(ids)) == 2
        for t in (1, 2):
            out = client.observe(ids, video[:, t])
            assert out.lengths == [t + 1] * 2
        np.testing.assert_allclose(out.p_done, client.judge(video, ["a", "b"]).p_done, rtol=1e-5, atol=1e-6)
        assert client.close_sessions(ids) == 2
        with pytest.raises(ServiceError) as info:
            client.observe(ids, video[:, 0])
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "session_ids" in info.value.details


class PolicyCompliance(_Compliance):
    client_class = PolicyClient

    def test_act(self, client):
        spec = client.spec
        out = client.act(_frames(spec, 2), _proprio(spec, 2), ["a", "b"])
        shape = (2, spec.chunk_length, spec.action_dim)
        assert out.loc.shape == out.scale.shape == out.actions.shape == shape
        assert (out.scale > 0).all() and out.log_probs.shape == (2,) and np.isfinite(out.log_probs).all()
        expected = (-np.log(2 * out.scale) - np.abs(out.actions - out.loc) / out.scale).sum(axis=(1, 2))
        np.testing.assert_allclose(out.log_probs, expected, rtol=1e-3, atol=1e-2)

    def test_bad_input(self, client):
        spec = client.spec
        _invalid(lambda: client.act(_frames(spec, 2).astype(np.float32), _proprio(spec, 2), ["a", "b"]), "frames")
        bad = _proprio(spec, 2)
        bad[0, 0] = np.nan
        _invalid(lambda: client.act(_frames(spec, 2), bad, ["a", "b"]), "proprio")
        assert client.act(_frames(spec, 1), _proprio(spec, 1), ["a"]).actions.shape[0] == 1

    def test_spec_tells_a_publisher_what_it_serves(self, client):
        # A trainer keeping replicas on its weights reads these: the version serving as an
        # integer, and an instance id that is new each time the server starts.
        spec = client.refresh_spec()
        assert int(spec.model_version) >= 1 and spec.extra["instance"] and "base" in spec.extra
