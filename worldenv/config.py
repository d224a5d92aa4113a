"""The service registry and the typed settings of the deployables.

`SERVICES` is the one list of service names with their default ports, the model each serves and
its proto service. Every entry point's settings class derives from `Settings`: those of the
deployables are here, a command's in its module (the LIBERO jobs' in `worldenv.sim`).
Values come from (highest first) command-line flags, environment variables (`WORLDENV_<FIELD>`, plus `REDIS_URL`), then the
defaults. Field descriptions become `--help` text (see `worldenv.commands.flags`).

Settings that recur are declared once here: `redis_url_field` (every settings class that takes
a Redis: $REDIS_URL, else the Redis a running `worldenv up` recorded, else
redis://127.0.0.1:6379/0), the services' addresses (`local_address`) and how a comma-separated
flag value reads (`comma_list`).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worldenv import home


@dataclasses.dataclass(frozen=True)
class Service:
    """One deployable service as the registry knows it."""

    port: int                  # default port
    role: str | None = None    # the model role it serves (`worldenv.models.roles`); None = no model
    proto: str | None = None   # full name of its gRPC service; None = not a gRPC service


SERVICES: dict[str, Service] = {
    "world-model": Service(50051, "world_model", "worldenv.v1.WorldModel"),
    "reflector": Service(50052, "reflector", "worldenv.v1.Reflector"),
    "policy": Service(50053, "policy", "worldenv.v1.Policy"),
    "debug-api": Service(8080),
}
MODEL_SERVICES = tuple(name for name, service in SERVICES.items() if service.role)


def local_address(name: str) -> str:
    """host:port of service `name` on this machine at its default port."""
    return f"127.0.0.1:{SERVICES[name].port}"


REDIS_URL_ENV = AliasChoices("redis_url", "REDIS_URL", "WORLDENV_REDIS_URL")


def grasp_gate_field(where: str = "", gripper: str = "imagined"):
    """The `grasp_gate` field (metres, 0 = off): see worldenv/models/grasp_gate.py. `where` names
    the episodes it applies to, when a command has several kinds; `gripper` whose gripper it reads."""
    return Field(0.0, ge=0, lt=0.08, description=f"metres: {where}a done verdict counts only once the {gripper} "
                 "gripper's last closed run held at least this gap between the fingers (an object, not an empty grip; "
                 "worldenv/models/grasp_gate.py, LIBERO's Panda gripper; `worldenv align` prints the width that fits "
                 "the world model); 0 = the reflector alone")


def confirm_field(where: str = ""):
    """The `confirm` field: how many chunks in a row p(done) must exceed eta before a done verdict counts."""
    return Field(1, ge=1, le=16, description=f"{where}chunks in a row with p(done) > eta before a done verdict counts "
                 "(with the grasp gate read at the last); 1 = the first verdict, the paper's rule "
                 "(scripts/reward_rules.py measures which rule's imagined successes hold in LIBERO)")


def redis_url_field(description: str, embedded: bool = False):
    """The `redis_url` field: --redis-url, $REDIS_URL or $WORLDENV_REDIS_URL; unset, the Redis a running
    `worldenv up` recorded, else redis://127.0.0.1:6379/0 (`home.redis_url`). With `embedded`
    (`up`, `experiment`, which start a stack of their own) unset is None: start an embedded Redis."""
    if embedded:
        return Field(None, validation_alias=REDIS_URL_ENV, description=description)
    return Field(default_factory=home.redis_url, validation_alias=REDIS_URL_ENV,
                 description=f"{description} (unset: the Redis a running `worldenv up` recorded, else "
                 f"{home.DEFAULT_REDIS_URL})")


class Settings(BaseSettings):
    """Base of every entry point's settings: flags, then WORLDENV_* environment variables, then defaults."""

    model_config = SettingsConfigDict(env_prefix="WORLDENV_", extra="forbid", validate_default=True,
                                      env_ignore_empty=True)  # compose passes unset values as ""


def comma_list(value: str) -> list[str]:
    """A comma-separated flag value (names, paths, numbers) -> its items, stripped, empty ones dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def flag(name: str) -> str:
    """The command-line flag of settings field `name`."""
    return "--" + name.replace("_", "-")


def argv(settings: Settings) -> list[str]:
    """The command-line arguments that give exactly these settings to their command: every field
    set (given or read from the environment), in field order. They parse back through the
    command's parser (`worldenv.commands.flags`), so a renamed field fails where it is built."""
    out: list[str] = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if name not in settings.model_fields_set or value is None:
            continue
        if (field.json_schema_extra or {}).get("positional"):
            out.append(str(value))
        elif isinstance(value, bool):
            out.append(flag(name) if value else "--no-" + name.replace("_", "-"))
        else:
            out += [flag(name), str(value)]
    return out


# where a model's heavy layers run in a lower precision (`worldenv.models.precision`)
Autocast = Literal["none", "auto", "bfloat16", "float16"]


class ServeConfig(Settings):
    """One gRPC model service."""

    host: str = Field("0.0.0.0", description="interface to bind")
    port: int = Field(0, ge=0, le=65535, description="port to bind; 0 = the service's default port (-1 not allowed)")
    checkpoint: str = Field("shipped", description="checkpoint directory (config.json naming role and arch + weights); "
                            "'shipped' = the trained one that comes with worldenv; 'none' = random init")
    device: str = Field("cpu", description="torch device, e.g. cpu or cuda:0")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model dtype")
    autocast: Autocast = Field(
        "none", description="world model: run its U-Net pass under torch.autocast in this dtype, the weights kept in "
        "--dtype; 'auto' = bfloat16 where the device computes it natively (a CUDA GPU with bf16, a CPU with "
        "AVX512-BF16 or AMX), else none, and none for a world model without this path (a paper-scale one runs in "
        "--dtype); measured on the two-core CPU: 1.8x faster per step, the frames about 53 dB PSNR from float32's "
        "(bench/rollout.py)")
    channels_last: bool = Field(
        False, description="world model: run its U-Net pass on a channels-last input in float32 too (the autocast "
        "path always does): measured 1.16-1.29x faster per step on a one-thread AVX2 CPU (bench/rollout.py (g)), but "
        "oneDNN's rounding may then depend on the batch size (0.003 % of pixels a grey level apart between a "
        "batch of 3 and three of 1 there, 8.5 % on another CPU), so an item's frame may depend on what it was "
        "batched with")
    seed: int = Field(0, description="seed for random initialisation when no checkpoint is given")
    max_batch_size: int = Field(32, ge=1, description="largest merged batch of the dynamic batcher (items)")
    max_delay_ms: float = Field(5.0, ge=0, description="longest a request waits for others to join its batch")
    max_message_mb: float = Field(64.0, gt=0, description="largest gRPC message accepted or sent, MiB")
    max_request_items: int = Field(256, ge=1, description="most items (batch entries B) one request may carry; "
                                   "larger requests are refused before any compute (a 1024-item world-model Step "
                                   "needed 36 s and 4.8 GB on CPU)")
    auth_token: str | None = Field(None, description="bearer token required in 'authorization' metadata; none = open")
    session_ttl_s: float = Field(300.0, gt=0, description="world model, reflector: idle seconds before a session expires")
    max_sessions: int = Field(4096, ge=1, description="world model, reflector: open sessions allowed at once")
    eta: float = Field(0.5, gt=0, lt=1, description="reflector: default done threshold, done = p > eta")
    max_video_mb: float = Field(2048.0, gt=0, description="reflector: memory the videos of all open sessions may "
                                "hold, MiB (every frame of Open and Observe is kept until Close or the TTL); past "
                                "it Open and Observe answer RESOURCE_EXHAUSTED")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch's default")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="gRPC services: port of the Prometheus "
                                     "/metrics endpoint (on --host); 0 = any free port; unset = none (the debug API "
                                     "serves /metrics on its own port)")
    weights_redis_url: str | None = Field(None, description="policy: Redis of the weights store `worldenv train rl` "
                                          "publishes to; the server loads the newest version there before it reports "
                                          "SERVING and polls for newer ones, so every replica (one started late "
                                          "included) serves the trainer's weights; unset = LoadWeights only")
    weights_prefix: str = Field("worldenv", description="policy: key prefix of the weights store in Redis (the "
                                "trainer's --prefix)")
    weights_poll_s: float = Field(5.0, gt=0, description="policy: seconds between two looks at the weights store")

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)


class DebugApiConfig(Settings):
    """The REST episode-debugging API."""

    host: str = Field("0.0.0.0", description="interface to bind")
    port: int = Field(SERVICES["debug-api"].port, ge=0, le=65535, description="port to bind (0 = any free port)")
    redis_url: str = redis_url_field("Redis holding the episode store")
    prefix: str = Field("worldenv", description="key prefix of the queue and episode store in Redis")


class WorkerConfig(Settings):
    """A rollout worker: jobs from Redis, run as one batch through Policy -> WorldModel -> Reflector."""

    redis_url: str = redis_url_field("Redis with the job and result streams")
    prefix: str = Field("worldenv", description="key prefix of the queue and episode store in Redis")
    world_model_addr: str = Field(local_address("world-model"), description="WorldModel address (dns:///host:port balances across pods)")
    reflector_addr: str = Field(local_address("reflector"), description="Reflector address")
    policy_addr: str = Field(local_address("policy"), description="Policy address: host:port, a comma-separated list "
                             "of replicas, or dns:///host:port (Act goes to the replicas in turn)")
    auth_token: str | None = Field(None, description="bearer token sent to the services")
    batch_size: int = Field(32, ge=1, description="jobs taken and run as one batch")
    consumer: str | None = Field(None, description="consumer name in the group; none = host-pid")
    reclaim_idle_s: float = Field(60.0, gt=0, description="pending jobs idle this long are reclaimed from dead workers")
    block_ms: int = Field(1000, ge=1, description="how long one read waits for jobs")
    max_episodes: int = Field(10000, ge=1, description="episode store retention: oldest episodes beyond this are dropped")
    max_jobs: int = Field(0, ge=0, description="stop after this many jobs (0 = run forever)")
    metrics_host: str = Field("0.0.0.0", description="interface of the Prometheus /metrics endpoint")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="port of the Prometheus /metrics endpoint; "
                                     "0 = any free port; unset = no endpoint")

    @field_validator("prefix")
    @classmethod
    def _prefix_ok(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("prefix must be non-empty without whitespace")
        return v
