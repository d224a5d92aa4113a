"""Helpers for tests that run services on real gRPC servers bound to port 0."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from worldenv import models
from worldenv.client.errors import ServiceError
from worldenv.config import SERVICES, ServeConfig
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer

_MODELS: dict[str, torch.nn.Module] = {}
RNG = np.random.default_rng(0)


def tiny_model(service: str):
    """One seeded model per service's role, shared by the tests of a session (never loaded into)."""
    role = SERVICES[service].role
    if role not in _MODELS:
        torch.manual_seed(0)
        _MODELS[role] = models.build(role)
    return _MODELS[role]


@contextlib.contextmanager
def serving(service: str, model=None, port: int = 0, **settings):
    """A real server for `service` (around `model`, else the shared tiny one) on
    127.0.0.1:<port> (0: a free one); yields the RunningServer."""
    config = ServeConfig(host="127.0.0.1", **settings)
    model = tiny_model(service) if model is None else model
    server = RunningServer(create_service(service, config, model, "test"), config, port=port)
    try:
        yield server
    finally:
        server.stop()


def frames(b, s=64, t=None):
    shape = (b, s, s, 3) if t is None else (b, t, s, s, 3)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def proprio(b):
    return RNG.standard_normal((b, 8)).astype(np.float32)


def actions(b):
    return RNG.uniform(-1, 1, (b, 8, 7)).astype(np.float32)


def expect_error(fn, code, *words):
    with pytest.raises(ServiceError) as info:
        fn()
    assert info.value.code == code, info.value
    for word in words:
        assert word in info.value.details, info.value.details
    return info.value
