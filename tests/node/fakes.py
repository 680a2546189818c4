"""Fakes for the agent's seams: a control plane behind ``httpx.MockTransport``, a WireGuard
driver and a network setup in memory. They keep a journal so tests can check the order of
what happened (firewall before peers, one set per delta)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from burrow.node.drivers.uapi import WgPeer
from burrow.node.drivers.wireguard import WireGuardNotRunning
from burrow.node.reconcile import Action, RemovePeer
from burrow.wire import (
    API_PREFIX,
    BlockedConnection,
    DeltaState,
    DesiredState,
    FullState,
    IkeV2Offer,
    NetworkSpec,
    NodeReport,
    OpenVpnOffer,
    PeerSpec,
    ReportAck,
)

NODE_TOKEN = "bwn_test-node-token"
ENROLLMENT_TOKEN = "bwe_test-enrollment-token"

NETWORK = NetworkSpec(
    listen_port=51820,
    tunnel_ipv4="10.64.0.0/10",
    tunnel_ipv6="fd42:b0::/48",
    gateway_ipv4="10.64.0.1",
    gateway_ipv6="fd42:b0::1",
)


def random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def peer(n: int, key: str | None = None) -> PeerSpec:
    return PeerSpec(
        public_key=key or random_key(),
        allowed_ips=(f"10.64.{n >> 8}.{n & 255}/32", f"fd42:b0::{n:x}/128"),
    )


@dataclass
class FakeControlPlane:
    """The node API in memory: a change log, a switch to go away, and the reports it got."""

    peers: dict[str, PeerSpec] = field(default_factory=dict)
    network: NetworkSpec = NETWORK
    revision: int = 1
    log: list[tuple[int, str, PeerSpec]] = field(default_factory=list)
    available: bool = True
    poll_wait: float = 0.05
    # When set, the next changes answer is this, whatever was asked.
    forced: FullState | DeltaState | None = None
    token_valid: bool = True
    reports: list[NodeReport] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)
    counted: dict[str, list[int]] = field(default_factory=dict)
    blocked: tuple[str, ...] = ()
    blocked_connections: tuple[BlockedConnection, ...] = ()
    lose_answer: int = 0
    requests: list[str] = field(default_factory=list)
    enrolled_key: str | None = None
    # What the node announced about its other protocols, by path ("/openvpn", "/ikev2").
    offers: dict[str, OpenVpnOffer | IkeV2Offer] = field(default_factory=dict)

    # --- what the test does ----------------------------------------------------------------

    def upsert(self, spec: PeerSpec) -> None:
        self.revision += 1
        self.peers[spec.public_key] = spec
        self.log.append((self.revision, "upsert", spec))

    def remove(self, key: str) -> None:
        self.revision += 1
        spec = self.peers.pop(key)
        self.log.append((self.revision, "remove", spec))

    def full(self) -> DesiredState:
        return DesiredState(
            revision=self.revision, network=self.network, peers=tuple(self.peers.values())
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # --- the API -------------------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(API_PREFIX)
        self.requests.append(f"{request.method} {path}")
        if not self.available:
            raise httpx.ConnectError("connection refused", request=request)
        if path == "/enroll":
            body = json.loads(request.content)
            if body["token"] != ENROLLMENT_TOKEN:
                return self._problem(401, "This enrollment token is not valid.")
            self.enrolled_key = body["public_key"]
            return httpx.Response(
                200,
                json={
                    "node_id": 7,
                    "node_name": "ams-1",
                    "node_token": NODE_TOKEN,
                    "interface_name": "bw7",
                },
            )
        if not self.token_valid or request.headers.get("authorization") != f"Bearer {NODE_TOKEN}":
            return self._problem(401, "This is not a valid node token.")
        if path == "/state":
            return self._json(FullState(state=self.full()))
        if path == "/state/changes":
            since = int(request.url.params["since"])
            if self.forced is not None:
                forced, self.forced = self.forced, None
                return self._json(forced)
            if since == self.revision:
                await asyncio.sleep(self.poll_wait)
            return self._json(self.changes_since(since))
        if path == "/report":
            return self._report(NodeReport.model_validate_json(request.content), request)
        if request.method == "PUT" and path in ("/openvpn", "/ikev2"):
            offer = (OpenVpnOffer if path == "/openvpn" else IkeV2Offer).model_validate_json(
                request.content
            )
            self.offers[path] = offer
            return httpx.Response(204)
        return self._problem(404, "no such endpoint")

    def changes_since(self, since: int) -> FullState | DeltaState:
        if since > self.revision:
            return FullState(state=self.full())
        newest: dict[str, tuple[str, PeerSpec]] = {}
        for revision, op, spec in self.log:
            if revision > since:
                newest.pop(spec.public_key, None)
                newest[spec.public_key] = (op, spec)
        return DeltaState(
            from_revision=since,
            revision=self.revision,
            upserts=tuple(spec for op, spec in newest.values() if op == "upsert"),
            removals=tuple(spec.public_key for op, spec in newest.values() if op == "remove"),
            network=self.network,
        )

    def _report(self, report: NodeReport, request: httpx.Request) -> httpx.Response:
        self.reports.append(report)
        last = self.last_seq.get(report.boot_id, -1)
        if report.seq <= last:
            ack = ReportAck(accepted=False, last_seq=last, blocked=self.blocked)
        else:
            self.last_seq[report.boot_id] = report.seq
            for status in report.peers:
                totals = self.counted.setdefault(status.public_key, [0, 0])
                totals[0] += status.rx_bytes
                totals[1] += status.tx_bytes
            ack = ReportAck(
                accepted=True,
                last_seq=report.seq,
                blocked=self.blocked,
                blocked_connections=self.blocked_connections,
            )
        if self.lose_answer:
            # The report arrived and counted; the answer is lost on the way back.
            self.lose_answer -= 1
            raise httpx.ReadTimeout("no answer", request=request)
        return self._json(ack)

    @staticmethod
    def _json(model: FullState | DeltaState | ReportAck) -> httpx.Response:
        return httpx.Response(
            200, content=model.model_dump_json(), headers={"content-type": "application/json"}
        )

    @staticmethod
    def _problem(status: int, detail: str) -> httpx.Response:
        return httpx.Response(
            status,
            json={"type": "about:blank", "title": "refused", "status": status, "detail": detail},
            headers={"content-type": "application/problem+json"},
        )


class FakeDriver:
    """A WireGuard interface in memory, implementing ``WireGuardDriver``.

    ``peers`` is what the interface holds (public key -> allowed IPs and counters);
    ``kill()`` makes it die the way wireguard-go does (everything lost).
    """

    def __init__(self, journal: list[str] | None = None) -> None:
        self.journal = journal if journal is not None else []
        self.running = False
        self.peers: dict[str, tuple[str, ...]] = {}
        self.counters: dict[str, tuple[int, int]] = {}
        self.handshakes: dict[str, float] = {}
        self._applied: dict[str, tuple[str, ...]] = {}
        self._needs_resync = True
        self.configured: list[tuple[str, int]] = []
        self.batches: list[list[Action]] = []
        self.starts = 0
        self.fail_next_apply = False

    @property
    def applied(self) -> Mapping[str, tuple[str, ...]]:
        return self._applied

    @property
    def needs_resync(self) -> bool:
        return self._needs_resync

    def kill(self) -> None:
        self.running = False
        self.peers.clear()
        self.counters.clear()

    async def ensure_running(self) -> bool:
        if self.running:
            return False
        self.running = True
        self.starts += 1
        self.peers.clear()
        self._applied = {}
        self._needs_resync = True
        self.journal.append("start")
        return True

    def _check(self) -> None:
        if not self.running:
            raise WireGuardNotRunning("not running")

    async def configure_interface(self, private_key: str, listen_port: int) -> None:
        self._check()
        self.configured.append((private_key, listen_port))
        self.journal.append("configure")

    async def get_state(self) -> list[WgPeer]:
        self._check()
        self._applied = dict(self.peers)
        self._needs_resync = False
        out = []
        for key, ips in self.peers.items():
            rx, tx = self.counters.get(key, (0, 0))
            handshake = self.handshakes.get(key, 0.0)
            out.append(
                WgPeer(
                    public_key=key,
                    allowed_ips=ips,
                    last_handshake_sec=int(handshake),
                    rx_bytes=rx,
                    tx_bytes=tx,
                )
            )
        return out

    async def apply(self, actions: Sequence[Action]) -> None:
        if not actions:
            return
        self._check()
        if self.fail_next_apply:
            self.fail_next_apply = False
            self._needs_resync = True
            raise WireGuardNotRunning("died during a change")
        self.batches.append(list(actions))
        self.journal.append(f"apply {len(actions)}")
        for action in actions:
            if isinstance(action, RemovePeer):
                self.peers.pop(action.public_key, None)
                self._applied.pop(action.public_key, None)
            else:
                self.peers[action.public_key] = action.allowed_ips
                self._applied[action.public_key] = action.allowed_ips


class FakeNetwork:
    """``NetworkSetup`` in memory."""

    def __init__(self, journal: list[str] | None = None) -> None:
        self.journal = journal if journal is not None else []
        self.prepared: list[tuple[NetworkSpec, bool]] = []
        self.blocked: list[list[str]] = []
        self.failures: list[Exception] = []  # raised by the next ``set_blocked`` calls

    async def prepare(self, network: NetworkSpec, *, reload: bool = False) -> None:
        self.prepared.append((network, reload))
        self.journal.append("prepare")

    async def set_blocked(self, addresses: Collection[str]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.blocked.append(sorted(addresses))
        self.journal.append("block")


class FakeShaper:
    """``loop.Shaper`` in memory: who is shaped, and every change asked of it."""

    def __init__(self) -> None:
        self.peers: dict[str, tuple[str, ...]] = {}
        self.rate: int | None = None
        self.changes: list[tuple[str, ...] | str] = []

    @property
    def shaped(self) -> frozenset[str]:
        return frozenset(self.peers)

    async def apply(
        self, peers: Mapping[str, Sequence[str]], rate_mbit: int, *, force: bool = False
    ) -> bool:
        wanted = {key: tuple(addresses) for key, addresses in peers.items()}
        if not force and wanted == self.peers and (rate_mbit == self.rate or not wanted):
            return False
        self.changes.append(("force" if force else "apply", *sorted(wanted)))
        self.peers = wanted
        self.rate = rate_mbit
        return True

    async def clear(self) -> None:
        self.peers = {}
        self.changes.append("clear")
