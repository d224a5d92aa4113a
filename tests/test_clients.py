"""Client behaviour over real servers: retry on UNAVAILABLE, per-pod session affinity."""
import threading
import time

import numpy as np
import pytest

from servers import serving, tiny_model
from worldenv.client import clients
from worldenv.client.clients import PolicyClient, WorldModelClient
from worldenv.config import ServeConfig
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer

RNG = np.random.default_rng(0)


def test_calls_retry_unavailable_until_the_server_is_back():
    config = ServeConfig(host="127.0.0.1")
    first = RunningServer(create_service("policy", config, tiny_model("policy"), "a"), config, port=0)
    port = first.port
    frames, proprio = RNG.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8), np.zeros((1, 8), np.float32)
    with PolicyClient(first.address, retries=6, backoff_s=0.2) as client:
        client.act(frames, proprio, ["a"])
        first.stop()
        restarted = {}

        def restart():
            time.sleep(1.0)  # the client's first attempts meet a closed port
            restarted["server"] = RunningServer(create_service("policy", config, tiny_model("policy"), "b"), config,
                                                port=port)

        thread = threading.Thread(target=restart)
        thread.start()
        try:
            out = client.act(frames, proprio, ["a"])
        finally:
            thread.join()
            restarted["server"].stop()
    assert out.actions.shape == (1, 8, 7)


def test_sessions_stay_on_the_pod_that_opened_them(monkeypatch):
    with serving("world-model") as pod_a, serving("world-model") as pod_b:
        monkeypatch.setattr(clients, "resolve", lambda address: [pod_a.address, pod_b.address])
        with WorldModelClient("dns:///world-model:50051") as client:
            frames = RNG.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
            proprio = np.zeros((2, 8), np.float32)
            first = client.open(frames, proprio, ["a", "b"])
            second = client.open(frames, proprio, ["a", "b"])
            assert {client._owner[first[0]], client._owner[second[0]]} == {pod_a.address, pod_b.address}
            actions = RNG.uniform(-1, 1, (2, 8, 7)).astype(np.float32)
            for _ in range(3):  # would be NOT_FOUND if a Step reached the other pod
                assert client.step(first, actions).frames.shape == (2, 64, 64, 3)
                assert client.step(second, actions).frames.shape == (2, 64, 64, 3)
            assert len(pod_a.service.sessions) == 2 and len(pod_b.service.sessions) == 2
            with pytest.raises(clients.ServiceError, match="one Step"):
                client.step([first[0], second[0]], actions)
            assert client.close_sessions(first + second) == 4


def test_a_comma_separated_address_lists_replicas_and_sessions_alternate_between_them():
    assert clients.resolve("a:1, b:2,") == ["a:1", "b:2"] and clients.resolve("a:1") == ["a:1"]
    with serving("world-model") as pod_a, serving("world-model") as pod_b:
        with WorldModelClient(f"{pod_a.address},{pod_b.address}") as client:
            frames = RNG.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
            ids = [client.open(frames, np.zeros((1, 8), np.float32), ["a"])[0] for _ in range(4)]
            client.step(ids[:1], RNG.uniform(-1, 1, (1, 8, 7)).astype(np.float32))
        assert len(pod_a.service.sessions) == 2 and len(pod_b.service.sessions) == 2


def test_the_light_client_imports_without_torch():
    """`worldenv.client` (service clients, role adapters, gym envs, compliance) pulls no torch in."""
    import subprocess
    import sys
    code = ("import sys, worldenv.client, worldenv.client.clients, worldenv.client.remote, worldenv.client.gym_env, "
            "worldenv.client.vector_env, worldenv.client.compliance, worldenv.models.imagination; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
