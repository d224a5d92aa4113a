"""EpisodeStore against a real Redis: round trips, idempotence, retention, filters, ids."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from worldenv.data import episodes
from worldenv.data.episodes import EpisodeStore

ARRAYS = ("frames", "actions", "log_probs", "p_done", "proprio")


@pytest.fixture
def store(redis_client, key_prefix):
    return EpisodeStore(redis_client, prefix=key_prefix, max_episodes=100)


def test_put_get_round_trip_is_identical(store):
    ep = episodes.synthetic_episode("ep-1", steps=6, image_size=12, seed=1, run_id="run-a", group_id="g0", error=None)
    assert store.put(ep) is True
    got = store.get("ep-1")
    for name in ARRAYS:
        want, have = getattr(ep, name), getattr(got, name)
        assert have.dtype == want.dtype and have.shape == want.shape, name
        assert np.array_equal(have, want), name
    for field in ("id", "status", "policy_version", "instruction", "start_id", "group_id", "run_id",
                  "done_step", "reward", "timings_ms", "created_at", "error", "extra"):
        assert getattr(got, field) == getattr(ep, field), field


def test_meta_frame_and_rewards(store):
    ep = episodes.synthetic_episode("ep-2", steps=4, image_size=10, seed=2)
    store.put(ep)
    meta = store.meta("ep-2")
    assert meta["steps"] == 4 and meta["frame_shape"] == [10, 10, 3] and meta["action_shape"] == [8, 7]
    assert not any(isinstance(v, np.ndarray) for v in meta.values())
    assert np.array_equal(store.frame("ep-2", 4), ep.frames[4])
    assert store.frame("ep-2", 5) is None and store.frame("ep-2", -1) is None
    rewards = store.rewards("ep-2")
    assert rewards["p_done"] == pytest.approx(ep.p_done.tolist())
    assert (rewards["done_step"], rewards["reward"], rewards["eta"]) == (ep.done_step, ep.reward, 0.5)


def test_put_is_idempotent(store):
    first = episodes.synthetic_episode("same", seed=1, instruction="first")
    assert store.put(first) is True
    assert store.put(episodes.synthetic_episode("same", seed=2, instruction="second")) is False
    assert store.count() == 1
    got = store.get("same")
    assert got.instruction == "first" and np.array_equal(got.frames, first.frames)


def test_concurrent_puts_of_one_id_store_it_once(store):
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(store.put(episodes.synthetic_episode("race", seed=i))))
               for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) == [False] * 5 + [True]
    assert store.count() == 1 and store.list()[1] == 1


def test_retention_trims_oldest(redis_client, key_prefix):
    store = EpisodeStore(redis_client, prefix=key_prefix, max_episodes=3)
    for i in range(5):
        store.put(episodes.synthetic_episode(f"e{i}", seed=i, run_id="r"))
    assert store.count() == 3
    assert store.get("e0") is None and store.get("e1") is None and store.meta("e2") is not None
    assert [m["id"] for m in store.list()[0]] == ["e4", "e3", "e2"]
    assert store.list(run_id="r")[1] == 3
    leftovers = {k.decode() for k in redis_client.scan_iter(f"{key_prefix}:ep:id:e[01]*")}
    assert leftovers == set()


def test_list_filters_and_pagination(store):
    specs = [("done", 1, "r1"), ("horizon", 1, "r1"), ("done", 2, "r1"), ("failed", 2, "r2"), ("done", 2, "r2")]
    for i, (status, version, run) in enumerate(specs):
        store.put(episodes.synthetic_episode(f"f{i}", seed=i, status=status, policy_version=version, run_id=run,
                                     done_step=None))
    ids = lambda result: [m["id"] for m in result[0]]  # noqa: E731
    assert ids(store.list()) == ["f4", "f3", "f2", "f1", "f0"]  # newest first
    assert ids(store.list(status="done")) == ["f4", "f2", "f0"]
    assert ids(store.list(policy_version=2)) == ["f4", "f3", "f2"]
    assert ids(store.list(run_id="r2")) == ["f4", "f3"]
    assert store.list(status="done", policy_version=2, run_id="r1") == ([store.meta("f2")], 1)
    assert store.list(offset=1, limit=2) == ([store.meta("f3"), store.meta("f2")], 5)
    assert store.list(status="done", offset=2, limit=5)[0] == [store.meta("f0")]
    assert store.list(status="done", policy_version=2, offset=5) == ([], 2)
    assert store.list(run_id="nobody") == ([], 0)
    with pytest.raises(ValueError, match="status"):
        store.list(status="finished")


def test_delete_and_unknown_ids(store, redis_client, key_prefix):
    store.put(episodes.synthetic_episode("gone", run_id="r"))
    assert store.delete("gone") is True and store.delete("gone") is False
    assert store.get("gone") is None and store.meta("gone") is None and store.rewards("gone") is None
    assert store.frame("gone", 0) is None and store.count() == 0
    assert list(redis_client.scan_iter(f"{key_prefix}:ep:idx:*")) == []


def test_keys_live_under_the_prefix(store, redis_client, key_prefix):
    store.put(episodes.synthetic_episode("k1", run_id="r"))
    keys = [k.decode() for k in redis_client.scan_iter(f"{key_prefix}*")]
    assert keys and all(k.startswith(f"{key_prefix}:ep:") for k in keys)


@pytest.mark.parametrize("bad", ["../etc", "..", "a/b", "a b", "", "x" * 129, "a:b", "-x", "ok\n"])
def test_invalid_ids_raise_naming_episode_id(store, bad):
    with pytest.raises(ValueError, match="episode_id"):
        episodes.synthetic_episode(bad)
    for call in (store.get, store.meta, store.rewards, store.delete):
        with pytest.raises(ValueError, match="episode_id"):
            call(bad)


def test_inconsistent_arrays_are_rejected():
    ep = episodes.synthetic_episode("ok", steps=4)
    with pytest.raises(ValueError, match="actions"):
        episodes.synthetic_episode("a", steps=4, actions=ep.actions[:3])
    with pytest.raises(ValueError, match="proprio"):
        episodes.synthetic_episode("b", steps=4, proprio=ep.proprio[:4])
    with pytest.raises(ValueError, match="frames"):
        episodes.synthetic_episode("c", steps=4, frames=ep.frames.astype(np.float32))
    with pytest.raises(ValueError, match="status"):
        episodes.synthetic_episode("d", status="finished")
    with pytest.raises(ValueError, match="done_step"):
        episodes.synthetic_episode("e", steps=4, done_step=4)
