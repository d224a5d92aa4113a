"""The trainer's policy on every Policy replica, kept there.

Each version goes (1) to the weights store in Redis, from which a replica started with
`--weights-redis-url` loads the newest version by itself (one started late or restarted
included), and (2) by LoadWeights to every replica the policy address names: a comma-separated
list, or `dns:///host:port` (every pod behind a headless Service). Every replica is sent the
same version number, so the version tag on each episode names one set of weights.

`sync` looks at every replica (GetSpec: version, instance, base) and sends the current weights
again to any that does not serve them - restarted on its initial weights, started late, or
loaded by someone else - so rollouts stop meeting a policy that is not the trainer's.
"""
from __future__ import annotations

import dataclasses
import logging

import grpc

from worldenv.client.clients import PolicyClient, resolve
from worldenv.client.errors import ServiceError
from worldenv.data.policy_weights import PolicyWeightsStore, PublishedWeights

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Replica:
    """What one Policy server says it serves."""

    address: str
    version: int
    instance: str      # new each time the server starts
    base: str          # the checkpoint it started from


@dataclasses.dataclass
class SyncReport:
    replicas: int = 0                                          # addresses the policy address resolved to
    at_version: int = 0                                        # of them, serving the trainer's version now
    republished: list[str] = dataclasses.field(default_factory=list)   # "address: why", sent the weights again
    unreachable: list[str] = dataclasses.field(default_factory=list)   # "address: error"
    restarted: list[str] = dataclasses.field(default_factory=list)     # "address: instance ...", new since the last look

    def add(self, other: "SyncReport") -> "SyncReport":
        return SyncReport(max(self.replicas, other.replicas), other.at_version, self.republished + other.republished,
                          self.unreachable + other.unreachable, self.restarted + other.restarted)


class PolicyUnreachable(ServiceError):
    """No Policy replica answered."""


class Publisher:
    """Publishes weights (safetensors bytes) to every replica and brings back the ones that drift."""

    def __init__(self, address: str, store: PolicyWeightsStore | None = None, auth_token: str | None = None,
                 timeout_s: float = 10.0):
        self.address, self.store, self.auth_token, self.timeout_s = address, store, auth_token, timeout_s
        self.version = 0          # the version published last (0: none yet)
        self.first_version = 0    # the first this trainer published: lower versions are not its weights
        self._weights: PublishedWeights | None = None
        self._synced: dict[str, str] = {}         # address -> instance serving the current version
        self._seen: dict[str, str] = {}           # address -> instance seen there last (kept across versions)
        self._clients: dict[str, PolicyClient] = {}

    def publish(self, data: bytes, note: str) -> SyncReport:
        """Send `data` as a new version to the store and every replica; the version is above any
        a replica or the store has served, so it can be no one else's."""
        replicas, report = self._look()
        for replica in replicas:            # a replica restarted since the last look gets the new version anyway
            self._note_restart(replica, report)
        stored = self.store.version() if self.store is not None else 0
        self.version = max([self.version, stored] + [r.version for r in replicas]) + 1
        self.first_version = self.first_version or self.version
        self._weights = PublishedWeights(self.version, note, data)
        if self.store is not None:
            self.store.put(self._weights)
        self._synced.clear()
        for replica in replicas:
            self._send(replica, "new version", report)
        return self._checked(report)

    def sync(self) -> SyncReport:
        """Send the current weights again to every replica that does not serve them."""
        replicas, report = self._look()
        for replica in replicas:
            new = replica.address not in self._seen
            why = self._drift(replica, new, restarted=self._note_restart(replica, report))
            if why is None:
                report.at_version += 1
            elif why == "caught up from the weights store":
                log.warning("policy replica %s (instance %s) %s: version %d", replica.address, replica.instance, why,
                            replica.version)
                self._synced[replica.address] = replica.instance
                report.at_version += 1
            else:
                self._send(replica, why, report)
        return self._checked(report)

    def _note_restart(self, replica: Replica, report: SyncReport) -> bool:
        """Whether `replica` is a new instance on an address seen before (noted in `report`). The
        instance seen last is kept across versions and unreachable spells, so a server that is down
        while a version is published and back later still counts as restarted."""
        known = self._seen.get(replica.address)
        self._seen[replica.address] = replica.instance
        if known is not None and replica.instance != known:
            report.restarted.append(f"{replica.address}: new instance {replica.instance} at version {replica.version}")
            return True
        return False

    def _drift(self, replica: Replica, new: bool, restarted: bool) -> str | None:
        """Why `replica` is not serving the trainer's current weights; None when it is."""
        known = self._synced.get(replica.address)
        if replica.version == self.version and replica.instance == known:
            return None
        if replica.version == self.version and self.store is not None:
            return "caught up from the weights store"
        if restarted:
            return f"restarted (new instance {replica.instance}, base {replica.base}, version {replica.version})"
        if new:
            return f"new replica at version {replica.version} (base {replica.base})"
        return f"serves version {replica.version}, not {self.version}"

    def _send(self, replica: Replica, why: str, report: SyncReport) -> None:
        weights = self._weights
        try:
            served = self._client(replica.address).load_weights(weights.data, note=weights.note, version=weights.version)
        except ServiceError as exc:
            self._drop(replica.address)
            report.unreachable.append(f"{replica.address}: {exc}")
            return
        if why != "new version":
            log.warning("policy replica %s %s: sent version %d again", replica.address, why, served)
            report.republished.append(f"{replica.address}: {why}")
        self._synced[replica.address] = replica.instance
        report.at_version += served == self.version

    def _look(self) -> tuple[list[Replica], SyncReport]:
        """Every replica the address resolves to that answers GetSpec."""
        addresses, replicas = resolve(self.address), []
        report = SyncReport(replicas=len(addresses))
        for address in addresses:
            try:
                replicas.append(self._replica(address))
            except ServiceError as exc:
                self._drop(address)
                report.unreachable.append(f"{address}: {exc}")
        return replicas, report

    def _replica(self, address: str) -> Replica:
        try:
            spec = self._client(address).refresh_spec()
        except ServiceError:   # a server restarted on the address: a new channel connects at once
            self._drop(address)
            spec = self._client(address).spec
        return Replica(address, int(spec.model_version or 0), spec.extra.get("instance", ""),
                       spec.extra.get("base", ""))

    def _client(self, address: str) -> PolicyClient:
        if address not in self._clients:
            self._clients[address] = PolicyClient(address, auth_token=self.auth_token, timeout_s=max(self.timeout_s, 60),
                                                  connect_timeout_s=self.timeout_s, retries=2).connect()
        return self._clients[address]

    def _drop(self, address: str) -> None:
        client = self._clients.pop(address, None)
        if client is not None:
            client.close()

    def _checked(self, report: SyncReport) -> SyncReport:
        if report.replicas and not report.at_version:
            raise PolicyUnreachable(f"no policy replica at {self.address} serves version {self.version}: "
                                    + "; ".join(report.unreachable), grpc.StatusCode.UNAVAILABLE, "Policy.LoadWeights")
        return report

    def close(self) -> None:
        for address in list(self._clients):
            self._drop(address)
