"""The debugging API: FastAPI routes over an `EpisodeStore`.

Routes are plain `def`s: FastAPI runs them in its thread pool, so blocking Redis calls and
GIF encoding never stall the event loop. Domain errors are raised as `ApiError`s and turned
into `{"detail": "..."}` responses in `_install_error_handlers`, the one place errors are mapped.
"""
from __future__ import annotations

import logging
from typing import Literal

import fastapi
import redis
from fastapi import Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from worldenv.data import episodes
from worldenv.data.episodes import EpisodeStore
from worldenv.data.runs import RunLog

from . import media, metrics, pages, schemas

log = logging.getLogger(__name__)

EpisodeId = Path(pattern=episodes.ID_PATTERN, max_length=128, description="episode id")
# GIF delays are whole centiseconds, and browsers slow delays under 2 cs down: 50 fps is the most.
Fps = Query(8.0, ge=0.5, le=50, description="frames per second of the video, 0.5 to 50")
# No store holds a billion episodes; the bound keeps offset + limit within Redis's integers.
Offset = Query(0, ge=0, le=1_000_000_000, description="episodes to skip, newest first")
_ERRORS = {404: {"model": schemas.Error}, 503: {"model": schemas.Error}}
# An HTML page's errors are JSON like every route's: FastAPI would document a `model` under the
# route's own media type (text/html), so they are spelled out.
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_HTML_ERRORS = {404: {"description": "Not Found", "content": _JSON_ERROR},
                503: {"description": "Episode store unavailable", "content": _JSON_ERROR}}
_PNG = {200: {"content": {"image/png": {}}, "description": "the frame as PNG"}}
_VIDEO = {200: {"content": {"image/gif": {}, "video/mp4": {}}, "description": "the episode as GIF or MP4"}}


class ApiError(Exception):
    """An error answered as {"detail": message} with an HTTP status."""

    status = 500

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class NotFound(ApiError):
    status = 404


class BadParameter(ApiError):
    status = 422


def _install_error_handlers(app: fastapi.FastAPI) -> None:
    @app.exception_handler(ApiError)
    def _api_error(request, exc: ApiError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(redis.RedisError)
    def _redis_error(request, exc: redis.RedisError):
        # The store's commands and keys stay in the log, not in the answer.
        log.error("episode store error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": f"episode store unavailable ({type(exc).__name__}); see the debug API's log"},
                            status_code=503)


class _Episodes:
    """Store reads that raise NotFound instead of returning None."""

    def __init__(self, store: EpisodeStore):
        self.store = store

    def meta(self, episode_id: str) -> dict:
        meta = self.store.meta(episode_id)
        if meta is None:
            raise NotFound(f"episode_id: no episode {episode_id!r}")
        return meta

    def rewards(self, episode_id: str) -> dict:
        rewards = self.store.rewards(episode_id)
        if rewards is None:
            raise NotFound(f"episode_id: no episode {episode_id!r}")
        return {"episode_id": episode_id, **rewards}

    def frame(self, episode_id: str, t: int):
        steps = self.meta(episode_id)["steps"]
        frame = self.store.frame(episode_id, t) if 0 <= t <= steps else None
        if frame is None:
            raise NotFound(f"t: frame {t} is out of range; episode {episode_id!r} has frames 0..{steps}")
        return frame

    def frames(self, episode_id: str):
        frames = self.store.frames(episode_id)
        if frames is None:
            raise NotFound(f"episode_id: no episode {episode_id!r}")
        return frames


def create_app(store: EpisodeStore, *, title: str = "worldenv debug API") -> fastapi.FastAPI:
    """The FastAPI app serving `store`'s episodes (JSON, PNG, GIF/MP4 and HTML pages)."""
    app = fastapi.FastAPI(title=title, description="Look at the episodes the world model imagined.")
    eps = _Episodes(store)
    _install_error_handlers(app)
    _add_json_routes(app, eps)
    _add_media_routes(app, eps)
    _add_html_routes(app, eps)
    _add_run_routes(app, eps, RunLog(store.client, store.prefix))
    _add_invalid_id_route(app)
    app.state.metrics = metrics.install(app)
    return app


def _add_json_routes(app: fastapi.FastAPI, eps: _Episodes) -> None:
    @app.get("/healthz", response_model=schemas.Health, response_model_exclude_none=True,
             responses={503: {"model": schemas.Health}})
    def healthz(response: Response):
        """200 when the episode store's Redis answers, else 503."""
        try:
            eps.store.ping()
        except redis.RedisError as e:
            response.status_code = 503
            return schemas.Health(status="unavailable", detail=f"redis: {e}")
        return schemas.Health(status="ok")

    @app.get("/episodes", response_model=schemas.EpisodePage, responses=_ERRORS)
    def list_episodes(status: Literal["done", "horizon", "failed"] | None = None,
                      policy_version: int | None = Query(None, ge=0), run_id: str | None = None,
                      offset: int = Offset, limit: int = Query(50, ge=1, le=500)):
        """Episodes newest first, filtered by status, policy version and run, one page at a time."""
        items, total = eps.store.list(status=status, policy_version=policy_version, run_id=run_id,
                                  offset=offset, limit=limit)
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    @app.get("/episodes/{episode_id}", response_model=schemas.EpisodeMeta, responses=_ERRORS)
    def episode_meta(episode_id: str = EpisodeId):
        """An episode's metadata (everything but its arrays)."""
        return eps.meta(episode_id)

    @app.get("/episodes/{episode_id}/rewards", response_model=schemas.Rewards, responses=_ERRORS)
    def episode_rewards(episode_id: str = EpisodeId):
        """The reflector's p(done) per step, the done step and the reward."""
        return eps.rewards(episode_id)


def _add_media_routes(app: fastapi.FastAPI, eps: _Episodes) -> None:
    @app.get("/episodes/{episode_id}/frames/{t}.png", response_class=Response, responses={**_ERRORS, **_PNG})
    def episode_frame(t: int, episode_id: str = EpisodeId, scale: int = Query(1, ge=1, le=8)):
        """Frame t (0 = the start frame, T = the last) as PNG, optionally upscaled (nearest)."""
        return Response(media.png(eps.frame(episode_id, t), scale), media_type="image/png")

    @app.get("/episodes/{episode_id}/video", response_class=Response, responses={**_ERRORS, **_VIDEO})
    def episode_video(episode_id: str = EpisodeId, format: Literal["gif", "mp4"] = "gif",
                      fps: float = Fps, scale: int = Query(1, ge=1, le=8)):
        """All T+1 frames as a looping GIF (default) or an MP4 (when imageio's ffmpeg plugin is installed)."""
        if format == "mp4" and not media.mp4_available():
            raise BadParameter("format: mp4 needs imageio's ffmpeg plugin (pip install imageio-ffmpeg); use format=gif")
        frames = eps.frames(episode_id)
        if format == "mp4":
            return Response(media.mp4(frames, fps, scale), media_type="video/mp4")
        return Response(media.gif(frames, fps, scale), media_type="image/gif")


def _add_html_routes(app: fastapi.FastAPI, eps: _Episodes) -> None:
    @app.get("/episodes/{episode_id}/view", response_class=HTMLResponse, responses=_HTML_ERRORS)
    def episode_view(episode_id: str = EpisodeId):
        """An HTML page: the episode's video beside its p(done) curve, and its metadata."""
        return pages.episode_page(eps.meta(episode_id), eps.rewards(episode_id))

    @app.get("/", response_class=HTMLResponse, responses=_HTML_ERRORS)
    def index(limit: int = Query(50, ge=1, le=500)):
        """An HTML list of the most recent episodes, each linking to its page."""
        items, total = eps.store.list(limit=limit)
        return pages.index_page(items, total)


RunId = Path(pattern=episodes.ID_PATTERN, max_length=128, description="training run id")


def _add_run_routes(app: fastapi.FastAPI, eps: _Episodes, log: RunLog) -> None:
    def rows(run_id: str) -> list[dict]:
        found = log.rows(run_id)
        if found is None:
            raise NotFound(f"no training run {run_id!r}")
        return found

    @app.get("/runs", responses=_ERRORS)
    def list_runs(limit: int = Query(100, ge=1, le=1000)):
        """Training runs, most recently updated first."""
        return {"runs": log.runs(limit)}

    @app.get("/runs/{run_id}/metrics", responses=_ERRORS)
    def run_metrics(run_id: str = RunId):
        """The run's metrics rows, one per iteration."""
        return {"run_id": run_id, "rows": rows(run_id)}

    @app.get("/runs/{run_id}/view", response_class=HTMLResponse, responses=_HTML_ERRORS)
    def run_view(run_id: str = RunId, per_iteration: int = Query(8, ge=0, le=64)):
        """An HTML page: the run's curves beside the episodes each iteration imagined."""
        found = rows(run_id)
        imagined = {r["iteration"]: eps.store.list(run_id=f"{run_id}-it{r['iteration']:04d}", limit=per_iteration)[0]
                    for r in found} if per_iteration else {}
        return pages.run_page(run_id, found, imagined)


def _add_invalid_id_route(app: fastapi.FastAPI) -> None:
    # Reached only when no route above matched, e.g. `..%2F..%2Fetc`, which the server decodes
    # to `../../etc` before routing: an invalid id is a 422 like any other, never a lookup.
    @app.get("/episodes/{rest:path}", include_in_schema=False)
    def unmatched(rest: str):
        episode_id = rest.split("/", 1)[0]
        try:
            episodes.check_id(episode_id)
        except ValueError as e:
            raise RequestValidationError([{"type": "string_pattern_mismatch", "loc": ("path", "episode_id"),
                                           "msg": str(e), "input": episode_id}]) from None
        raise NotFound(f"no route /episodes/{rest}")
