"""Response models of the debugging API (they become its OpenAPI schema)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = Field(description="'ok', or 'unavailable' when Redis does not answer")
    detail: str | None = Field(None, description="why not ok")


class Error(BaseModel):
    detail: str = Field(description="what was wrong, naming the field")


class EpisodeSummary(BaseModel):
    """One row of the episode list."""

    id: str
    status: str = Field(description="done | horizon | failed")
    policy_version: int
    instruction: str
    start_id: str = Field(description="start-state id, e.g. libero_object/3/17")
    group_id: str = ""
    run_id: str = ""
    steps: int = Field(description="T, the number of steps; the episode has T+1 frames")
    done_step: int | None = Field(None, description="first step with p_done > eta, if any")
    reward: float = Field(description="p_done at the termination step (or the last step)")
    created_at: float = Field(description="unix time")
    error: str | None = None


class EpisodeMeta(EpisodeSummary):
    """Everything about an episode except its arrays."""

    frame_shape: list[int] = Field(description="[H, W, 3]")
    action_shape: list[int] = Field(description="[K, A]: chunk length and action dimension")
    proprio_dim: int
    timings_ms: dict[str, list[float]] = Field(default_factory=dict, description="client latency per call: act, step, judge")
    extra: dict = Field(default_factory=dict)


class EpisodePage(BaseModel):
    items: list[EpisodeSummary]
    total: int = Field(description="episodes matching the filters")
    offset: int
    limit: int


class Rewards(BaseModel):
    episode_id: str
    status: str
    steps: int
    p_done: list[float] = Field(description="reflector's p(done) after each step, length T")
    done_step: int | None
    reward: float
    eta: float | None = Field(None, description="done threshold the worker used, when it stored one")
