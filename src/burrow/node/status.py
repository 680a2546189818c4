"""Status up: which peers are connected and how many bytes they moved, every few seconds.

Every ``interval`` the reporter reads handshake times and byte counters off the interface,
marks a peer connected while its last handshake is younger than the idle threshold, and sends
the byte deltas since the last report in a ``NodeReport`` with this agent's ``boot_id`` and a
sequence number.

No loss and no double count:

- Counters that went down (wireguard-go restarted, a peer was removed and added again) are
  counted from zero, never as negative traffic.
- A report that got no answer stays *in flight* under its sequence number. The next round
  sends that same number again with the newer deltas merged in. The control plane ignores a
  number it has already seen (``accepted: false``); then it did count the first send, so the
  in-flight part is dropped and the newer deltas go at once under the next number. A report
  that never arrived is simply accepted with everything in it.

Per-peer byte counts live only in this process's memory; a peer's endpoint is never read
(the UAPI parser drops it). Only peers that are connected or moved bytes are listed.

Imports ``burrow.wire``, the client and the UAPI peer type.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from burrow.node.client import NodeApiClient, NodeApiError, NodeTokenRejected
from burrow.node.drivers.uapi import WgPeer
from burrow.wire import WIREGUARD, ConnectionRefusal, NodeReport, PeerStatus, ReportAck

log = logging.getLogger(__name__)

# The status read may take at most this share of the time between reads: a node whose read
# costs more (tens of thousands of peers on a busy machine) reads less often, up to
# ``MAX_STRETCH`` times the configured interval (a lease lives about three intervals).
READ_TIME_SHARE = 0.05
MAX_STRETCH = 2.0


class PeerSource(Protocol):
    """What the reporter needs from the sync loop."""

    @property
    def applied_revision(self) -> int: ...

    @property
    def interface_epoch(self) -> int:
        """Changes whenever the interface restarted empty (its counters restarted at zero)."""
        ...

    async def read_peers(self) -> list[WgPeer]: ...

    async def set_blocked_keys(self, keys: Collection[str]) -> None: ...


class Counters(Protocol):
    """Cumulative byte counters of one device (a WireGuard peer, or another protocol's session)."""

    @property
    def public_key(self) -> str: ...

    @property
    def rx_bytes(self) -> int: ...

    @property
    def tx_bytes(self) -> int: ...


class SessionCounters(Counters, Protocol):
    @property
    def connected(self) -> bool: ...


class ProtocolSource(Protocol):
    """Another protocol's connections on this node (IKEv2, OpenVPN), reported beside WireGuard.

    ``read_sessions`` gives each device's cumulative counters; ``cut`` receives the devices the
    control plane's answer lists for this protocol (``blocked_connections``).
    """

    @property
    def protocol(self) -> str: ...

    async def read_sessions(self) -> Sequence[SessionCounters]: ...

    async def cut(self, keys: Collection[str]) -> None: ...


@runtime_checkable
class RefusalSource(Protocol):
    """A protocol whose node refuses some connections by itself (OpenVPN over a per-server
    limit): the refusals it holds go up in every report, so the panel can say why."""

    def refusals(self) -> Sequence[ConnectionRefusal]: ...


@dataclass
class Traffic:
    rx: int = 0
    tx: int = 0

    def add(self, other: Traffic) -> None:
        self.rx += other.rx
        self.tx += other.tx

    def __bool__(self) -> bool:
        return bool(self.rx or self.tx)


class ByteAccounting:
    """Turns cumulative per-peer counters into deltas that are never negative.

    It keeps the peers of the previous read. A status read that found a peer's lines
    unchanged hands back the very same ``WgPeer`` (``uapi.PeerMemo``), which moved nothing and
    costs one identity test here.
    """

    def __init__(self) -> None:
        self._last: dict[str, Counters] = {}

    def reset(self) -> None:
        """The interface restarted: its next counters start from zero."""
        self._last = {}

    def deltas(self, peers: Iterable[Counters]) -> dict[str, Traffic]:
        """Bytes each peer moved since the previous call (a new peer: since zero)."""
        last = self._last
        current = {peer.public_key: peer for peer in peers}
        out: dict[str, Traffic] = {}
        for key, peer in current.items():
            before = last.get(key)
            if before is peer:
                continue
            rx, tx = peer.rx_bytes, peer.tx_bytes
            prev_rx, prev_tx = (0, 0) if before is None else (before.rx_bytes, before.tx_bytes)
            # A counter below the last reading restarted from zero: all of it is new.
            delta = Traffic(
                rx - prev_rx if rx >= prev_rx else rx, tx - prev_tx if tx >= prev_tx else tx
            )
            if delta:
                out[key] = delta
        self._last = current
        return out


def _tagged(protocol: str, key: str) -> str:
    # Keys of other protocols' sessions carry their protocol; base64 has no space.
    return f"{protocol} {key}"


def _untagged(key: str) -> tuple[str, str]:
    protocol, sep, rest = key.partition(" ")
    return (protocol, rest) if sep else (WIREGUARD, key)


def _merge(into: dict[str, Traffic], more: dict[str, Traffic]) -> None:
    for key, traffic in more.items():
        into.setdefault(key, Traffic()).add(traffic)


class StatusReporter:
    def __init__(
        self,
        client: NodeApiClient,
        source: PeerSource,
        *,
        interval_seconds: float = 5.0,
        idle_threshold_seconds: float = 180.0,
        clock: Callable[[], float] = time.time,
        boot_id: str | None = None,
        timer: Callable[[], float] = time.perf_counter,
        protocols: Sequence[ProtocolSource] = (),
    ) -> None:
        self._client = client
        self._source = source
        self._protocols = tuple(protocols)
        self._protocol_accounting = {p.protocol: ByteAccounting() for p in self._protocols}
        # Other protocols' sessions that ended since the last delivered report.
        self._ended: set[str] = set()
        self.interval = interval_seconds
        self.idle_threshold = idle_threshold_seconds
        self._clock = clock
        self._timer = timer
        # How long the latest read of the interface took, and the wait before the next one.
        self.last_read_seconds = 0.0
        self.current_interval = interval_seconds
        self.boot_id = boot_id or secrets.token_hex(16)
        self.next_seq = 1
        self._accounting = ByteAccounting()
        self._epoch = source.interface_epoch
        # Sent (or tried) without an answer: its seq and contents.
        self._inflight_seq: int | None = None
        self._inflight: dict[str, Traffic] = {}
        # Read since the in-flight report was built.
        self._pending: dict[str, Traffic] = {}
        self.last_ack: ReportAck | None = None

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.current_interval)
            try:
                await self.report_once()
            except NodeTokenRejected:
                raise
            except NodeApiError as exc:
                log.warning("status report not delivered (%s); it goes with the next one", exc)
            except Exception as exc:
                log.error("status report failed (%s: %s)", type(exc).__name__, exc)

    async def _read(self) -> dict[str, bool]:
        """Read the interface; returns each peer's connected state and books its bytes."""
        epoch = self._source.interface_epoch
        if epoch != self._epoch:
            self._epoch = epoch
            self._accounting.reset()
        started = self._timer()
        try:
            peers = await self._source.read_peers()
        except Exception as exc:
            # No interface right now (not started yet, restarting): report what is pending.
            log.info("could not read the interface for status (%s)", type(exc).__name__)
            return {}
        if self._source.interface_epoch != epoch:
            # Restarted while we read: these counters belong to the new interface.
            self._epoch = self._source.interface_epoch
            self._accounting.reset()
        _merge(self._pending, self._accounting.deltas(peers))
        self._adapt(self._timer() - started)
        # Connected: a handshake (sec or nsec set) younger than the idle threshold.
        cutoff = self._clock() - self.idle_threshold
        connected = {
            peer.public_key: (peer.last_handshake_sec or peer.last_handshake_nsec) != 0
            and peer.last_handshake_sec + peer.last_handshake_nsec / 1e9 > cutoff
            for peer in peers
        }
        connected.update(await self._read_protocols())
        return connected

    def _adapt(self, read_seconds: float) -> None:
        """Stretch the interval so that reading stays a small share of it."""
        self.last_read_seconds = read_seconds
        wanted = read_seconds / READ_TIME_SHARE
        self.current_interval = min(self.interval * MAX_STRETCH, max(self.interval, wanted))

    async def _read_protocols(self) -> dict[str, bool]:
        """Other protocols' sessions, booked under ``protocol/key`` so they never mix."""
        connected: dict[str, bool] = {}
        for source in self._protocols:
            try:
                sessions = await source.read_sessions()
            except Exception as exc:
                log.info("could not read %s sessions (%s)", source.protocol, type(exc).__name__)
                continue
            accounting = self._protocol_accounting[source.protocol]
            deltas = accounting.deltas(sessions)
            _merge(self._pending, {_tagged(source.protocol, k): t for k, t in deltas.items()})
            for session in sessions:
                tag = _tagged(source.protocol, session.public_key)
                if session.connected:
                    connected[tag] = True
                else:
                    # Ended since the last read: said once, so its lease ends now.
                    self._ended.add(tag)
        return connected

    def _build(
        self, seq: int, traffic: dict[str, Traffic], connected: dict[str, bool]
    ) -> NodeReport:
        keys = [key for key, up in connected.items() if up]
        keys += [key for key in traffic if not connected.get(key, False)]
        listed = set(keys)
        keys += [key for key in self._ended if key not in listed and not connected.get(key)]
        peers = tuple(self._status(key, traffic, connected) for key in keys)
        return NodeReport(
            boot_id=self.boot_id,
            seq=seq,
            revision=self._source.applied_revision,
            peers=peers,
            refused=self._refusals(),
        )

    def _refusals(self) -> tuple[ConnectionRefusal, ...]:
        refused: list[ConnectionRefusal] = []
        for source in self._protocols:
            if isinstance(source, RefusalSource):
                try:
                    refused += source.refusals()
                except Exception as exc:
                    log.info("could not read %s refusals (%s)", source.protocol, exc)
        return tuple(refused)

    @staticmethod
    def _status(key: str, traffic: dict[str, Traffic], connected: dict[str, bool]) -> PeerStatus:
        protocol, public_key = _untagged(key)
        counts = traffic.get(key, Traffic())
        return PeerStatus(
            public_key=public_key,
            protocol=protocol,
            connected=connected.get(key, False),
            rx_bytes=counts.rx,
            tx_bytes=counts.tx,
        )

    async def report_once(self) -> ReportAck:
        """Read, send, and account for the answer. Raises NodeApiError when not delivered."""
        connected = await self._read()
        if self._inflight_seq is None:
            self._inflight_seq = self.next_seq
            self.next_seq += 1
            self._inflight, self._pending = self._pending, {}
            ack = await self._send(self._inflight_seq, self._inflight, connected)
        else:
            # Retry under the same number, with what was read since merged in.
            merged = {key: Traffic(t.rx, t.tx) for key, t in self._inflight.items()}
            _merge(merged, self._pending)
            ack = await self._send(self._inflight_seq, merged, connected)
            if ack.accepted:
                self._pending = {}
            else:
                # The first send did arrive and was counted; the newer deltas were not.
                self._inflight_seq = self.next_seq
                self.next_seq += 1
                self._inflight, self._pending = self._pending, {}
                ack = await self._send(self._inflight_seq, self._inflight, connected)
        self._inflight_seq = None
        self._inflight = {}
        self._ended.clear()
        self.last_ack = ack
        await self._source.set_blocked_keys(ack.blocked)
        for source in self._protocols:
            keys = [c.public_key for c in ack.blocked_connections if c.protocol == source.protocol]
            try:
                await source.cut(keys)
            except Exception as exc:
                log.warning("could not cut %s connections (%s)", source.protocol, exc)
        return ack

    async def _send(
        self, seq: int, traffic: dict[str, Traffic], connected: dict[str, bool]
    ) -> ReportAck:
        return await self._client.report(self._build(seq, traffic, connected))
