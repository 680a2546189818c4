"""The agent, wired: identity, node API client, wireguard-go, nftables, sync loop and reporter.

``enroll`` makes (or keeps) the node's key pair, trades the enrollment token for a node token
and writes the identity file. ``run_agent`` serves until cancelled: it runs the sync loop and
the status reporter side by side and, on the way out, removes burrow's fair-use qdiscs and
IFB device, stops wireguard-go and removes burrow's nftables table, so a stopped agent
serves nobody and leaves nothing behind.

``HostNetwork`` is the real ``loop.NetworkSetup``: IP forwarding, burrow's nftables table and
the WireGuard interface's addresses and MTU from the ``NetworkSpec``; it hands the DNS part
to the resolver (``drivers.resolver``), which runs and supervises itself in a task of its own
and stops with the agent.

Imports ``burrow.wire`` and ``burrow.node``; never ``burrow.control``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from pathlib import Path

import httpx

from burrow.node.client import NodeApiClient, NodeApiError, NodeTokenRejected
from burrow.node.config import NodeSettings
from burrow.node.drivers.ikev2 import CharonDriver, IkeV2Server
from burrow.node.drivers.interfaces import InterfaceSet
from burrow.node.drivers.nftables import FirewallConfig, NftablesFirewall, ensure_forwarding
from burrow.node.drivers.openvpn import OpenVpnNode, Transport
from burrow.node.drivers.resolver import NodeResolver
from burrow.node.drivers.tc import ShaperSet, TcShaper
from burrow.node.drivers.uapi import WgPeer
from burrow.node.drivers.wireguard import interface_addresses
from burrow.node.identity import NodeIdentity, new_private_key, public_key_of, save_identity
from burrow.node.ikev2 import IkeV2Service
from burrow.node.loop import SyncLoop
from burrow.node.pki import ensure_pki, ensure_server_for
from burrow.node.reconcile import DesiredPeers
from burrow.node.status import StatusReporter
from burrow.wire import IkeV2Offer, NetworkSpec, OpenVpnOffer, is_host

log = logging.getLogger(__name__)


class AgentError(Exception):
    """The agent cannot run (or must stop); the message says what to do."""


async def detect_egress_interface(netns: str | None = None) -> str:
    """The device of the default route (IPv4 first, then IPv6) in ``netns``."""
    for family in ("-4", "-6"):
        argv = ["ip", family, "-j"]
        if netns is not None:
            argv += ["-n", netns]
        argv += ["route", "show", "default"]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            continue
        try:
            routes = json.loads(out or b"[]")
        except ValueError:
            continue
        for route in routes:
            if isinstance(route, dict) and isinstance(route.get("dev"), str):
                return str(route["dev"])
    raise AgentError(
        "there is no default route to find the egress interface by; "
        "name it with --egress-interface (BURROW_NODE_EGRESS_INTERFACE)"
    )


class HostNetwork:
    """Forwarding, burrow's nftables table and the interface's addresses on this host."""

    def __init__(
        self,
        driver: InterfaceSet,
        *,
        egress_interface: str | None = None,
        netns: str | None = None,
        resolver: NodeResolver | None = None,
        tunnel_interfaces: tuple[str, ...] = (),
    ) -> None:
        self._resolver = resolver
        self._tunnels = tunnel_interfaces
        self._driver = driver
        self._egress = egress_interface
        self._netns = netns
        self._firewall: NftablesFirewall | None = None
        self._forwarding = False
        driver.on_change = self._interfaces_changed

    async def prepare(self, network: NetworkSpec, *, reload: bool = False) -> None:
        if reload or not self._forwarding:
            await ensure_forwarding(netns=self._netns)
            self._forwarding = True
        driver = self._driver
        driver.network = network
        addresses = interface_addresses(network)
        if tuple(driver.addresses) != addresses or driver.mtu != network.mtu:
            driver.addresses = addresses
            driver.mtu = network.mtu
            if driver.running:
                # wireguard-go takes addresses and MTU at start; the loop restarts it empty
                # and pushes everything again. Only an operator's change of pools does this.
                log.warning("tunnel addresses or MTU changed; restarting the interface")
                await driver.stop()
        if self._egress is None:
            self._egress = await detect_egress_interface(self._netns)
        config = FirewallConfig.from_network(
            network,
            wg_interface=driver.interface,
            egress_interface=self._egress,
            more_wg_interfaces=driver.interfaces[1:],
        )
        if self._tunnels:
            config = dataclasses.replace(
                config, other_tunnels=(*config.other_tunnels, *self._tunnels)
            )
        if self._firewall is None:
            self._firewall = NftablesFirewall(config, netns=self._netns)
            await self._firewall.apply()
        elif reload or config != self._firewall.config:
            await self._firewall.apply(config)
        if self._resolver is not None:
            # The firewall is in place first; the resolver itself starts in its own task.
            self._resolver.want(network.dns)

    async def _interfaces_changed(self, names: tuple[str, ...]) -> None:
        """An interface started or stopped: the same rules cover exactly the ones there are."""
        if self._firewall is not None:
            config = replace(self._firewall.config, more_wg_interfaces=names[1:])
            if config != self._firewall.config:
                await self._firewall.apply(config)

    async def set_blocked(self, addresses: Collection[str]) -> None:
        if self._firewall is not None:
            await self._firewall.set_blocked(addresses)

    async def close(self) -> None:
        if self._firewall is not None:
            await self._firewall.remove()
            self._firewall = None


def check_host(settings: NodeSettings) -> None:
    """Refuse to start where the data plane cannot work, with one line that says why."""
    if os.geteuid() != 0:
        raise AgentError("the node agent runs as root (it drives wireguard-go and nftables)")
    for tool in (settings.wireguard_go, "ip", "nft", "sysctl"):
        if shutil.which(tool) is None:
            raise AgentError(f"{tool} is not installed (Debian: apt install wireguard-go nftables)")


async def enroll(
    control_url: str,
    enrollment_token: str,
    state_dir: Path,
    *,
    private_key: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NodeIdentity:
    """Enroll with the control plane and write the identity file; returns the identity.

    ``private_key`` keeps an existing key (the devices' configs name the node's public key);
    without it a new key pair is made. Nothing is written unless enrollment succeeds.
    """
    key = private_key or new_private_key()
    async with NodeApiClient(control_url, transport=transport) as client:
        enrolled = await client.enroll(enrollment_token, public_key_of(key))
    # The OpenVPN PKI is made now, for the name clients dial; kept with the identity.
    ensure_pki(state_dir, enrolled.node_name, enrolled.endpoint_host or enrolled.node_name)
    identity = NodeIdentity(
        control_url=control_url.rstrip("/"),
        node_id=enrolled.node_id,
        node_name=enrolled.node_name,
        interface_name=enrolled.interface_name,
        private_key=key,
        node_token=enrolled.node_token,
    )
    save_identity(state_dir, identity)
    return identity


def _ikev2_driver(
    settings: NodeSettings, identity: NodeIdentity, interface: str
) -> tuple[CharonDriver, IkeV2Server, IkeV2Offer] | None:
    """charon, the node's side of IKEv2 and what to tell the control plane about it, when the
    node serves it (``ikev2_host`` set).

    The server certificate comes from the node's own CA (``node.pki``, made once and kept in
    the state directory) and names the host clients dial: the PKI may have been made for
    another name (the endpoint, at enrollment), in which case the CA signs one for this name.
    """
    if settings.ikev2_host is None:
        return None
    if not is_host(settings.ikev2_host):
        # The control plane would refuse the offer, and clients could not dial it.
        raise AgentError(
            f"BURROW_NODE_IKEV2_HOST ({settings.ikev2_host!r}) is not a DNS name or an IP "
            "address; give the name IKEv2 clients dial"
        )
    if not Path(settings.charon).exists():
        raise AgentError(
            f"{settings.charon} is not installed (Debian: apt install strongswan-charon "
            "strongswan-swanctl libcharon-extra-plugins libcharon-extauth-plugins "
            "libstrongswan-standard-plugins libstrongswan-extra-plugins)"
        )
    pki = ensure_pki(settings.state_dir, identity.node_name, settings.ikev2_host)
    pki = ensure_server_for(settings.state_dir, pki, settings.ikev2_host)
    charon = CharonDriver(
        settings.runtime_dir / interface / "ikev2", netns=settings.netns, charon=settings.charon
    )
    server = IkeV2Server(
        identity=settings.ikev2_host,
        certificate_pem=pki.server_certificate,
        private_key_pem=pki.server_key,
    )
    return charon, server, IkeV2Offer(host=settings.ikev2_host, ca_certificate=pki.ca_certificate)


def fair_use_shaper(
    settings: NodeSettings,
    interface: str,
    openvpn: OpenVpnNode | None,
    charon: CharonDriver | None,
) -> TcShaper | ShaperSet:
    """Fair use slows a device on every tunnel it may come through: the WireGuard interface,
    OpenVPN's tuns and IKEv2's TUN device (kernel-libipsec's ``ipsec0``), all by the device's
    fleet-wide addresses. A tunnel made anew (its openvpn or charon restarted) is bare, so the
    restarts are the generation that has the shaping put back."""
    main = TcShaper(interface, netns=settings.netns)
    others = [
        *(openvpn.interfaces if openvpn is not None else ()),
        *((settings.ikev2_interface,) if charon is not None else ()),
    ]
    if not others:
        return main

    def generation() -> int:
        restarts = sum(p.restarts for p in openvpn.processes) if openvpn is not None else 0
        return restarts + (charon.restarts if charon is not None else 0)

    return ShaperSet(
        main, [TcShaper(dev, netns=settings.netns) for dev in others], generation=generation
    )


def fair_use_traffic(openvpn: OpenVpnNode | None, ikev2: IkeV2Service | None) -> list[WgPeer]:
    """Each device's OpenVPN and IKEv2 bytes together, which fair use adds to its WireGuard
    bytes."""
    totals: dict[str, tuple[int, int]] = {}
    for source in (openvpn, ikev2):
        for peer in source.traffic() if source is not None else ():
            rx, tx = totals.get(peer.public_key, (0, 0))
            totals[peer.public_key] = (rx + peer.rx_bytes, tx + peer.tx_bytes)
    return [WgPeer(public_key=k, rx_bytes=rx, tx_bytes=tx) for k, (rx, tx) in totals.items()]


def _quiet_http_logs() -> None:
    # httpx logs every request at INFO; a long poll every 25 s and a report every 5 s say nothing.
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def run_agent(
    settings: NodeSettings,
    identity: NodeIdentity,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Serve the desired state until cancelled. Raises AgentError when the node is retired."""
    _quiet_http_logs()
    client = NodeApiClient(
        identity.control_url,
        identity.node_token,
        transport=transport,
        timeout=settings.request_timeout_seconds,
    )
    interface = settings.interface or identity.interface_name
    driver = InterfaceSet(interface, netns=settings.netns, wireguard_go=settings.wireguard_go)
    resolver = NodeResolver(
        settings.runtime_dir / interface / "dns",
        client.filter_list,
        netns=settings.netns,
        upstream_port=settings.resolver_upstream_port,
        stub_zones=settings.resolver_stub_zones,
        supervise_interval=settings.supervise_interval_seconds,
    )
    loop: SyncLoop | None = None
    openvpn = _openvpn(settings, identity, interface, lambda: loop)
    ikev2 = _ikev2_driver(settings, identity, interface)
    network = HostNetwork(
        driver,
        egress_interface=settings.egress_interface,
        netns=settings.netns,
        resolver=resolver,
        tunnel_interfaces=(
            *(openvpn.interfaces if openvpn is not None else ()),
            *((settings.ikev2_interface,) if ikev2 is not None else ()),
        ),
    )
    shaper = fair_use_shaper(settings, interface, openvpn, ikev2[0] if ikev2 is not None else None)
    ikev2_service: IkeV2Service | None = None  # made after the loop, whose desired state it reads
    ikev2_offer: IkeV2Offer | None = None
    loop = SyncLoop(
        client,
        driver,
        network,
        private_key=identity.private_key,
        long_poll_seconds=settings.long_poll_seconds,
        backoff_initial_seconds=settings.backoff_initial_seconds,
        backoff_max_seconds=settings.backoff_max_seconds,
        supervise_interval_seconds=settings.supervise_interval_seconds,
        shaper=shaper,
        uplink_mbit=settings.uplink_mbit,
        extra_traffic=lambda: fair_use_traffic(openvpn, ikev2_service),
    )
    if ikev2 is not None:
        charon, server, ikev2_offer = ikev2
        ikev2_service = IkeV2Service(
            charon, server, lambda: loop.desired, network=lambda: loop.network
        )
    reporter = StatusReporter(
        client,
        loop,
        interval_seconds=settings.report_interval_seconds,
        idle_threshold_seconds=settings.idle_threshold_seconds,
        protocols=tuple(p for p in (openvpn, ikev2_service) if p is not None),
    )
    log.info("node %s serves %s", identity.node_name, interface)
    if started is not None:
        started.set()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(loop.run(), name="burrow-node-loop")
            group.create_task(reporter.run_forever(), name="burrow-node-status")
            group.create_task(resolver.run(), name="burrow-node-resolver")
            if openvpn is not None:
                group.create_task(openvpn.run(), name="burrow-node-openvpn")
                group.create_task(_offer_openvpn(client, openvpn), name="burrow-node-offer")
            if ikev2_service is not None and ikev2_offer is not None:
                group.create_task(ikev2_service.run(), name="burrow-node-ikev2")
                group.create_task(_offer_ikev2(client, ikev2_offer), name="burrow-node-offer-ikev2")
    except* NodeTokenRejected as refused:
        detail = refused.exceptions[0]
        raise AgentError(
            f"{detail}; this node stopped serving. Enroll it again with a new token "
            "(`burrow node token NAME` on the control plane)."
        ) from None
    finally:
        await _shutdown(driver, network, client, shaper)


def _openvpn(
    settings: NodeSettings,
    identity: NodeIdentity,
    interface: str,
    loop: Callable[[], SyncLoop | None],
) -> OpenVpnNode | None:
    """The node's OpenVPN processes, unless switched off or not installed."""
    if not settings.openvpn:
        return None
    if shutil.which(settings.openvpn_program) is None:
        log.warning("openvpn is not installed: this node serves WireGuard only")
        return None
    pki = ensure_pki(settings.state_dir, identity.node_name, identity.node_name)

    def desired() -> DesiredPeers | None:
        current = loop()
        return current.desired if current is not None else None

    def network() -> NetworkSpec | None:
        current = loop()
        return current.network if current is not None else None

    return OpenVpnNode(
        pki,
        desired,
        network,
        wg_interface=interface,
        runtime_dir=settings.runtime_dir / interface / "openvpn",
        transports=[Transport.parse(t) for t in settings.openvpn_transports],
        netns=settings.netns,
        openvpn=settings.openvpn_program,
        supervise_interval=min(settings.supervise_interval_seconds, 0.5),
    )


async def _offer_openvpn(client: NodeApiClient, openvpn: OpenVpnNode) -> None:
    """Tell the control plane this node's CA, tls-crypt key and transports, until it listens."""
    offer = OpenVpnOffer(
        ca_certificate=openvpn.pki.ca_certificate,
        tls_crypt_key=openvpn.pki.tls_crypt_key,
        transports=tuple(t.label for t in openvpn.transports),
    )
    await _keep_offering("OpenVPN", lambda: client.offer_openvpn(offer))


async def _offer_ikev2(client: NodeApiClient, offer: IkeV2Offer) -> None:
    """Tell the control plane the host IKEv2 clients dial and the CA, until it listens: until
    then it makes no IKEv2 profile for this node."""
    await _keep_offering("IKEv2", lambda: client.offer_ikev2(offer))


async def _keep_offering(protocol: str, send: Callable[[], Awaitable[None]]) -> None:
    """Send an offer until the control plane takes it, waiting longer after each failure; a
    refused node token ends the agent instead."""
    delay = 0.5
    while True:
        try:
            await send()
            return
        except NodeTokenRejected:
            raise
        except NodeApiError as exc:
            log.warning("could not tell the control plane about %s (%s); retrying", protocol, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def _shutdown(
    driver: InterfaceSet,
    network: HostNetwork,
    client: NodeApiClient,
    shaper: TcShaper | ShaperSet,
) -> None:
    try:
        await shaper.close()
    except Exception as exc:
        log.warning("could not remove burrow's fair-use qdiscs (%s)", exc)
    try:
        await driver.stop()
    finally:
        try:
            await network.close()
        except Exception as exc:
            log.warning("could not remove burrow's nftables table (%s)", exc)
        await client.aclose()
    log.info("node agent stopped; the interface and burrow's nftables table are gone")
