"""More devices than one wireguard-go interface takes: several interfaces as one driver.

wireguard-go holds at most 65,536 peers per interface (``MAX_PEERS``). ``InterfaceSet`` is a
``WireGuardDriver`` over as many ``WireGuardGoDriver`` as the desired peers need: the device
at tunnel-pool index i is served by interface ``i // peers_per_interface``
(``NetworkSpec.interface_of``), which listens on the node's port plus its number, with the
node's one private key. The customers' configurations name that port (the control plane
derives it from the same address), so nothing about the split is stored anywhere.

Interface 0 carries the gateway addresses (with the pool's prefix, so the whole pool routes
into it); interface n > 0 gets no address, only a route for its slice of the pool
(``NetworkSpec.interface_slice``), which is more specific and wins. An interface is started
the first time a peer of its slice is applied and stopped once its last peer is removed;
interface 0 always runs. The firewall covers every interface (``on_change``, before a new
one gets a peer); fair-use shaping (tc) is set up on interface 0 only, so far.

Imports the WireGuard driver, ``reconcile`` and ``burrow.wire``.
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from burrow.node.drivers.uapi import WgPeer
from burrow.node.drivers.wireguard import WireGuardGoDriver
from burrow.node.reconcile import Action, RemovePeer
from burrow.wire import NetworkSpec

log = logging.getLogger(__name__)

MakeDriver = Callable[[str, Sequence[str]], WireGuardGoDriver]
# Told the interfaces' names whenever one starts or stops: the firewall must cover an
# interface before any peer is on it.
InterfacesChanged = Callable[[tuple[str, ...]], Awaitable[None]]


def interface_name(base: str, number: int) -> str:
    """Interface ``number``'s name: the base name for 0, else ``base-n`` within 15 characters."""
    if number == 0:
        return base
    suffix = f"-{number}"
    return base[: 15 - len(suffix)] + suffix


class InterfaceSet:
    """The node's WireGuard interfaces, driven as one (see the module docstring)."""

    def __init__(
        self,
        interface: str,
        *,
        netns: str | None = None,
        wireguard_go: str = "wireguard-go",
        make: MakeDriver | None = None,
        **options: Any,
    ) -> None:
        def default_make(name: str, routes: Sequence[str]) -> WireGuardGoDriver:
            return WireGuardGoDriver(
                name, netns=netns, wireguard_go=wireguard_go, routes=routes, **options
            )

        self.interface = interface
        self._make = make or default_make
        self._drivers: dict[int, WireGuardGoDriver] = {0: self._make(interface, ())}
        self.network: NetworkSpec | None = None
        self._private_key: str | None = None
        self._port: int | None = None
        self.on_change: InterfacesChanged | None = None

    # --- what HostNetwork and the agent see -------------------------------------------------

    @property
    def first(self) -> WireGuardGoDriver:
        return self._drivers[0]

    @property
    def interfaces(self) -> tuple[str, ...]:
        """The names of the interfaces that exist now, interface 0 first."""
        return tuple(self._drivers[n].interface for n in sorted(self._drivers))

    @property
    def drivers(self) -> tuple[WireGuardGoDriver, ...]:
        return tuple(self._drivers[n] for n in sorted(self._drivers))

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.first.addresses

    @addresses.setter
    def addresses(self, value: tuple[str, ...]) -> None:
        self.first.addresses = value

    @property
    def mtu(self) -> int:
        return self.first.mtu

    @mtu.setter
    def mtu(self, value: int) -> None:
        for driver in self._drivers.values():
            driver.mtu = value

    @property
    def running(self) -> bool:
        return self.first.running

    async def stop(self) -> None:
        """Stop every interface; the extra ones are forgotten (the next apply makes them)."""
        for number in sorted(self._drivers, reverse=True):
            await self._drivers[number].stop()
            if number:
                del self._drivers[number]

    # --- WireGuardDriver ----------------------------------------------------------------------

    @property
    def applied(self) -> Mapping[str, tuple[str, ...]]:
        if len(self._drivers) == 1:
            return self.first.applied
        return ChainMap(*(cast("dict[str, tuple[str, ...]]", d.applied) for d in self.drivers))

    @property
    def needs_resync(self) -> bool:
        return any(d.needs_resync for d in self._drivers.values())

    async def ensure_running(self) -> bool:
        fresh = False
        for driver in self.drivers:
            fresh = await driver.ensure_running() or fresh
        return fresh

    async def configure_interface(self, private_key: str, listen_port: int) -> None:
        self._private_key, self._port = private_key, listen_port
        for number, driver in sorted(self._drivers.items()):
            await driver.configure_interface(private_key, listen_port + number)

    async def get_state(self) -> list[WgPeer]:
        peers: list[WgPeer] = []
        for driver in self.drivers:
            peers += await driver.get_state()
        return peers

    async def apply(self, actions: Sequence[Action]) -> None:
        if not actions:
            return
        groups = self._split(actions)
        new = [number for number in sorted(groups) if number not in self._drivers]
        for number in new:
            await self._start(number)
        if new:
            await self._changed()
        for number in sorted(groups):
            await self._drivers[number].apply(groups[number])
        empty = [
            number
            for number, driver in sorted(self._drivers.items())
            if number and not driver.applied and not driver.needs_resync
        ]
        for number in empty:
            driver = self._drivers.pop(number)
            await driver.stop()
            log.info("interface %s stopped: it serves no peer any more", driver.interface)
        if empty:
            await self._changed()

    # --- the parts ------------------------------------------------------------------------

    async def _changed(self) -> None:
        if self.on_change is not None:
            await self.on_change(self.interfaces)

    def _number_of(self, allowed_ips: Iterable[str]) -> int:
        network = self.network
        if network is None or network.peers_per_interface >= _whole_pool(network):
            return 0
        for cidr in allowed_ips:
            address = cidr.split("/", 1)[0]
            if ":" not in address:
                return network.interface_of(address)
        return 0

    def _split(self, actions: Sequence[Action]) -> dict[int, list[Action]]:
        """Each action to the interface it concerns; a peer that changed slices leaves the
        old one."""
        drivers = sorted(self._drivers.items())
        groups: dict[int, list[Action]] = {}
        for action in actions:
            # A look-up per interface, never a pass over every peer: one apply stays O(its size).
            held = next((n for n, d in drivers if action.public_key in d.applied), None)
            if isinstance(action, RemovePeer):
                if held is not None:
                    groups.setdefault(held, []).append(action)
                continue
            number = self._number_of(action.allowed_ips)
            if held is not None and held != number:
                groups.setdefault(held, []).append(RemovePeer(action.public_key))
            groups.setdefault(number, []).append(action)
        return groups

    async def _start(self, number: int) -> None:
        assert self.network is not None
        routes = self.network.interface_slice(number)
        driver = self._make(interface_name(self.interface, number), routes)
        driver.mtu = self.first.mtu
        await driver.start()
        if self._private_key is not None and self._port is not None:
            await driver.configure_interface(self._private_key, self._port + number)
        self._drivers[number] = driver
        log.info("interface %s started for more devices", driver.interface)


def _whole_pool(network: NetworkSpec) -> int:
    """How many addresses the IPv4 pool has (one interface suffices when it holds them all)."""
    prefix = int(network.tunnel_ipv4.rsplit("/", 1)[1])
    return 1 << (32 - prefix)
