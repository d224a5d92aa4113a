"""Typed clients for the three services.

Each client is a context manager: it opens the channel, waits until it is ready, fetches the
service's spec, retries UNAVAILABLE with exponential backoff, sends the bearer token, and
raises `ServiceError` for every failure. Addresses may be `dns:///host:port`: with a headless
Kubernetes Service the client resolves every pod and balances round-robin across them.
"""
from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator

import grpc
import numpy as np
from google.protobuf.descriptor import ServiceDescriptor

from worldenv.client.errors import ServiceError
from worldenv.v1 import policy_pb2, reflector_pb2, tensor_pb2, world_model_pb2
from worldenv.wire import grpc_codec
from worldenv.wire.codec import CodecError
from worldenv.wire.grpc_codec import WireMessage

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Server timing of one reply plus the client's round-trip latency."""

    latency_ms: float
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    server_ms: float = 0.0
    batch_size: int = 0
    batch_requests: int = 0

    @classmethod
    def of(cls, latency_ms: float, t: tensor_pb2.ServerTiming) -> "Timing":
        return cls(latency_ms, t.queue_ms, t.compute_ms, t.total_ms, t.batch_size, t.batch_requests)


@dataclasses.dataclass(frozen=True)
class StepResult:
    frames: np.ndarray      # (B, H, W, 3) uint8
    proprio: np.ndarray     # (B, P) float32
    steps: list[int]
    timing: Timing


@dataclasses.dataclass(frozen=True)
class JudgeResult:
    p_done: np.ndarray      # (B,) float32
    done: list[bool]
    eta: float
    timing: Timing


@dataclasses.dataclass(frozen=True)
class ObserveResult:
    p_done: np.ndarray      # (B,) float32, of each video so far
    done: list[bool]
    eta: float
    lengths: list[int]      # frames in each video after this call
    timing: Timing


@dataclasses.dataclass(frozen=True)
class ActResult:
    loc: np.ndarray         # (B, K, A) float32
    scale: np.ndarray       # (B, K, A) float32
    actions: np.ndarray     # (B, K, A) float32
    log_probs: np.ndarray   # (B,) float32
    policy_version: int
    timing: Timing


class _Client:
    service: ServiceDescriptor  # its methods are called with the wire codecs (Tensors as numpy views)
    service_name: str

    def __init__(self, address: str, auth_token: str | None = None, timeout_s: float = 60.0,
                 connect_timeout_s: float = 30.0, retries: int = 5, backoff_s: float = 0.1,
                 max_message_mb: float = 64.0):
        self.address, self.timeout_s, self.connect_timeout_s = address, timeout_s, connect_timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self._metadata = (("authorization", f"Bearer {auth_token}"),) if auth_token else ()
        limit = int(max_message_mb * 1024 * 1024)
        self._options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                         ("grpc.lb_policy_name", "round_robin"), ("grpc.enable_retries", 0)]
        self.channel: grpc.Channel | None = None
        self.spec: tensor_pb2.ModelSpec | None = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self):
        """Open the channel, wait for it, and fetch the spec."""
        self.channel = grpc.insecure_channel(self.address, options=self._options)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=self.connect_timeout_s)
        except grpc.FutureTimeoutError:
            self.close()
            raise ServiceError(f"{self.service_name} at {self.address} not reachable within {self.connect_timeout_s:g} s",
                               grpc.StatusCode.UNAVAILABLE, "connect") from None
        self.stub = grpc_codec.Stub(self.channel, self.service)
        self.spec = self._call("GetSpec", tensor_pb2.GetSpecRequest())[0]
        return self

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def refresh_spec(self) -> tensor_pb2.ModelSpec:
        """Fetch the spec again (a policy's model_version rises with each LoadWeights)."""
        self.spec = self._call("GetSpec", tensor_pb2.GetSpecRequest())[0]
        return self.spec

    def _call(self, method: str, request, stream: bool = False):
        """Unary call with retries on UNAVAILABLE; returns (reply, latency_ms)."""
        fn = getattr(self.stub, method)
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                reply = fn(request() if stream else request, timeout=self.timeout_s, metadata=self._metadata)
                return reply, (time.perf_counter() - started) * 1000
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE or attempt == self.retries:
                    raise ServiceError(err.details() or "", err.code(), f"{self.service_name}.{method}") from None
                time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")


    def _arrays(self, reply: WireMessage, method: str, *names: str) -> list[np.ndarray]:
        """The reply's Tensor fields; a missing or undecodable one is the server's fault."""
        try:
            arrays = [reply.array(name) for name in names]
        except CodecError as exc:
            raise ServiceError(f"bad reply: {exc}", grpc.StatusCode.INTERNAL, f"{self.service_name}.{method}") from None
        missing = [name for name, arr in zip(names, arrays) if arr is None]
        if missing:
            raise ServiceError(f"bad reply: {', '.join(missing)} missing", grpc.StatusCode.INTERNAL,
                               f"{self.service_name}.{method}")
        return arrays


class WorldModelEndpoint(_Client):
    """One world-model server (one pod). Sessions live in its memory."""

    service, service_name = world_model_pb2.DESCRIPTOR.services_by_name["WorldModel"], "WorldModel"

    def open(self, frames: np.ndarray, proprio: np.ndarray, instructions: list[str]) -> list[str]:
        """frames (B, H, W, 3) or (B, T, H, W, 3) uint8, proprio (B, P) -> B session ids."""
        request = WireMessage(world_model_pb2.OpenRequest(instructions=instructions), frames=frames, proprio=proprio)
        return list(self._call("Open", request)[0].session_ids)

    def step(self, session_ids: list[str], actions: np.ndarray) -> StepResult:
        """actions (B, K, A) float32 -> predicted frames (B, H, W, 3) and proprio (B, P)."""
        request = WireMessage(world_model_pb2.StepRequest(session_ids=session_ids), actions=actions)
        reply, ms = self._call("Step", request)
        frames, proprio = self._arrays(reply, "Step", "frames", "proprio")
        return StepResult(frames, proprio, list(reply.steps), Timing.of(ms, reply.timing))

    def close_sessions(self, session_ids: list[str]) -> int:
        return self._call("Close", world_model_pb2.CloseRequest(session_ids=session_ids))[0].closed


class ReflectorEndpoint(_Client):
    """One reflector server (one pod). Sessions (videos) live in its memory."""

    service, service_name = reflector_pb2.DESCRIPTOR.services_by_name["Reflector"], "Reflector"

    def judge(self, frames: np.ndarray, instructions: list[str], eta: float = 0.0) -> JudgeResult:
        """frames (B, T, H, W, 3) uint8 videos -> p_done (B,), done = p_done > eta."""
        request = WireMessage(reflector_pb2.JudgeRequest(instructions=instructions, eta=eta), frames=frames)
        reply, ms = self._call("Judge", request)
        p_done, = self._arrays(reply, "Judge", "p_done")
        return JudgeResult(p_done, list(reply.done), reply.eta, Timing.of(ms, reply.timing))

    def open(self, frames: np.ndarray, instructions: list[str]) -> list[str]:
        """First frames (B, H, W, 3) uint8 of B videos -> B session ids."""
        request = WireMessage(reflector_pb2.OpenVideosRequest(instructions=instructions), frames=frames)
        return list(self._call("Open", request)[0].session_ids)

    def observe(self, session_ids: list[str], frames: np.ndarray, eta: float = 0.0) -> ObserveResult:
        """Next frames (B, H, W, 3) uint8 -> p_done (B,) of each video so far, done = p_done > eta."""
        request = WireMessage(reflector_pb2.ObserveRequest(session_ids=session_ids, eta=eta), frames=frames)
        reply, ms = self._call("Observe", request)
        p_done, = self._arrays(reply, "Observe", "p_done")
        return ObserveResult(p_done, list(reply.done), reply.eta, list(reply.lengths), Timing.of(ms, reply.timing))

    def close_sessions(self, session_ids: list[str]) -> int:
        return self._call("Close", reflector_pb2.CloseVideosRequest(session_ids=session_ids))[0].closed


class PolicyClient(_Client):
    service, service_name = policy_pb2.DESCRIPTOR.services_by_name["Policy"], "Policy"

    def act(self, frames: np.ndarray, proprio: np.ndarray, instructions: list[str],
            deterministic: bool = False, seed: int | list[int] = 0) -> ActResult:
        """frames (B, H, W, 3) uint8, proprio (B, P) -> Laplace chunk (B, K, A) and log-probs (B,).

        `seed`: one seed for every item, or one per item; 0 = unseeded."""
        seeds = list(seed) if isinstance(seed, (list, tuple, np.ndarray)) else ([seed] * len(frames) if seed else [])
        request = WireMessage(policy_pb2.ActRequest(instructions=instructions, deterministic=deterministic, seeds=seeds),
                              frames=frames, proprio=proprio)
        reply, ms = self._call("Act", request)
        names = ("loc", "scale", "actions", "log_probs")
        arrays = dict(zip(names, self._arrays(reply, "Act", *names)))
        return ActResult(**arrays, policy_version=reply.policy_version, timing=Timing.of(ms, reply.timing))

    def load_weights(self, data: bytes, note: str = "", chunk_bytes: int = 1 << 20, version: int = 0) -> int:
        """Stream a safetensors file; returns the version now serving (`version`, or with 0 the
        server's current version + 1)."""
        def chunks() -> Iterator[policy_pb2.WeightsChunk]:
            for i in range(0, max(len(data), 1), chunk_bytes):
                first = i == 0
                yield policy_pb2.WeightsChunk(data=data[i:i + chunk_bytes], total_bytes=len(data) if first else 0,
                                              note=note if first else "", version=version if first else 0)
        return self._call("LoadWeights", chunks, stream=True)[0].policy_version


def resolve(address: str) -> list[str]:
    """`dns:///host:port` -> one address per IP the name resolves to (the pods behind a headless
    Service); `host:port,host:port` -> those replicas (a static list); any other address -> itself."""
    if "," in address:
        return [a for part in address.split(",") if part.strip() for a in resolve(part.strip())]
    if not address.startswith("dns:///"):
        return [address]
    host, _, port = address[len("dns:///"):].rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError:
        return [address]
    ips = sorted({info[4][0] for info in infos})
    return [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips] or [address]


class _SessionClient:
    """A client with session affinity across pods (the world model's and the reflector's).

    Plain gRPC round-robin would send a session's calls to pods that do not hold it. This
    client keeps one channel per pod (re-resolving the name every `refresh_s` to find pods the
    autoscaler added), opens each batch of sessions on the next pod in turn, and sends every
    later call for a session to the pod that opened it.
    """

    endpoint_class: type[_Client]

    def __init__(self, address: str, refresh_s: float = 30.0, **client_options):
        self.address, self.refresh_s, self._options = address, refresh_s, client_options
        self._pods: dict[str, _Client] = {}
        self._owner: dict[str, str] = {}
        self._live: list[str] = []   # pods the last resolution returned, new sessions go here
        self._turn, self._resolved_at = 0, 0.0
        self.spec: tensor_pb2.ModelSpec | None = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def channel(self) -> grpc.Channel:
        return next(iter(self._pods.values())).channel

    @property
    def service_name(self) -> str:
        return self.endpoint_class.service_name

    def connect(self):
        self._refresh()
        if not self._pods:
            raise ServiceError(f"{self.service_name} at {self.address}: no reachable server",
                               grpc.StatusCode.UNAVAILABLE, "connect")
        self.spec = next(iter(self._pods.values())).spec
        return self

    def _refresh(self) -> None:
        """Connect to pods the name now resolves to; drop vanished pods that hold no session."""
        self._resolved_at = time.monotonic()
        targets, errors = resolve(self.address), []
        for target in targets:
            if target not in self._pods:
                try:
                    self._pods[target] = self.endpoint_class(target, **self._options).connect()
                except ServiceError as err:
                    errors.append(err)
        owners = set(self._owner.values())
        for target in [t for t in self._pods if t not in targets and t not in owners]:
            self._pods.pop(target).close()
        self._live = [t for t in targets if t in self._pods]
        if not self._pods and errors:
            raise errors[0]

    def close(self) -> None:
        for pod in self._pods.values():
            pod.close()
        self._pods.clear()

    def _next_pod(self) -> _Client:
        """The pod whose turn it is (new sessions, stateless calls)."""
        if time.monotonic() - self._resolved_at > self.refresh_s:
            self._refresh()
        targets = self._live or sorted(self._pods)
        target = targets[self._turn % len(targets)]
        self._turn += 1
        return self._pods[target]

    def _opened(self, pod: _Client, ids: list[str]) -> list[str]:
        self._owner.update(dict.fromkeys(ids, pod.address))
        return ids

    def _pod_of(self, session_ids: list[str], method: str) -> _Client:
        """The pod that holds these sessions (all on one)."""
        if not session_ids:
            return self._next_pod()  # the server refuses it, naming the field
        where = f"{self.service_name}.{method}"
        targets = {self._owner.get(sid) for sid in session_ids}
        if None in targets and len(self._pods) == 1:
            return next(iter(self._pods.values()))  # one server: it answers for ids it does not know
        if None in targets:
            unknown = [sid for sid in session_ids if sid not in self._owner]
            raise ServiceError(f"session_ids: {unknown} were not opened by this client", grpc.StatusCode.NOT_FOUND,
                               where)
        if len(targets) > 1:
            raise ServiceError(f"session_ids: one {method} must address sessions opened together on one server",
                               grpc.StatusCode.INVALID_ARGUMENT, where)
        return self._pods[targets.pop()]

    def close_sessions(self, session_ids: list[str]) -> int:
        closed = 0
        for target in {self._owner.pop(sid, None) for sid in session_ids} - {None}:
            closed += self._pods[target].close_sessions(session_ids)
        return closed


class WorldModelClient(_SessionClient):
    """World-model client with session affinity across pods."""

    endpoint_class = WorldModelEndpoint

    def open(self, frames: np.ndarray, proprio: np.ndarray, instructions: list[str]) -> list[str]:
        """Open B sessions on one pod (the next in turn); returns their ids."""
        pod = self._next_pod()
        return self._opened(pod, pod.open(frames, proprio, instructions))

    def step(self, session_ids: list[str], actions: np.ndarray) -> StepResult:
        """actions (B, K, A) float32 -> predicted frames (B, H, W, 3) and proprio (B, P)."""
        return self._pod_of(session_ids, "Step").step(session_ids, actions)


class ReflectorClient(_SessionClient):
    """Reflector client: stateless `judge` on the pods in turn; video sessions (`open`,
    `observe`, `close_sessions`) kept on the pod that opened them."""

    endpoint_class = ReflectorEndpoint

    def judge(self, frames: np.ndarray, instructions: list[str], eta: float = 0.0) -> JudgeResult:
        """frames (B, T, H, W, 3) uint8 videos -> p_done (B,), done = p_done > eta."""
        return self._next_pod().judge(frames, instructions, eta)

    def open(self, frames: np.ndarray, instructions: list[str]) -> list[str]:
        """First frames (B, H, W, 3) uint8 -> B session ids, opened on one pod (the next in turn)."""
        pod = self._next_pod()
        return self._opened(pod, pod.open(frames, instructions))

    def observe(self, session_ids: list[str], frames: np.ndarray, eta: float = 0.0) -> ObserveResult:
        """Next frames (B, H, W, 3) uint8 of B sessions -> p_done (B,) of each video so far."""
        return self._pod_of(session_ids, "Observe").observe(session_ids, frames, eta)


class PolicyPool(_SessionClient):
    """Policy client over every replica an address names (`host:port,host:port` or
    `dns:///host:port`): `act` goes to the replicas in turn (a policy keeps no sessions). Each
    reply's policy_version says which weights answered; the trainer keeps all replicas on one."""

    endpoint_class = PolicyClient

    def act(self, frames: np.ndarray, proprio: np.ndarray, instructions: list[str],
            deterministic: bool = False, seed: int | list[int] = 0) -> ActResult:
        """As `PolicyClient.act`, on the next replica."""
        return self._next_pod().act(frames, proprio, instructions, deterministic=deterministic, seed=seed)
