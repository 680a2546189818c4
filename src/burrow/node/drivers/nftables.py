"""The nftables driver: NAT, egress port blocks, client isolation and blocked peers.

burrow owns one table, ``table inet burrow``, and never touches anyone
else's. The whole table is rendered as text by a pure function
(``render_ruleset``) and loaded with one ``nft -f -``; the text first makes
sure the table exists, deletes it and builds it anew, and nft runs a file as
one transaction, so the old rules stay in force until the new ones are in.

Two sets, ``blocked_peers_v4`` and ``blocked_peers_v6``, hold tunnel
addresses whose traffic through a WireGuard interface is dropped (the control
plane blocks peers that exceed their limits; the same address on another
protocol's tunnel is that protocol's business). They change one element at a
time with ``nft add element`` / ``delete element``; a full reload writes their
current members back, so blocks survive a reload.

Imports ``burrow.wire`` only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from burrow.wire import NatSpec, NetworkSpec
from burrow.wire.nat import FIRST_DEVICE_OFFSET, block_for_offset, capacity

TABLE = "burrow"
SET_V4 = "blocked_peers_v4"
SET_V6 = "blocked_peers_v6"

_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NftablesError(Exception):
    """nft refused a ruleset or a command."""


@dataclass(frozen=True, slots=True)
class FirewallConfig:
    """What the ruleset needs to know; checked when built, since it ends up inside nft's text."""

    wg_interface: str
    egress_interface: str
    tunnel_ipv4: str
    tunnel_ipv6: str
    egress_ipv4: str | None = None
    egress_ipv6: str | None = None
    # Further IPv4 egress addresses: deterministic NAT puts the next devices' blocks on them.
    egress_ipv4_extra: tuple[str, ...] = ()
    blocked_tcp_ports: tuple[int, ...] = (25,)
    blocked_udp_ports: tuple[int, ...] = ()
    isolate_clients: bool = True
    # The node's own addresses a tunnel may reach (gateways and resolver addresses): DNS and
    # ICMP only. Every other packet from the tunnel to the node itself is dropped.
    service_addresses: tuple[str, ...] = ()
    # The node's further WireGuard interfaces (more devices than one holds): same rules.
    more_wg_interfaces: tuple[str, ...] = ()
    # Other protocols' tunnel devices (IKEv2's ipsec0, OpenVPN's tuns): the same rules as
    # WireGuard's interface (NAT, blocked ports, isolation, DNS-only to the node).
    other_tunnels: tuple[str, ...] = ()
    # None: the kernel's default source NAT (it keeps a client's port when it can).
    nat: NatSpec | None = None

    def __post_init__(self) -> None:
        names = (self.wg_interface, self.egress_interface, *self.more_wg_interfaces)
        for name in (*names, *self.other_tunnels):
            if not _INTERFACE_NAME.fullmatch(name):
                raise ValueError(f"not an interface name: {name!r}")
        if ipaddress.ip_network(self.tunnel_ipv4).version != 4:
            raise ValueError("tunnel_ipv4 must be an IPv4 network")
        if ipaddress.ip_network(self.tunnel_ipv6).version != 6:
            raise ValueError("tunnel_ipv6 must be an IPv6 network")
        if self.egress_ipv4 is not None and ipaddress.ip_address(self.egress_ipv4).version != 4:
            raise ValueError("egress_ipv4 must be an IPv4 address")
        if self.egress_ipv6 is not None and ipaddress.ip_address(self.egress_ipv6).version != 6:
            raise ValueError("egress_ipv6 must be an IPv6 address")
        for extra in self.egress_ipv4_extra:
            if ipaddress.ip_address(extra).version != 4:
                raise ValueError(f"egress_ipv4_extra must hold IPv4 addresses, not {extra}")
        for port in (*self.blocked_tcp_ports, *self.blocked_udp_ports):
            if not 1 <= port <= 65535:
                raise ValueError(f"not a port: {port}")
        for address in self.service_addresses:
            ipaddress.ip_address(address)

    @classmethod
    def from_network(
        cls,
        network: NetworkSpec,
        *,
        wg_interface: str,
        egress_interface: str,
        more_wg_interfaces: tuple[str, ...] = (),
    ) -> FirewallConfig:
        return cls(
            wg_interface=wg_interface,
            more_wg_interfaces=more_wg_interfaces,
            egress_interface=egress_interface,
            tunnel_ipv4=network.tunnel_ipv4,
            tunnel_ipv6=network.tunnel_ipv6,
            egress_ipv4=network.egress_ipv4,
            egress_ipv6=network.egress_ipv6,
            egress_ipv4_extra=network.egress_ipv4_extra,
            blocked_tcp_ports=network.blocked_egress_tcp_ports,
            blocked_udp_ports=network.blocked_egress_udp_ports,
            isolate_clients=network.isolate_clients,
            service_addresses=service_addresses(network),
            nat=network.nat,
        )


def service_addresses(network: NetworkSpec) -> tuple[str, ...]:
    """The gateway addresses and every resolver address the DNS spec names."""
    found = [network.gateway_ipv4, network.gateway_ipv6]
    if network.dns is not None:
        for resolver in network.dns.resolvers:
            found += [resolver.ipv4, resolver.ipv6]
    return tuple(dict.fromkeys(str(ipaddress.ip_address(a)) for a in found))


def tunnel_host(address: str | IPAddress) -> IPAddress:
    """A peer's tunnel address; takes ``10.64.0.2``, or ``10.64.0.2/32`` as in allowed IPs."""
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address
    if "/" in address:
        network = ipaddress.ip_network(address)
        if network.num_addresses != 1:
            raise ValueError(f"a blocked peer is one address, not {address}")
        return network.network_address
    return ipaddress.ip_address(address)


def _elements(addresses: Iterable[IPAddress]) -> str:
    return ", ".join(str(a) for a in sorted(addresses))


def _ports(ports: Sequence[int]) -> str:
    return ", ".join(str(p) for p in sorted(set(ports)))


def render_ruleset(config: FirewallConfig, blocked: Iterable[str | IPAddress] = ()) -> str:
    """The whole ``table inet burrow``, as one atomic replacement for ``nft -f -``."""
    hosts = {tunnel_host(a) for a in blocked}
    v4 = [a for a in hosts if a.version == 4]
    v6 = [a for a in hosts if a.version == 6]
    egress = f'"{config.egress_interface}"'
    pool4 = ipaddress.ip_network(config.tunnel_ipv4)
    pool6 = ipaddress.ip_network(config.tunnel_ipv6)

    lines = [
        # Creating first makes the delete succeed when the table is new.
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
    ]
    for name, kind, members in ((SET_V4, "ipv4_addr", v4), (SET_V6, "ipv6_addr", v6)):
        lines.append(f"\tset {name} {{")
        lines.append(f"\t\ttype {kind}")
        if members:
            lines.append(f"\t\telements = {{ {_elements(members)} }}")
        lines.append("\t}")

    # Every tunnelled packet walks the forward chain, and every packet carrying a tunnel walks
    # the input chain, so each hooked chain holds one interface lookup per direction (a verdict
    # map) and a packet meets only its own direction's rules: nine rules in a row cost a
    # wireguard-go tunnel about 8 % of its throughput (bench/throughput.py).
    blocked_from = [f"ip saddr @{SET_V4} counter drop", f"ip6 saddr @{SET_V6} counter drop"]
    blocked_to = [f"ip daddr @{SET_V4} counter drop", f"ip6 daddr @{SET_V6} counter drop"]
    isolation = (
        [
            f"ip saddr {pool4} ip daddr {pool4} counter drop",
            f"ip6 saddr {pool6} ip6 daddr {pool6} counter drop",
        ]
        if config.isolate_clients
        else []
    )
    from_tunnel = list(isolation)
    if config.blocked_tcp_ports:
        from_tunnel.append(f"tcp dport {{ {_ports(config.blocked_tcp_ports)} }} counter drop")
    if config.blocked_udp_ports:
        from_tunnel.append(f"udp dport {{ {_ports(config.blocked_udp_ports)} }} counter drop")
    # Blocked peers first: nothing after may let their packets through. A peer is blocked on
    # WireGuard only: the same device's address on another protocol's tunnel (OpenVPN, IKEv2)
    # is that protocol's business (it cuts its own).
    from_wireguard = [*blocked_from, "goto from_tunnel"]
    # Isolation holds whichever way a packet came in (a tunnel address forged outside too).
    to_tunnel = list(isolation)
    to_wireguard = [*blocked_to, "goto to_tunnel"] if isolation else list(blocked_to)
    forward = [
        "type filter hook forward priority filter; policy accept;",
        f"iifname vmap {{ {_verdicts(config, 'jump from_wireguard', 'jump from_tunnel')} }}",
        f"oifname vmap {{ {_verdicts(config, 'jump to_wireguard', 'jump to_tunnel')} }}",
    ]

    own = [ipaddress.ip_address(a) for a in config.service_addresses]
    own4 = _elements(a for a in own if a.version == 4)
    own6 = _elements(a for a in own if a.version == 6)
    input_ = [
        "type filter hook input priority filter; policy accept;",
        f"iifname vmap {{ {_verdicts(config, 'goto wireguard_input', 'goto tunnel_input')} }}",
    ]
    wireguard_input = [*blocked_from, "goto tunnel_input"]
    # From a tunnel, the node answers DNS and ICMP on its own tunnel addresses; nothing else.
    tunnel_input = []
    if own4:
        tunnel_input += [
            f"ip daddr {{ {own4} }} meta l4proto {{ tcp, udp }} th dport 53 accept",
            f"ip daddr {{ {own4} }} meta l4proto icmp accept",
        ]
    if own6:
        tunnel_input += [
            f"ip6 daddr {{ {own6} }} meta l4proto {{ tcp, udp }} th dport 53 accept",
            f"ip6 daddr {{ {own6} }} meta l4proto ipv6-icmp accept",
        ]
    # Neighbour discovery goes to multicast addresses; WireGuard has none, a veth does.
    tunnel_input.append("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept")
    tunnel_input.append("counter drop")

    snat4 = f"snat ip to {config.egress_ipv4}" if config.egress_ipv4 else "masquerade"
    snat6 = f"snat ip6 to {config.egress_ipv6}" if config.egress_ipv6 else "masquerade"
    postrouting = ["type nat hook postrouting priority srcnat; policy accept;"]
    nat = config.nat
    if nat is not None and nat.mode == "random":
        # A fresh random source port per connection: nothing ties a port to a device.
        snat4, snat6 = f"{snat4} fully-random", f"{snat6} fully-random"
    elif nat is not None and nat.mode == "deterministic":
        blocks = _port_blocks(config, nat, egress, pool4, pool6)
        from_tunnel += blocks.forward
        postrouting += blocks.postrouting
    postrouting += [
        f"oifname {egress} ip saddr {pool4} {snat4}",
        f"oifname {egress} ip6 saddr {pool6} {snat6}",
    ]

    chains = (
        ("input", input_),
        ("wireguard_input", wireguard_input),
        ("tunnel_input", tunnel_input),
        ("forward", forward),
        ("from_wireguard", from_wireguard),
        ("from_tunnel", from_tunnel),
        ("to_wireguard", to_wireguard),
        ("to_tunnel", to_tunnel),
        ("postrouting", postrouting),
    )
    for chain, rules in chains:
        lines.append(f"\tchain {chain} {{")
        lines.extend(f"\t\t{rule}" for rule in rules)
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _verdicts(config: FirewallConfig, wireguard: str, other: str) -> str:
    """Verdict map elements: WireGuard's interfaces to one verdict, other tunnels' to another."""
    wg = (config.wg_interface, *config.more_wg_interfaces)
    pairs = [(name, wireguard) for name in wg]
    pairs += [(name, other) for name in config.other_tunnels if name not in wg]
    return ", ".join(f'"{name}" : {verdict}' for name, verdict in pairs)


@dataclass(frozen=True, slots=True)
class _BlockRules:
    forward: list[str]
    postrouting: list[str]


def _port_blocks(
    config: FirewallConfig,
    nat: NatSpec,
    egress: str,
    pool4: ipaddress.IPv4Network | ipaddress.IPv6Network,
    pool6: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> _BlockRules:
    """Deterministic NAT (RFC 7422): each tunnel address leaves from its own port block.

    Only the addresses the egress addresses' blocks hold are translated; the rest of the pool
    is dropped on its way out, so a device beyond the blocks never shares someone's ports.
    """
    forward: list[str] = []
    postrouting: list[str] = []
    # Only IPv4 has further egress addresses; with none recorded, the interface's address.
    v4 = (config.egress_ipv4, *config.egress_ipv4_extra) if config.egress_ipv4 else (None,)
    for pool, addresses, family, kind in (
        (pool4, v4, "ip", "ip"),
        (pool6, (config.egress_ipv6,), "ip6", "ip6"),
    ):
        held = capacity(nat, len(addresses))
        last = min(FIRST_DEVICE_OFFSET + held, pool.num_addresses - 1) - 1
        first_host = pool.network_address + FIRST_DEVICE_OFFSET
        covered = f"{first_host}-{pool.network_address + last}"
        blocks = []
        for offset in range(FIRST_DEVICE_OFFSET, last + 1):
            block = block_for_offset(nat, offset, len(addresses))
            assert block is not None
            address = addresses[block.egress_index]
            blocks.append((pool.network_address + offset, address, block.ports))
        egress_address = addresses[0]
        if egress_address is None:
            # The interface's own address, whatever it is: one rule per block.
            postrouting += [
                f"oifname {egress} {family} saddr {host} meta l4proto {{ tcp, udp }} "
                f"masquerade to :{ports}"
                for host, _, ports in blocks
            ]
        elif family == "ip6":
            # This kernel refuses an IPv6 address-and-ports map ("No data available"): one
            # rule per block. A NAT chain sees only a connection's first packet.
            postrouting += [
                f"oifname {egress} ip6 saddr {host} meta l4proto {{ tcp, udp }} "
                f"snat ip6 to [{egress_address}]:{ports}"
                for host, _, ports in blocks
            ]
        else:
            entries = ", ".join(f"{host} : {address} . {ports}" for host, address, ports in blocks)
            postrouting.append(
                f"oifname {egress} {family} saddr {covered} meta l4proto {{ tcp, udp }} "
                f"snat {kind} to {family} saddr map {{ {entries} }}"
            )
        # Other protocols (ICMP) carry no port; the pool's general rule below translates them.
        forward.append(
            f"oifname {egress} {family} saddr {pool} {family} saddr != {covered} counter drop"
        )
    return _BlockRules(forward, postrouting)


def render_block_changes(
    add: Iterable[str | IPAddress] = (), remove: Iterable[str | IPAddress] = ()
) -> str:
    """``nft`` commands that add and delete blocked-peer elements; empty when nothing changes."""
    lines = []
    for verb, addresses in (("delete", remove), ("add", add)):
        hosts = {tunnel_host(a) for a in addresses}
        for name, version in ((SET_V4, 4), (SET_V6, 6)):
            members = [a for a in hosts if a.version == version]
            if members:
                lines.append(f"{verb} element inet {TABLE} {name} {{ {_elements(members)} }}")
    return "".join(f"{line}\n" for line in lines)


def _in_netns(argv: list[str], netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns is not None else argv


async def _run(argv: list[str], stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise NftablesError(f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


async def run_nft(script: str, *, netns: str | None = None) -> None:
    """Load ``script`` with ``nft -f -``: all of it, or (on error) none of it."""
    await _run(_in_netns(["nft", "-f", "-"], netns), stdin=script)


async def list_table(*, netns: str | None = None) -> str:
    return await _run(_in_netns(["nft", "list", "table", "inet", TABLE], netns))


async def delete_table(*, netns: str | None = None) -> None:
    """Remove burrow's table; a no-op when there is none."""
    await run_nft(f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n", netns=netns)


async def ensure_forwarding(*, netns: str | None = None) -> None:
    """Let the node route between tunnel and egress, for IPv4 and IPv6.

    Beware on a real host: with IPv6 forwarding on, an interface with the
    default ``accept_ra=1`` stops taking router advertisements; one that gets
    its IPv6 address by SLAAC needs ``accept_ra=2``.
    """
    argv = ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
    await _run(_in_netns(argv, netns))


class NftablesFirewall:
    """burrow's table in one network namespace, with the blocked peers it currently holds."""

    def __init__(self, config: FirewallConfig, *, netns: str | None = None) -> None:
        self.config = config
        self.netns = netns
        self._blocked: set[IPAddress] = set()

    @property
    def blocked(self) -> frozenset[IPAddress]:
        return frozenset(self._blocked)

    async def apply(self, config: FirewallConfig | None = None) -> None:
        """Load the whole table atomically (optionally with a new config), keeping the blocks."""
        config = config or self.config
        await run_nft(render_ruleset(config, self._blocked), netns=self.netns)
        self.config = config

    async def update_blocked(
        self, block: Iterable[str | IPAddress] = (), unblock: Iterable[str | IPAddress] = ()
    ) -> None:
        """Add and remove blocked addresses in one nft transaction.

        Only real changes are sent: nft refuses to delete an element that is
        not there, which would fail the whole batch.
        """
        wanted = {tunnel_host(a) for a in block}
        dropped = {tunnel_host(a) for a in unblock} - wanted
        add = wanted - self._blocked
        remove = dropped & self._blocked
        script = render_block_changes(add=add, remove=remove)
        if not script:
            return
        try:
            await run_nft(script, netns=self.netns)
        except NftablesError:
            # Our record and the kernel's sets disagree (someone flushed
            # them?): a full reload writes the record back.
            self._blocked = (self._blocked | add) - remove
            await self.apply()
            return
        self._blocked = (self._blocked | add) - remove

    async def set_blocked(self, addresses: Iterable[str | IPAddress]) -> None:
        """Make the blocked set exactly ``addresses`` (as the control plane's list says)."""
        wanted = {tunnel_host(a) for a in addresses}
        await self.update_blocked(block=wanted - self._blocked, unblock=self._blocked - wanted)

    async def remove(self) -> None:
        await delete_table(netns=self.netns)
        self._blocked = set()
