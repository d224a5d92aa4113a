"""Helpers for tests that run services on real gRPC servers bound to port 0."""
from __future__ import annotations

import contextlib

import torch

from worldenv import models
from worldenv.config import ServeConfig
from worldenv.services.common.factory import SERVICES, create_service
from worldenv.services.common.server import RunningServer

_MODELS: dict[str, torch.nn.Module] = {}


def tiny_model(service: str):
    """One seeded model per service kind, shared by the tests of a session."""
    kind = SERVICES[service][0]
    if kind not in _MODELS:
        torch.manual_seed(0)
        _MODELS[kind] = models.build(kind)
    return _MODELS[kind]


@contextlib.contextmanager
def serving(service: str, **settings):
    """A real server for `service` on 127.0.0.1:<free port>; yields the RunningServer."""
    config = ServeConfig(host="127.0.0.1", **settings)
    server = RunningServer(create_service(service, config, tiny_model(service), "test"), config, port=0)
    try:
        yield server
    finally:
        server.stop()
