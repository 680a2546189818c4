"""Status reports: connected peers, byte deltas that are never lost, doubled or negative."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

import httpx
import pytest

from burrow.node.client import ControlPlaneUnavailable, NodeApiClient
from burrow.node.drivers.uapi import PeerMemo, WgPeer, parse_answer
from burrow.node.status import ByteAccounting, StatusReporter, Traffic
from burrow.wire import BlockedConnection, ConnectionRefusal
from tests.support.work import LineCounter

from .fakes import NODE_TOKEN, FakeControlPlane, random_key

NOW = 1_800_000_000.0
A, B = random_key(), random_key()


class FakeSource:
    """The sync loop as the reporter sees it: counters set by the test."""

    def __init__(self) -> None:
        self.applied_revision = 4
        self.interface_epoch = 1
        self.peers: dict[str, WgPeer] = {}
        self.blocked: list[list[str]] = []
        self.readable = True

    def set(self, key: str, rx: int, tx: int, handshake: float = 0.0) -> None:
        self.peers[key] = WgPeer(
            public_key=key, last_handshake_sec=int(handshake), rx_bytes=rx, tx_bytes=tx
        )

    async def read_peers(self) -> list[WgPeer]:
        if not self.readable:
            raise RuntimeError("no interface")
        return list(self.peers.values())

    async def set_blocked_keys(self, keys: Collection[str]) -> None:
        self.blocked.append(sorted(keys))


@dataclass
class Rig:
    cp: FakeControlPlane
    source: FakeSource
    reporter: StatusReporter

    def counted(self, key: str) -> tuple[int, int]:
        rx, tx = self.cp.counted.get(key, [0, 0])
        return rx, tx


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    cp = FakeControlPlane()
    source = FakeSource()
    client = NodeApiClient("http://control.test", NODE_TOKEN, transport=cp.transport())
    reporter = StatusReporter(client, source, idle_threshold_seconds=180, clock=lambda: NOW)
    yield Rig(cp, source, reporter)
    await client.aclose()


def test_accounting_counts_from_zero_and_after_a_reset() -> None:
    accounting = ByteAccounting()
    peer = WgPeer(public_key=A, rx_bytes=100, tx_bytes=50)
    assert accounting.deltas([peer]) == {A: Traffic(100, 50)}
    assert accounting.deltas([peer]) == {}
    grown = WgPeer(public_key=A, rx_bytes=160, tx_bytes=50)
    assert accounting.deltas([grown]) == {A: Traffic(60, 0)}
    # The interface restarted: the counters went down. What they show now is new traffic.
    restarted = WgPeer(public_key=A, rx_bytes=30, tx_bytes=5)
    assert accounting.deltas([restarted]) == {A: Traffic(30, 5)}
    accounting.reset()
    assert accounting.deltas([restarted]) == {A: Traffic(30, 5)}


async def test_connected_means_a_handshake_younger_than_the_idle_threshold(rig: Rig) -> None:
    rig.source.set(A, 0, 0, handshake=NOW - 179)
    rig.source.set(B, 0, 0, handshake=NOW - 181)
    rig.source.set(random_key(), 0, 0)  # never shook hands
    await rig.reporter.report_once()
    report = rig.cp.reports[-1]
    # Idle peers without traffic are left out: a node with 100,000 peers sends only the live.
    assert [(p.public_key, p.connected) for p in report.peers] == [(A, True)]
    assert report.revision == 4
    assert report.boot_id == rig.reporter.boot_id
    assert report.seq == 1


async def test_byte_deltas_since_the_last_report(rig: Rig) -> None:
    rig.source.set(A, 1000, 200, handshake=NOW)
    await rig.reporter.report_once()
    rig.source.set(A, 1500, 260, handshake=NOW)
    rig.source.set(B, 0, 0)
    await rig.reporter.report_once()
    second = rig.cp.reports[-1]
    assert second.seq == 2
    assert [(p.public_key, p.rx_bytes, p.tx_bytes) for p in second.peers] == [(A, 500, 60)]
    assert rig.counted(A) == (1500, 260)


async def test_a_lost_report_is_sent_again_under_its_number_with_newer_bytes(rig: Rig) -> None:
    rig.source.set(A, 1000, 100, handshake=NOW)
    rig.cp.available = False
    with pytest.raises(ControlPlaneUnavailable):
        await rig.reporter.report_once()
    rig.source.set(A, 1300, 100, handshake=NOW)
    with pytest.raises(ControlPlaneUnavailable):
        await rig.reporter.report_once()
    rig.cp.available = True
    rig.source.set(A, 1400, 150, handshake=NOW)
    ack = await rig.reporter.report_once()
    assert ack.accepted
    assert [r.seq for r in rig.cp.reports] == [1]  # only the last try arrived
    assert rig.counted(A) == (1400, 150)
    rig.source.set(A, 1450, 150, handshake=NOW)
    await rig.reporter.report_once()
    assert rig.cp.reports[-1].seq == 2
    assert rig.counted(A) == (1450, 150)


async def test_a_report_whose_answer_was_lost_is_not_counted_twice(rig: Rig) -> None:
    rig.source.set(A, 1000, 100, handshake=NOW)
    rig.cp.lose_answer = 1  # arrives and counts, but the agent hears nothing
    with pytest.raises(ControlPlaneUnavailable):
        await rig.reporter.report_once()
    assert rig.counted(A) == (1000, 100)
    rig.source.set(A, 1200, 130, handshake=NOW)
    ack = await rig.reporter.report_once()
    # seq 1 again (dropped as a repeat), then seq 2 with only what came after.
    assert [r.seq for r in rig.cp.reports] == [1, 1, 2]
    assert ack.accepted
    assert rig.counted(A) == (1200, 130)


async def test_a_counter_reset_is_not_negative_traffic(rig: Rig) -> None:
    rig.source.set(A, 5000, 5000, handshake=NOW)
    await rig.reporter.report_once()
    rig.source.set(A, 300, 20, handshake=NOW)  # wireguard-go restarted (same epoch unseen)
    await rig.reporter.report_once()
    last = rig.cp.reports[-1].peers[0]
    assert (last.rx_bytes, last.tx_bytes) == (300, 20)
    assert rig.counted(A) == (5300, 5020)


async def test_a_new_interface_epoch_starts_counting_from_zero(rig: Rig) -> None:
    rig.source.set(A, 5000, 5000, handshake=NOW)
    await rig.reporter.report_once()
    # Restarted and already past the old reading: without the epoch this would look like +1000.
    rig.source.interface_epoch += 1
    rig.source.set(A, 6000, 6000, handshake=NOW)
    await rig.reporter.report_once()
    assert rig.counted(A) == (11000, 11000)


async def test_bytes_of_a_peer_that_left_are_still_reported(rig: Rig) -> None:
    rig.source.set(A, 10, 10, handshake=NOW)
    rig.cp.available = False
    with pytest.raises(ControlPlaneUnavailable):
        await rig.reporter.report_once()
    del rig.source.peers[A]
    rig.cp.available = True
    await rig.reporter.report_once()
    assert rig.counted(A) == (10, 10)
    assert rig.cp.reports[-1].peers[0].connected is False


async def test_an_unreadable_interface_still_reports(rig: Rig) -> None:
    rig.source.readable = False
    ack = await rig.reporter.report_once()
    assert ack.accepted
    assert rig.cp.reports[-1].peers == ()


async def test_blocked_keys_in_the_answer_reach_the_loop(rig: Rig) -> None:
    rig.cp.blocked = (A,)
    await rig.reporter.report_once()
    assert rig.source.blocked == [[A]]


async def test_a_new_agent_is_a_new_series() -> None:
    cp = FakeControlPlane()
    async with NodeApiClient("http://c", NODE_TOKEN, transport=cp.transport()) as client:
        first = StatusReporter(client, FakeSource())
        second = StatusReporter(client, FakeSource())
        assert first.boot_id != second.boot_id
        assert (await first.report_once()).accepted
        assert (await second.report_once()).accepted  # seq 1 again, but another boot


async def test_nothing_about_endpoints_goes_up(rig: Rig) -> None:
    bodies: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return await rig.cp.handle(request)

    async with NodeApiClient("http://c", NODE_TOKEN, transport=httpx.MockTransport(handler)) as c:
        reporter = StatusReporter(c, rig.source, clock=lambda: NOW)
        rig.source.set(A, 1, 1, handshake=NOW)
        await reporter.report_once()
    assert set(json.loads(bodies[0])["peers"][0]) == {
        "public_key",
        "protocol",
        "connected",
        "rx_bytes",
        "tx_bytes",
    }


@dataclass
class FakeSession:
    public_key: str
    connected: bool
    rx_bytes: int
    tx_bytes: int


class FakeIkev2:
    """Another protocol's sessions, as the IKEv2 service gives them."""

    protocol = "ikev2"

    def __init__(self) -> None:
        self.sessions: list[FakeSession] = []
        self.cuts: list[list[str]] = []

    async def read_sessions(self) -> list[FakeSession]:
        return list(self.sessions)

    async def cut(self, keys: Collection[str]) -> None:
        self.cuts.append(sorted(keys))


async def test_other_protocols_report_beside_wireguard_and_get_their_cuts() -> None:
    cp = FakeControlPlane()
    source, ikev2 = FakeSource(), FakeIkev2()
    async with NodeApiClient("http://c", NODE_TOKEN, transport=cp.transport()) as client:
        reporter = StatusReporter(client, source, clock=lambda: NOW, protocols=[ikev2])
        source.set(A, 100, 200, handshake=NOW)
        ikev2.sessions = [FakeSession(A, True, 1000, 3000)]
        cp.blocked_connections = (BlockedConnection(protocol="ikev2", public_key=A),)
        await reporter.report_once()
        ikev2.sessions = [FakeSession(A, True, 1500, 3100)]
        await reporter.report_once()
        # The session ended: said once as not connected, then no more.
        ikev2.sessions = [FakeSession(A, False, 0, 0)]
        await reporter.report_once()
        ikev2.sessions = []
        await reporter.report_once()
    first, second, third, fourth = cp.reports
    assert [(p.protocol, p.connected) for p in third.peers if p.protocol == "ikev2"] == [
        ("ikev2", False)
    ]
    assert [p for p in fourth.peers if p.protocol == "ikev2"] == []
    assert {(p.protocol, p.public_key, p.rx_bytes, p.tx_bytes) for p in first.peers} == {
        ("wireguard", A, 100, 200),
        ("ikev2", A, 1000, 3000),
    }
    # Deltas per protocol: the IKEv2 counters are never mixed with WireGuard's.
    assert [
        (p.protocol, p.rx_bytes, p.tx_bytes) for p in second.peers if p.protocol == "ikev2"
    ] == [("ikev2", 500, 100)]
    assert ikev2.cuts[:2] == [[A], [A]]


class FakeOpenVpn(FakeIkev2):
    """A protocol whose node refuses connections by itself (OpenVPN's per-server limit)."""

    protocol = "openvpn"

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[ConnectionRefusal] = []

    def refusals(self) -> list[ConnectionRefusal]:
        return list(self.refused)


async def test_refusals_the_node_made_go_up_while_it_holds_them() -> None:
    cp = FakeControlPlane()
    source, openvpn = FakeSource(), FakeOpenVpn()
    async with NodeApiClient("http://c", NODE_TOKEN, transport=cp.transport()) as client:
        reporter = StatusReporter(client, source, clock=lambda: NOW, protocols=[openvpn])
        refusal = ConnectionRefusal(public_key=B, protocol="openvpn", reason="Over the limit.")
        openvpn.refused = [refusal]
        await reporter.report_once()
        await reporter.report_once()
        openvpn.refused = []
        await reporter.report_once()
    first, second, third = cp.reports
    assert first.refused == second.refused == (refusal,)
    assert third.refused == ()
    # A refusal is no connection: nothing is counted or listed for it.
    assert [p for p in first.peers if p.public_key == B] == []


# --- what a status read costs --------------------------------------------------------------------


def _answer(count: int, active: int, step: int) -> bytes:
    """A get of ``count`` peers of which the first ``active`` moved ``step`` bytes and shook
    hands lately; the others last did an hour ago."""
    lines = ["listen_port=51820\n"]
    for i in range(count):
        moved = step if i < active else 0
        handshake = int(NOW) - 10 + moved if i < active else int(NOW) - 3600
        lines.append(
            f"public_key={i + 1:064x}\nendpoint=203.0.113.9:{40_000 + i}\n"
            f"last_handshake_time_sec={handshake}\nlast_handshake_time_nsec=0\n"
            f"tx_bytes={500 + moved}\nrx_bytes={900 + moved}\n"
            f"persistent_keepalive_interval=0\nallowed_ip=10.64.{i >> 8}.{i & 255}/32\n"
        )
    lines.append("errno=0\n\n")
    return "".join(lines).encode()


class MemoSource(FakeSource):
    """Reads a daemon's answer the way the WireGuard driver does, through a ``PeerMemo``."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.step = 0
        self.memo = PeerMemo()

    async def read_peers(self) -> list[WgPeer]:
        self.step += 1
        return list(self.memo.read(_answer(self.count, 5, self.step)).peers)


async def _lines_per_read(count: int) -> tuple[int, int]:
    """Lines run by a steady-state status read of ``count`` peers (5 of them moving), and by
    a plain full parse of the same answer for comparison."""
    cp = FakeControlPlane()
    source = MemoSource(count)
    async with NodeApiClient("http://control.test", NODE_TOKEN, transport=cp.transport()) as c:
        reporter = StatusReporter(c, source, idle_threshold_seconds=180, clock=lambda: NOW)
        await reporter.report_once()
        with LineCounter() as read:
            await reporter.report_once()
    assert len(cp.reports[-1].peers) == 5  # only the active ones go up
    with LineCounter() as full:
        parse_answer(_answer(count, 5, source.step))
    return read.lines, full.lines


async def test_idle_peers_cost_a_status_read_little() -> None:
    read_small, full_small = await _lines_per_read(200)
    read_large, full_large = await _lines_per_read(400)
    per_idle_peer = (read_large - read_small) / 200
    per_parsed_peer = (full_large - full_small) / 200
    # A peer whose lines did not change is hashed and looked up, not parsed: a fraction of
    # what parsing it costs (about a fifth here, and no key conversion at all).
    assert per_idle_peer <= per_parsed_peer / 4, (per_idle_peer, per_parsed_peer)


class SlowTimer:
    """A timer that says each read of the interface took ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.seconds
        return self.now


@pytest.mark.parametrize(
    ("read_seconds", "interval"), [(0.01, 5.0), (0.4, 8.0), (2.0, 10.0)], ids=str
)
async def test_a_slow_read_stretches_the_interval_up_to_twice(
    read_seconds: float, interval: float
) -> None:
    cp = FakeControlPlane()
    async with NodeApiClient("http://control.test", NODE_TOKEN, transport=cp.transport()) as c:
        reporter = StatusReporter(
            c, FakeSource(), interval_seconds=5.0, timer=SlowTimer(read_seconds)
        )
        await reporter.report_once()
    assert reporter.last_read_seconds == pytest.approx(read_seconds)
    assert reporter.current_interval == pytest.approx(interval)
