"""The debugging API on a real uvicorn (its own process, port 0) over a real Redis, via httpx."""
from __future__ import annotations

import io
import pathlib
import re
import subprocess
import sys
import time
import uuid

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from worldenv.data import episodes
from worldenv.data.episodes import EpisodeStore
from worldenv.services.debug_api import media

ROOT = pathlib.Path(__file__).resolve().parents[1]


class ApiProcess:
    """`python -m worldenv.services.debug_api --port 0` in a subprocess; knows its address."""

    def __init__(self, redis_url: str, prefix: str, log: pathlib.Path):
        cmd = [sys.executable, "-m", "worldenv.services.debug_api", "--host", "127.0.0.1", "--port", "0",
               "--redis_url", redis_url, "--prefix", prefix]
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
        line = self.proc.stdout.readline()  # the first line is the bound address (or EOF on a crash)
        match = re.fullmatch(r"debug-api listening on (http://127\.0\.0\.1:\d+)\n", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"debug API did not start: {line!r}\n{log.read_text()}")
        self.url = match.group(1)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self) -> "ApiProcess":
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.http.get("/healthz")
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"debug API at {self.url} never answered\n{self.log.read_text()}")

    def stop(self) -> None:
        if getattr(self, "http", None):
            self.http.close()
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"test-api-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def api(redis_server, prefix, tmp_path_factory):
    server = ApiProcess(redis_server, prefix, tmp_path_factory.mktemp("api") / "api.log").wait_ready()
    yield server.http
    server.stop()


@pytest.fixture
def store(redis_client, prefix):
    return EpisodeStore(redis_client, prefix=prefix)


@pytest.fixture
def ep(store):
    """One stored 5-step episode of 12x12 frames."""
    episode = episodes.synthetic_episode(f"ep-{uuid.uuid4().hex[:8]}", steps=5, image_size=12, seed=3)
    assert store.put(episode)
    return episode


def test_healthz(api):
    response = api.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_openapi_lists_the_paths(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/healthz", "/episodes", "/episodes/{episode_id}", "/episodes/{episode_id}/frames/{t}.png",
                 "/episodes/{episode_id}/video", "/episodes/{episode_id}/rewards", "/episodes/{episode_id}/view", "/"):
        assert path in paths, path
    assert "EpisodeMeta" in api.get("/openapi.json").json()["components"]["schemas"]


def test_list_filters_and_pagination(api, store):
    run = f"run-{uuid.uuid4().hex[:6]}"
    for i, (status, version) in enumerate([("done", 1), ("horizon", 1), ("done", 2), ("failed", 2), ("done", 2)]):
        store.put(episodes.synthetic_episode(f"{run}-{i}", seed=i, status=status, policy_version=version, run_id=run,
                                     done_step=None))
    page = api.get("/episodes", params={"run_id": run, "limit": 2, "offset": 1}).json()
    assert [m["id"] for m in page["items"]] == [f"{run}-3", f"{run}-2"]
    assert (page["total"], page["offset"], page["limit"]) == (5, 1, 2)
    done_v2 = api.get("/episodes", params={"run_id": run, "status": "done", "policy_version": 2}).json()
    assert [m["id"] for m in done_v2["items"]] == [f"{run}-4", f"{run}-2"] and done_v2["total"] == 2
    assert api.get("/episodes", params={"run_id": run, "status": "failed"}).json()["total"] == 1
    assert "frames" not in page["items"][0] and page["items"][0]["steps"] == 5


@pytest.mark.parametrize("params", [{"status": "finished"}, {"limit": 0}, {"limit": 501}, {"offset": -1},
                                    {"policy_version": "x"}])
def test_bad_list_parameters_are_422(api, params):
    response = api.get("/episodes", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == next(iter(params))


def test_metadata_and_unknown_id(api, ep):
    meta = api.get(f"/episodes/{ep.id}").json()
    assert meta["id"] == ep.id and meta["steps"] == 5 and meta["frame_shape"] == [12, 12, 3]
    assert meta["timings_ms"]["step"] == pytest.approx(ep.timings_ms["step"])
    for path in ("/episodes/no-such-episode", "/episodes/no-such-episode/rewards",
                 "/episodes/no-such-episode/frames/0.png", "/episodes/no-such-episode/video",
                 "/episodes/no-such-episode/view"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert "episode_id" in response.json()["detail"]


@pytest.mark.parametrize("bad", ["..%2F..%2Fetc", "..%2Fetc%2Fpasswd", "bad%20id", "with%20space%2Fx", "%2E%2E",
                                 "a%3Ab", "x" * 129])
def test_invalid_ids_are_422(api, bad):
    for suffix in ("", "/rewards", "/frames/0.png", "/video", "/view"):
        response = api.get(f"/episodes/{bad}{suffix}")
        assert response.status_code == 422, (bad, suffix, response.text)
        assert response.json()["detail"][0]["loc"] == ["path", "episode_id"]


def test_frame_png_is_the_stored_frame(api, ep):
    for t in (0, 5):
        response = api.get(f"/episodes/{ep.id}/frames/{t}.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.size == (12, 12) and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), ep.frames[t])
    scaled = Image.open(io.BytesIO(api.get(f"/episodes/{ep.id}/frames/2.png", params={"scale": 3}).content))
    assert scaled.size == (36, 36)
    assert np.array_equal(np.asarray(scaled)[::3, ::3], ep.frames[2])
    assert api.get(f"/episodes/{ep.id}/frames/2.png", params={"scale": 9}).status_code == 422


@pytest.mark.parametrize("t", [6, 100, -1])
def test_frame_out_of_range_is_404_naming_t(api, ep, t):
    response = api.get(f"/episodes/{ep.id}/frames/{t}.png")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail.startswith("t:") and str(t) in detail and "0..5" in detail


def test_gif_has_one_frame_per_step(api, ep):
    response = api.get(f"/episodes/{ep.id}/video", params={"fps": 5, "scale": 2})
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    gif = Image.open(io.BytesIO(response.content))
    assert gif.n_frames == len(ep.frames) == 6 and gif.size == (24, 24)
    assert gif.info["duration"] == 200


def test_video_format_checks(api, ep):
    assert api.get(f"/episodes/{ep.id}/video", params={"format": "webm"}).status_code == 422
    response = api.get(f"/episodes/{ep.id}/video", params={"format": "mp4"})
    if media.mp4_available():
        assert response.status_code == 200 and response.content[4:8] == b"ftyp"
    else:
        assert response.status_code == 422 and response.json()["detail"].startswith("format:")


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
@pytest.mark.parametrize("fps", ["0.001", "5e-324", "0", "-1", "0.49", "50.5", "1e308", "nan", "inf"])
def test_video_fps_out_of_range_is_422_naming_fps(api, ep, fmt, fps):
    """A GIF frame of 1/fps seconds overflowed and ffmpeg was run at -r 0: both answered 500."""
    response = api.get(f"/episodes/{ep.id}/video", params={"format": fmt, "fps": fps})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["query", "fps"] and re.search(r"0\.5|50", error["msg"]), error


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
@pytest.mark.parametrize("fps", [0.5, 50])
def test_video_at_the_fps_bounds(api, ep, fmt, fps):
    if fmt == "mp4" and not media.mp4_available():
        pytest.skip("imageio-ffmpeg is not installed")
    response = api.get(f"/episodes/{ep.id}/video", params={"format": fmt, "fps": fps})
    assert response.status_code == 200 and response.headers["content-type"] == ("image/gif" if fmt == "gif" else "video/mp4")
    if fmt == "gif":
        assert Image.open(io.BytesIO(response.content)).info["duration"] == round(1000 / fps)


@pytest.mark.parametrize("params", [{"offset": 9223372036854775807}, {"offset": 2**64}, {"offset": 1_000_000_001}])
def test_huge_offset_is_422_without_store_internals(api, prefix, params):
    """It answered 503 with Redis's command and key names in the message."""
    response = api.get("/episodes", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]
    for internal in ("zrevrange", "zinterstore", "idx", prefix, "redis"):
        assert internal not in response.text.lower(), response.text
    last_page = api.get("/episodes", params={"offset": 1_000_000_000, "limit": 500})
    assert last_page.status_code == 200 and last_page.json()["items"] == []


def test_rewards_json(api, ep):
    body = api.get(f"/episodes/{ep.id}/rewards").json()
    assert body["p_done"] == pytest.approx(ep.p_done.tolist())
    assert (body["episode_id"], body["done_step"], body["reward"], body["eta"], body["steps"]) == \
        (ep.id, ep.done_step, pytest.approx(ep.reward), 0.5, 5)


def test_view_page_shows_video_beside_curve(api, ep):
    response = api.get(f"/episodes/{ep.id}/view")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<svg" in page and "<polyline" in page and "class='eta'" in page
    assert "video?format=gif" in page and "done at step" in page and ep.instruction in page
    video = re.search(r"<img src='(video\?[^']+)'", page).group(1).replace("&amp;", "&")
    assert api.get(f"/episodes/{ep.id}/{video}").headers["content-type"] == "image/gif"


def test_index_page_links_recent_episodes(api, ep):
    page = api.get("/").text
    assert f"href='episodes/{ep.id}/view'" in page


def test_redis_down_is_503(tmp_path):
    dead = f"redis://127.0.0.1:{_closed_port()}/0"
    server = ApiProcess(dead, "nothing", tmp_path / "api.log")
    try:
        health = server.wait_ready().http.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        listing = server.http.get("/episodes")
        assert listing.status_code == 503 and "episode store unavailable" in listing.json()["detail"]
        assert "127.0.0.1" not in listing.json()["detail"], "the store's address stays in the log"
    finally:
        server.stop()


def test_episodes_survive_an_api_restart(redis_server, tmp_path):
    prefix = f"test-restart-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_server)
    ep = episodes.synthetic_episode("kept-1", steps=3, image_size=8, seed=7)
    first = ApiProcess(redis_server, prefix, tmp_path / "first.log").wait_ready()
    try:
        assert EpisodeStore(client, prefix=prefix).put(ep)
        before = first.http.get(f"/episodes/{ep.id}").json()
    finally:
        first.stop()
    second = ApiProcess(redis_server, prefix, tmp_path / "second.log").wait_ready()
    try:
        assert second.http.get(f"/episodes/{ep.id}").json() == before
        png = second.http.get(f"/episodes/{ep.id}/frames/3.png").content
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), ep.frames[3])
    finally:
        second.stop()
        client.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_page_shows_the_curves_beside_each_iterations_episodes(api, store, redis_client, prefix):
    import dataclasses

    from worldenv.data.runs import RunLog
    run = f"run-{uuid.uuid4().hex[:6]}"
    log = RunLog(redis_client, prefix)
    for it, reward in ((0, 0.2), (1, 0.35)):
        log.put(run, {"iteration": it, "version": it + 2, "reward_mean": reward, "clip_fraction": 0.1,
                      "approx_kl": 0.01, "zero_advantage_groups": 0.25, "episode_length": 9.0,
                      "imagined_steps_per_s": 60.0, "dropped_groups": 0})
    log.put(run, {"iteration": 1, "version": 3, "reward_mean": 0.4})              # a resumed run repeats iteration 1
    episode = dataclasses.replace(episodes.synthetic_episode(f"{run}-it0001-00000", steps=3, image_size=12),
                                  run_id=f"{run}-it0001")
    assert store.put(episode)
    rows = api.get(f"/runs/{run}/metrics").json()["rows"]
    assert [r["iteration"] for r in rows] == [0, 1] and rows[1]["reward_mean"] == 0.4
    assert run in api.get("/runs").json()["runs"]
    page = api.get(f"/runs/{run}/view").text
    assert page.count("<svg") == 6 and "reward" in page
    assert f"../../episodes/{episode.id}/view" in page
    assert api.get("/runs/no-such-run/view").status_code == 404
    assert api.get("/runs/..%2Fx/metrics").status_code in (404, 422)


def test_every_error_answer_is_documented_as_the_json_it_is(api):
    # An HTML page's 404 is JSON ({"detail": ...}); the schema says so (schemathesis checks it).
    spec = api.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for code, response in ops["get"]["responses"].items():
            if code.startswith(("4", "5")):
                assert list(response["content"]) == ["application/json"], (path, code)
    for page in ("/episodes/no-such-episode/view", "/runs/no-such-run/view"):
        answer = api.get(page)
        assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"


def test_run_page_says_why_groups_were_dropped_and_flags_a_run_that_stopped_learning(api, redis_client, prefix):
    from worldenv.data.runs import RunLog
    run = f"run-{uuid.uuid4().hex[:6]}"
    log = RunLog(redis_client, prefix)
    log.put(run, {"iteration": 0, "version": 3, "reward_mean": 0.4, "dropped_groups": 1, "dropped_failed": 1,
                  "timesteps": 64, "restarted_replicas": 1, "republished": 1})
    reason = "episodes sampled by policy version(s) [1]; the trainer publishes 7 (this run's first: 2)"
    for it in (1, 2):
        log.put(run, {"iteration": it, "version": 3, "reward_mean": 0.0, "dropped_groups": 4, "dropped_stale": 4,
                      "skipped": True, "no_update_cause": "stale", "drop_reason": reason, "hopeless_streak": it})
    page = api.get(f"/runs/{run}/view").text
    assert "This run has stopped learning" in page and "last 2 iteration(s)" in page and "<code>stale</code>" in page
    assert "4 (4 stale)" in page and "1 (1 failed)" in page and "skipped: stale" in page
    assert "policy version(s) [1]" in page and "1 replica(s) restarted" in page and "1 sent the weights again" in page
    log.put(run, {"iteration": 3, "version": 4, "reward_mean": 0.3, "dropped_groups": 0, "timesteps": 64})
    assert "stopped learning" not in api.get(f"/runs/{run}/view").text, "learning again"


def test_the_eta_label_of_the_p_done_chart_fits_inside_it():
    # Right-aligned inside the plot, above its line: "eta 0.5" whole, not cut at the SVG's edge to "eta 0".
    from worldenv.services.debug_api import pages
    width, pad = 480, 32
    svg = pages.reward_svg([0.1, 0.4, 0.9], 0.5, 2, width=width, pad=pad)
    label = re.search(r"<text class='eta-label' x='([\d.]+)' y='([\d.]+)'[^>]*text-anchor='end'[^>]*>eta 0.5</text>", svg)
    assert label is not None, svg
    assert float(label.group(1)) <= width - pad, "the label ends inside the plot"
