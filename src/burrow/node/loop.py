"""The sync loop: keeps the data plane equal to the control plane's desired state.

At start it reads the full state, sets up the network (forwarding, firewall), starts the
WireGuard interface, gives it its key and port and reconciles the peers against what the
socket holds. Then it long-polls for deltas and applies each one as one set transaction
through ``reconcile`` (never ``replace_peers``). A revision gap or a full state in answer
means a full resync.

Fail-static: when the control plane cannot be reached, the loop keeps serving the last
desired state it holds and retries with capped exponential backoff and jitter. It never
serves a peer the control plane did not ask for: before the first full state it serves
nothing, and every full push removes peers that are on the interface but not desired.

A supervisor task checks wireguard-go every second; if it died it is restarted and
everything (firewall, key, port, peers) is pushed again from memory, without asking the
control plane.

Fair use rides on the status reads: each time the reporter reads the interface, the bytes
every peer moved go into a window kept in RAM (``fairuse.TrafficMeter``), ``fairuse.decide``
names the peers to shape, and the ``Shaper`` (tc) is brought in line, under the same lock as
every other data-plane change. A fresh interface lost its qdiscs: they are put back at once.
No peer's key, address or traffic is logged; only how many are shaped.

The seams are Protocols (``WireGuardDriver``, ``NetworkSetup``, ``Shaper``) and the node API
client takes an httpx transport, so tests run the loop against fakes. Logs carry counts and
revisions, never a peer's key or endpoint.

Imports ``burrow.wire``, ``burrow.node.reconcile``, ``burrow.node.fairuse``, the drivers'
Protocol and the client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from burrow.node.client import (
    ControlPlaneUnavailable,
    NodeApiClient,
    NodeApiRefused,
    NodeTokenRejected,
)
from burrow.node.drivers.uapi import WgPeer
from burrow.node.drivers.wireguard import WireGuardDriver, push_delta, push_full
from burrow.node.fairuse import FairUseSettings, TrafficMeter, decide, measure
from burrow.node.reconcile import DeltaRejected, DesiredPeers
from burrow.wire import DeltaState, DesiredState, FullState, NetworkSpec

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class NetworkSetup(Protocol):
    """Everything of the node's network besides the WireGuard peers."""

    async def prepare(self, network: NetworkSpec, *, reload: bool = False) -> None:
        """Make forwarding, the firewall and the interface's addresses and MTU match ``network``.

        Runs before any peer is added, so no peer is ever served without its firewall. Cheap
        when nothing changed, unless ``reload`` (after wireguard-go restarted) asks to load
        everything again.
        """
        ...

    async def set_blocked(self, addresses: Collection[str]) -> None:
        """Drop forwarded traffic of exactly these tunnel addresses (the control plane's list)."""
        ...


class Shaper(Protocol):
    """Slows chosen peers down to a rate, both ways (``drivers.tc.TcShaper``)."""

    @property
    def shaped(self) -> frozenset[str]: ...

    async def apply(
        self, peers: Mapping[str, Sequence[str]], rate_mbit: int, *, force: bool = False
    ) -> bool:
        """Shape exactly ``peers`` (key -> tunnel addresses); False when nothing changed."""
        ...

    async def clear(self) -> None: ...


class Backoff:
    """Capped exponential backoff with jitter: each wait is 50-100 % of min(cap, first * 2^n)."""

    def __init__(self, first: float, cap: float, rng: random.Random | None = None) -> None:
        self.first = first
        self.cap = max(cap, first)
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.first * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        return ceiling * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class SyncLoop:
    """One node's desired state, pushed to its data plane and kept there."""

    def __init__(
        self,
        client: NodeApiClient,
        driver: WireGuardDriver,
        network_setup: NetworkSetup,
        *,
        private_key: str,
        long_poll_seconds: float = 25.0,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        supervise_interval_seconds: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        shaper: Shaper | None = None,
        uplink_mbit: int | None = None,
        extra_traffic: Callable[[], Iterable[WgPeer]] | None = None,
    ) -> None:
        self._client = client
        self._driver = driver
        self._setup = network_setup
        self._private_key = private_key
        self._long_poll = long_poll_seconds
        self._backoff = Backoff(backoff_initial_seconds, backoff_max_seconds, rng)
        self._push_backoff = Backoff(backoff_initial_seconds, backoff_max_seconds, rng)
        self._push_retry_at = 0.0
        self._monotonic = time.monotonic
        self._supervise_interval = supervise_interval_seconds
        self._sleep = sleep
        # One data-plane change at a time: the poll, the supervisor and the blocks share it.
        self._lock = asyncio.Lock()
        self.desired: DesiredPeers | None = None
        self.network: NetworkSpec | None = None
        self.applied_revision = 0
        # Bumped whenever a fresh (empty) interface came up: counters restarted from zero.
        self.interface_epoch = 0
        # Bumped around every change, so a status read that overlapped one is not trusted.
        self._generation = 0
        self._configured_port: int | None = None
        self._need_fetch = True
        self._need_push = False
        self._blocked_keys: frozenset[str] | None = None
        self.synced = asyncio.Event()
        # Fair use: per-peer traffic of the window, in this process's memory only.
        self._shaper = shaper
        self._uplink_mbit = uplink_mbit
        # Other protocols' cumulative counters per device (OpenVPN): fair use counts them too.
        self._extra_traffic = extra_traffic
        self._meter = TrafficMeter()
        self._meter_epoch = -1
        self._warned_no_uplink = False

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sync and supervise until cancelled; raises NodeTokenRejected when the node is out."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.sync_forever(), name="burrow-node-sync")
            group.create_task(self.supervise_forever(), name="burrow-node-supervise")

    async def sync_forever(self) -> None:
        while True:
            try:
                await self.step()
                self._backoff.reset()
            except NodeTokenRejected:
                raise
            except ControlPlaneUnavailable as exc:
                delay = self._backoff.next_delay()
                log.warning(
                    "control plane unreachable (%s); serving revision %s, retrying in %.1f s",
                    exc,
                    self.applied_revision,
                    delay,
                )
                await self._sleep(delay)
            except NodeApiRefused as exc:
                delay = self._backoff.next_delay()
                log.error("%s; retrying in %.1f s", exc, delay)
                await self._sleep(delay)
            except Exception as exc:
                # The data plane failed (wireguard-go, ip, nft). The desired state is kept;
                # push it all again once the backoff has passed.
                self._need_push = True
                delay = self._backoff.next_delay()
                log.error(
                    "could not apply revision %s (%s: %s); retrying in %.1f s",
                    self.desired.revision if self.desired else "-",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await self._sleep(delay)

    async def step(self) -> None:
        """One round: a full sync when needed, else one long poll and its answer."""
        if self._need_fetch or self._need_push or self.desired is None:
            # After a failed change, start from a fresh full state: it may also be the cure
            # (a state that no longer asks for what failed).
            await self.full_sync()
            return
        update = await self._client.changes(self.desired.revision, self._long_poll)
        await self.apply_update(update)

    async def supervise_forever(self) -> None:
        while True:
            await self._sleep(self._supervise_interval)
            try:
                await self.supervise_once()
            except Exception as exc:
                self._need_push = True
                log.error("supervising wireguard-go failed (%s: %s)", type(exc).__name__, exc)

    async def supervise_once(self) -> None:
        """Restart a dead wireguard-go and push everything again; fix an untrusted interface.

        A push that keeps failing (say, more peers than wireguard-go takes) is retried with
        backoff, not every tick; a restarted wireguard-go is always pushed at once.
        """
        if self.desired is None or self.network is None:
            return  # nothing to serve yet
        async with self._lock:
            try:
                fresh = await self._driver.ensure_running()
                if not (fresh or self._driver.needs_resync or self._need_push):
                    return
                if not fresh and self._monotonic() < self._push_retry_at:
                    return
                if fresh:
                    log.warning("wireguard-go was restarted; pushing the desired state again")
                await self._push_everything(fresh=fresh)
            except Exception:
                self._need_push = True
                self._push_retry_at = self._monotonic() + self._push_backoff.next_delay()
                raise
            self._push_backoff.reset()
            self._push_retry_at = 0.0

    # --- applying -----------------------------------------------------------------------------

    async def full_sync(self) -> None:
        """Fetch the full state and make the data plane match it exactly."""
        state = await self._client.full_state()
        await self._take_full(state)

    async def _take_full(self, state: DesiredState) -> None:
        async with self._lock:
            if self.desired is None:
                self.desired = DesiredPeers.from_state(state)
            else:
                self.desired.replace(state)
            self.network = state.network
            self._need_fetch = False
            await self._push_everything(reload=True)
        log.info("revision %s applied in full: %d peers", state.revision, len(state.peers))

    async def apply_update(self, update: FullState | DeltaState) -> None:
        if isinstance(update, FullState):
            await self._take_full(update.state)
            return
        desired = self.desired
        assert desired is not None
        async with self._lock:
            self._generation += 1
            try:
                if update.network is not None and update.network != self.network:
                    self.network = update.network
                    await self._apply_network()
                if update.revision == desired.revision and not (update.upserts or update.removals):
                    return  # the long poll timed out: nothing changed
                try:
                    actions = await push_delta(self._driver, desired, update)
                except DeltaRejected as exc:
                    log.info("%s; fetching the full state", exc)
                    self._need_fetch = True
                    return
                except Exception:
                    # ``desired`` moved on; the interface may not have. Push it all now.
                    self._need_push = True
                    raise
                self.applied_revision = desired.revision
                log.info("revision %s applied: %d peer changes", desired.revision, len(actions))
            finally:
                self._generation += 1

    async def _apply_network(self) -> None:
        assert self.network is not None
        await self._setup.prepare(self.network)
        fresh = await self._driver.ensure_running()
        if fresh:
            # The address or MTU change restarted the interface: everything goes again.
            await self._push_everything(fresh=True)
        elif self._configured_port != self.network.listen_port:
            await self._configure_interface()

    async def _configure_interface(self) -> None:
        assert self.network is not None
        await self._driver.configure_interface(self._private_key, self.network.listen_port)
        self._configured_port = self.network.listen_port

    async def _push_everything(self, *, fresh: bool = False, reload: bool = False) -> None:
        """Firewall, interface, key, port and every peer, from what is held in memory.

        Must hold the lock. Peers on the interface that are not desired are removed.
        """
        assert self.desired is not None
        assert self.network is not None
        self._generation += 1
        try:
            await self._setup.prepare(self.network, reload=reload or fresh)
            fresh = await self._driver.ensure_running() or fresh
            if fresh:
                self.interface_epoch += 1
                self._configured_port = None
            if self._configured_port != self.network.listen_port:
                await self._configure_interface()
            actions = await push_full(self._driver, self.desired.peers)
            self._need_push = False
            self.applied_revision = self.desired.revision
            if self._blocked_keys:
                await self._setup.set_blocked(self._blocked_addresses(self._blocked_keys))
        finally:
            self._generation += 1
        if actions:
            log.info("interface reconciled: %d peer changes", len(actions))
        self.synced.set()

    # --- what the status reporter uses --------------------------------------------------------

    async def read_peers(self) -> list[WgPeer]:
        """Read every peer off the interface; asks for a full push if they differ from desired.

        A read that overlapped a change proves nothing and is not compared.
        """
        before = self._generation
        busy = self._lock.locked()
        peers = await self._driver.get_state()
        if not busy and not self._lock.locked() and before == self._generation:
            self._check_observed(peers)
        if self._shaper is not None:
            try:
                await self._fair_use(self._shaper, peers)
            except Exception as exc:
                # The shaper removed what it had set up: nobody is shaped until the next read.
                log.error("fair-use shaping failed (%s: %s)", type(exc).__name__, exc)
        return peers

    def fair_use_settings(self) -> FairUseSettings | None:
        """The fair-use settings in force; None when the policy or a missing uplink says none."""
        spec = self.network.fair_use if self.network is not None else None
        if spec is None:
            return None
        uplink = spec.uplink_mbit or self._uplink_mbit
        if uplink is None:
            if not self._warned_no_uplink:
                log.warning(
                    "the policy asks for fair-use shaping but this node's uplink bandwidth is "
                    "unknown; set it on the node (uplink_mbit) or BURROW_NODE_UPLINK_MBIT"
                )
                self._warned_no_uplink = True
            return None
        return FairUseSettings.from_spec(spec, uplink)

    async def _fair_use(self, shaper: Shaper, peers: list[WgPeer]) -> None:
        """Book this read's traffic, decide who is shaped, and make tc say so."""
        settings = self.fair_use_settings()
        if settings is None or self.desired is None:
            self._meter.reset()
            if shaper.shaped:
                async with self._lock:
                    await shaper.clear()
                log.info("fair use: shaping lifted (switched off)")
            return
        # A new interface has none of our qdiscs: the shaping goes on again at once. Its
        # counters start at zero, which the meter takes as new traffic, so the window is kept.
        fresh = self._meter_epoch != self.interface_epoch
        self._meter_epoch = self.interface_epoch
        self._meter.observe(
            _with_extra(peers, self._extra_traffic), self._monotonic(), settings.window_seconds
        )
        wanted = decide(self._meter.samples, settings, shaper.shaped)
        desired = self.desired.peers
        addresses = {key: desired[key].allowed_ips for key in wanted if key in desired}
        async with self._lock:
            changed = await shaper.apply(
                addresses, settings.shaped_rate_mbit, force=fresh and bool(addresses)
            )
        if changed:
            load = measure(self._meter.samples, settings.window_seconds, settings.uplink_mbit)
            log.info(
                "fair use: %d peers shaped to %d Mbit/s (node at %.0f %% of %d Mbit/s)",
                len(addresses),
                settings.shaped_rate_mbit,
                load.utilisation_percent,
                settings.uplink_mbit,
            )

    def _check_observed(self, peers: Iterable[WgPeer]) -> None:
        desired = self.desired
        if desired is None or self._need_push:
            return
        wanted = desired.peers
        seen = 0
        for peer in peers:
            seen += 1
            if peer.public_key not in wanted:
                log.warning("a peer that is not desired is on the interface; reconciling")
                self._need_push = True
                return
        if seen != len(wanted):
            log.warning("desired peers are missing from the interface; reconciling")
            self._need_push = True

    async def set_blocked_keys(self, keys: Collection[str]) -> None:
        """Block the tunnel addresses of these peers (the control plane's answer to a report)."""
        wanted = frozenset(keys)
        if wanted == self._blocked_keys:
            return
        async with self._lock:
            if self.network is not None:
                await self._setup.set_blocked(self._blocked_addresses(wanted))
            # Recorded once applied: had the firewall refused, the next answer naming the same
            # keys would otherwise be skipped as already done, and the block never made.
            self._blocked_keys = wanted

    def _blocked_addresses(self, keys: Iterable[str]) -> list[str]:
        if self.desired is None:
            return []
        peers = self.desired.peers
        return [ip for key in keys if key in peers for ip in peers[key].allowed_ips]


def _with_extra(peers: list[WgPeer], extra: Callable[[], Iterable[WgPeer]] | None) -> list[WgPeer]:
    """WireGuard's counters with other protocols' counters of the same device added."""
    if extra is None:
        return peers
    others = {peer.public_key: peer for peer in extra()}
    if not others:
        return peers
    merged = []
    for peer in peers:
        other = others.pop(peer.public_key, None)
        if other is not None:
            peer = dataclasses.replace(
                peer,
                rx_bytes=peer.rx_bytes + other.rx_bytes,
                tx_bytes=peer.tx_bytes + other.tx_bytes,
            )
        merged.append(peer)
    return merged
