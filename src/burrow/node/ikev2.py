"""IKEv2 on the node: the desired peers' IKEv2 credentials kept loaded in charon, the
per-server limit decided here, sessions reported, connections cut when the control plane says.

``IkeV2Service.run`` starts charon (``drivers.ikev2.CharonDriver``) and then, every tick
(a quarter second):

- restarts charon if it died, loading every device again from memory (fail-static: the last
  desired state keeps serving while the control plane is away);
- when the desired revision moved, hands charon the devices that now have IKEv2 credentials
  (only the differences reach charon; a device that lost its credential is unloaded and its
  SA terminated at once, so a revocation ends the SA within a tick);
- refuses connections beyond a subscription's per-server limit for IKEv2 (the newest SA is
  terminated, the older ones keep working), and connections the control plane blocked;
- keeps each device's cumulative IKEv2 bytes (``traffic``), which fair use adds to its
  WireGuard bytes, so a device is slowed whichever protocol it moves them over.

Nothing of a client is logged: counts only. Byte counts live in memory until reported.

Imports ``burrow.wire``, ``burrow.node.reconcile`` and the IKEv2 driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from burrow.node.drivers.ikev2 import (
    CharonDriver,
    IkeV2Device,
    IkeV2Error,
    IkeV2Server,
    IkeV2Session,
    over_limit,
)
from burrow.node.drivers.uapi import WgPeer
from burrow.node.reconcile import DesiredPeers
from burrow.wire import ConnectionRefusal, NetworkSpec, PeerSpec, ikev2_nt_hash

log = logging.getLogger(__name__)

IKEV2 = "ikev2"
# How long a device refused over its per-server limit is listed in the reports, for its panel.
REFUSAL_SECONDS = 60.0
# What the node says of such a device; the control plane shows its owner its own words.
OVER_LIMIT = "over the subscription's IKEv2 connections on this server"


def devices_from(peers: Iterable[PeerSpec]) -> list[IkeV2Device]:
    """The peers with an IKEv2 credential, as charon's devices (the NT hash, never a secret)."""
    devices = []
    unusable = 0
    for peer in peers:
        credential = peer.credential(IKEV2)
        if credential is None:
            continue
        digest = ikev2_nt_hash(credential.verifier)
        if digest is None:
            unusable += 1
            continue
        try:
            devices.append(
                IkeV2Device(
                    key=peer.public_key,
                    username=credential.username,
                    nt_hash=digest,
                    addresses=peer.allowed_ips,
                    subscription=peer.subscription,
                    per_server=peer.per_server_limit(IKEV2),
                )
            )
        except ValueError:
            unusable += 1
    if unusable:
        log.warning("ikev2: %d credentials are not usable NT hashes; skipped", unusable)
    return devices


@dataclass(frozen=True, slots=True)
class SessionCounters:
    """One device's IKEv2 traffic so far, for the status reporter."""

    public_key: str
    connected: bool
    rx_bytes: int
    tx_bytes: int


class IkeV2Service:
    """Keeps charon serving the desired devices, within their limits."""

    protocol = IKEV2

    def __init__(
        self,
        driver: CharonDriver,
        server: IkeV2Server,
        desired: Callable[[], DesiredPeers | None],
        *,
        network: Callable[[], NetworkSpec | None] = lambda: None,
        tick_seconds: float = 0.25,
    ) -> None:
        self.driver = driver
        self.server = server
        self._desired = desired
        self._network = network
        self._tick = tick_seconds
        self._revision: int | None = None
        self._blocked: frozenset[str] = frozenset()
        self._was_connected: frozenset[str] = frozenset()
        self._lock = asyncio.Lock()
        self.started = asyncio.Event()
        self.refused = 0
        # Fair use's counters, in RAM only: each live IKE SA's last reading (device key, rx,
        # tx) by its id, and what ended SAs (or counters that started again) moved, by device.
        self._sa_bytes: dict[int, tuple[str, int, int]] = {}
        self._ended_bytes: dict[str, tuple[int, int]] = {}
        # Devices refused over the per-server limit lately: device key -> until (monotonic).
        self._refused: dict[str, float] = {}

    async def run(self) -> None:
        """Serve until cancelled; charon stops with it."""
        try:
            await self.driver.start(self.server)
            self.started.set()
            while True:
                try:
                    await self.step()
                except IkeV2Error as exc:
                    log.warning("ikev2: %s", exc)
                await asyncio.sleep(self._tick)
        finally:
            await self.driver.stop()

    async def step(self) -> None:
        async with self._lock:
            if await self.driver.ensure_running():
                log.warning("ikev2: charon restarted with %d devices", len(self.driver.applied))
            network = self._network()
            if network is not None:
                # Devices ask the node's own resolver, on its gateway addresses.
                await self.driver.set_dns((network.gateway_ipv4, network.gateway_ipv6))
            desired = self._desired()
            if desired is not None and desired.revision != self._revision:
                loaded, unloaded = await self.driver.apply(devices_from(desired.peers.values()))
                self._revision = desired.revision
                if loaded or unloaded:
                    log.info(
                        "ikev2: %d devices loaded, %d unloaded (revision %d)",
                        loaded,
                        unloaded,
                        desired.revision,
                    )
            await self._enforce()

    def traffic(self) -> list[WgPeer]:
        """Each device's cumulative IKEv2 bytes on this node, for fair use (never lower)."""
        totals = dict(self._ended_bytes)
        for key, rx, tx in self._sa_bytes.values():
            old_rx, old_tx = totals.get(key, (0, 0))
            totals[key] = (old_rx + rx, old_tx + tx)
        return [WgPeer(public_key=k, rx_bytes=rx, tx_bytes=tx) for k, (rx, tx) in totals.items()]

    def _book(self, key: str, rx: int, tx: int) -> None:
        old_rx, old_tx = self._ended_bytes.get(key, (0, 0))
        self._ended_bytes[key] = (old_rx + rx, old_tx + tx)

    def _count(self, sessions: Iterable[IkeV2Session]) -> None:
        """Fold a reading of the SAs into the cumulative counters."""
        applied = self.driver.applied
        live: dict[int, tuple[str, int, int]] = {}
        for session in sessions:
            device = applied.get(session.username)
            if device is None:
                continue
            last = self._sa_bytes.get(session.ike_id)
            if last is not None and (
                last[0] != device.key or session.rx_bytes < last[1] or session.tx_bytes < last[2]
            ):
                # Its child SA was rekeyed (counters from zero) or the id is another's now.
                self._book(*last)
            live[session.ike_id] = (device.key, session.rx_bytes, session.tx_bytes)
        for ike_id, last in self._sa_bytes.items():
            if ike_id not in live:
                self._book(*last)  # the SA ended: what it moved stays counted
        self._sa_bytes = live

    async def _enforce(self) -> None:
        read = await self.driver.sessions()
        self._count(read)
        sessions = [s for s in read if s.established]
        if not sessions:
            return
        applied = self.driver.applied
        cut: list[IkeV2Session] = list(over_limit(sessions, applied))
        self._note_refused({s.ike_id for s in cut}, sessions)
        if self._blocked:
            cut += [
                s
                for s in sessions
                if s.username in applied and applied[s.username].key in self._blocked
            ]
        for session in {s.ike_id: s for s in cut}.values():
            await self.driver.terminate_sa(session.ike_id)
            self.refused += 1
        if cut:
            log.info("ikev2: %d connections refused (limits)", len(cut))

    async def read_sessions(self) -> list[SessionCounters]:
        """Each device's established SAs, bytes summed (never a client's address), oldest
        connection first.

        A device whose SA ended since the last read is listed once as not connected, so the
        control plane frees its lease now rather than when it would lapse. An SA this node
        refuses over its per-server limit does not make its device connected: the report may
        be read before the tick that ends it, and a control plane told of two connections of
        one subscription at once would keep whichever the report lists first, so the node and
        the control plane could each end a different one and leave the customer none. The
        order of the list is the order of the connections (the lower ``ike_id``, the older),
        which is the order the control plane admits new connections in.
        """
        applied = self.driver.applied
        read = await self.driver.sessions()
        refusing = {s.ike_id for s in over_limit([s for s in read if s.established], applied)}
        self._note_refused(refusing, read)
        totals: dict[str, SessionCounters] = {}
        for session in sorted(read, key=lambda s: s.ike_id):
            device = applied.get(session.username)
            if device is None:
                continue
            old = totals.get(device.key)
            up = session.established and session.ike_id not in refusing
            totals[device.key] = SessionCounters(
                public_key=device.key,
                connected=up or (old is not None and old.connected),
                rx_bytes=session.rx_bytes + (old.rx_bytes if old else 0),
                tx_bytes=session.tx_bytes + (old.tx_bytes if old else 0),
            )
        connected = frozenset(key for key, c in totals.items() if c.connected)
        for key in self._was_connected - connected:
            if key not in totals:
                totals[key] = SessionCounters(key, connected=False, rx_bytes=0, tx_bytes=0)
        self._was_connected = connected
        return list(totals.values())

    def _note_refused(self, ike_ids: Collection[int], sessions: Iterable[IkeV2Session]) -> None:
        """Remember the devices of these SAs as refused; a device up within its limit is not."""
        applied = self.driver.applied
        mine = [(s, applied[s.username]) for s in sessions if s.username in applied]
        up = {d.key for s, d in mine if s.established and s.ike_id not in ike_ids}
        until = time.monotonic() + REFUSAL_SECONDS
        for session, device in mine:
            if session.ike_id in ike_ids and device.key not in up:
                self._refused[device.key] = until
        for key in up:
            self._refused.pop(key, None)

    def refusals(self) -> list[ConnectionRefusal]:
        """The devices this node refused over their per-server limit lately (the control plane
        shows their owners why); the lapsed ones are forgotten here."""
        now = time.monotonic()
        for key in [k for k, until in self._refused.items() if until <= now]:
            del self._refused[key]
        return [
            ConnectionRefusal(public_key=key, protocol=IKEV2, reason=OVER_LIMIT)
            for key in sorted(self._refused)
        ]

    async def cut(self, keys: Collection[str]) -> None:
        """Keep exactly these devices off (the control plane's limits), cutting them now."""
        blocked = frozenset(keys)
        if blocked == self._blocked:
            return
        self._blocked = blocked
        if blocked:
            async with self._lock:
                await self._enforce()
