"""The worldenv home: what a running `worldenv up` recorded (up.json), read by every command that
needs the stack's Redis or a service's address."""
from __future__ import annotations

import json

import pytest

from worldenv import home


@pytest.fixture()
def worldenv_home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDENV_HOME", str(tmp_path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    return tmp_path


def test_the_recorded_stack_gives_redis_and_service_addresses(worldenv_home, monkeypatch):
    assert home.stack() is None and home.redis_url() == home.DEFAULT_REDIS_URL
    assert home.service_address("policy", "127.0.0.1:50053") == "127.0.0.1:50053"
    (worldenv_home / "up.json").write_text(json.dumps({"redis_url": "redis://127.0.0.1:7001/0",
                                                       "policy": "127.0.0.1:41234"}))
    assert home.redis_url() == "redis://127.0.0.1:7001/0"
    assert home.service_address("policy", "127.0.0.1:50053") == "127.0.0.1:41234"
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.1:6379/0")
    assert home.redis_url() == "redis://10.0.0.1:6379/0", "the environment wins"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"redis_url": 5, "policy": ""}'])
def test_an_unreadable_or_odd_record_falls_back_to_the_defaults(worldenv_home, text):
    (worldenv_home / "up.json").write_text(text)
    assert home.redis_url() == home.DEFAULT_REDIS_URL
    assert home.service_address("policy", "127.0.0.1:50053") == "127.0.0.1:50053"
