"""The nftables driver: the generated ruleset, then nft and real traffic in namespaces."""

from __future__ import annotations

import dataclasses
import ipaddress
import sys

import pytest

from burrow.node.drivers.nftables import (
    FirewallConfig,
    NftablesError,
    NftablesFirewall,
    ensure_forwarding,
    list_table,
    render_block_changes,
    render_ruleset,
    run_nft,
    tunnel_host,
)
from burrow.wire import DnsSpec, NatSpec, NetworkSpec, ResolverSpec

from ..netns import Lab, Namespace, needs

CONFIG = FirewallConfig(
    wg_interface="bwg0",
    egress_interface="eth0",
    tunnel_ipv4="10.64.0.0/10",
    tunnel_ipv6="fd42:b0::/48",
)


def rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def chain(text: str, name: str) -> list[str]:
    """A chain's lines after its opening line (its hook line first, for a hooked chain)."""
    lines = rules(text)
    start = lines.index(f"chain {name} {{")
    return lines[start + 1 : lines.index("}", start)]


def test_the_ruleset_replaces_burrows_table_atomically() -> None:
    lines = rules(render_ruleset(CONFIG))
    assert lines[:3] == ["table inet burrow {}", "delete table inet burrow", "table inet burrow {"]
    assert lines[-1] == "}"
    assert sum(line.startswith("table ") for line in lines) == 2


def test_tunnel_traffic_is_masqueraded_through_the_egress_interface() -> None:
    lines = rules(render_ruleset(CONFIG))
    assert 'oifname "eth0" ip saddr 10.64.0.0/10 masquerade' in lines
    assert 'oifname "eth0" ip6 saddr fd42:b0::/48 masquerade' in lines


def test_an_egress_ip_gets_snat_instead() -> None:
    config = FirewallConfig(
        wg_interface="bwg0",
        egress_interface="eth0",
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        egress_ipv4="192.0.2.10",
        egress_ipv6="2001:db8::10",
    )
    lines = rules(render_ruleset(config))
    assert 'oifname "eth0" ip saddr 10.64.0.0/10 snat ip to 192.0.2.10' in lines
    assert 'oifname "eth0" ip6 saddr fd42:b0::/48 snat ip6 to 2001:db8::10' in lines
    assert not any("masquerade" in line for line in lines)


@pytest.mark.parametrize(
    ("tcp", "udp", "expected", "absent"),
    [
        ((25,), (), ["tcp dport { 25 } counter drop"], "udp dport"),
        (
            (465, 25, 25),
            (137,),
            [
                "tcp dport { 25, 465 } counter drop",
                "udp dport { 137 } counter drop",
            ],
            None,
        ),
        ((), (), [], "dport"),
    ],
)
def test_blocked_egress_ports(
    tcp: tuple[int, ...], udp: tuple[int, ...], expected: list[str], absent: str | None
) -> None:
    config = FirewallConfig(
        wg_interface="bwg0",
        egress_interface="eth0",
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        blocked_tcp_ports=tcp,
        blocked_udp_ports=udp,
    )
    text = render_ruleset(config)
    for rule in expected:
        assert rule in chain(text, "from_tunnel")
    if absent is not None:
        assert absent not in text


@pytest.mark.parametrize("isolate", [True, False])
def test_client_isolation_follows_the_config(isolate: bool) -> None:
    config = FirewallConfig(
        wg_interface="bwg0",
        egress_interface="eth0",
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        isolate_clients=isolate,
    )
    lines = rules(render_ruleset(config))
    isolation = [
        "ip saddr 10.64.0.0/10 ip daddr 10.64.0.0/10 counter drop",
        "ip6 saddr fd42:b0::/48 ip6 daddr fd42:b0::/48 counter drop",
    ]
    assert all((rule in lines) is isolate for rule in isolation)


def test_a_packet_meets_only_its_own_directions_rules() -> None:
    text = render_ruleset(CONFIG)
    # The hooked chains look a packet's interface up once and jump; nothing else is in them.
    assert chain(text, "forward") == [
        "type filter hook forward priority filter; policy accept;",
        'iifname vmap { "bwg0" : jump from_wireguard }',
        'oifname vmap { "bwg0" : jump to_wireguard }',
    ]
    assert chain(text, "input") == [
        "type filter hook input priority filter; policy accept;",
        'iifname vmap { "bwg0" : goto wireguard_input }',
    ]
    # Blocked peers first, then the rules of any tunnel; nothing in them accepts.
    assert chain(text, "from_wireguard") == [
        "ip saddr @blocked_peers_v4 counter drop",
        "ip6 saddr @blocked_peers_v6 counter drop",
        "goto from_tunnel",
    ]
    assert chain(text, "from_tunnel") == [
        "ip saddr 10.64.0.0/10 ip daddr 10.64.0.0/10 counter drop",
        "ip6 saddr fd42:b0::/48 ip6 daddr fd42:b0::/48 counter drop",
        "tcp dport { 25 } counter drop",
    ]
    assert chain(text, "to_wireguard") == [
        "ip daddr @blocked_peers_v4 counter drop",
        "ip6 daddr @blocked_peers_v6 counter drop",
        "goto to_tunnel",
    ]
    assert all(
        "accept" not in line for name in ("from_tunnel", "to_tunnel") for line in chain(text, name)
    )


def test_blocked_peers_are_written_into_their_sets() -> None:
    text = render_ruleset(CONFIG, ["10.64.0.9", "fd42:b0::9/128", "10.64.0.3/32"])
    lines = rules(text)
    v4 = lines.index("set blocked_peers_v4 {")
    v6 = lines.index("set blocked_peers_v6 {")
    assert lines[v4 + 1 : v4 + 3] == ["type ipv4_addr", "elements = { 10.64.0.3, 10.64.0.9 }"]
    assert lines[v6 + 1 : v6 + 3] == ["type ipv6_addr", "elements = { fd42:b0::9 }"]
    assert "elements" not in render_ruleset(CONFIG)


def test_block_changes_are_element_commands() -> None:
    text = render_block_changes(add=["10.64.0.2", "fd42:b0::2"], remove=["10.64.0.7/32"])
    assert text.splitlines() == [
        "delete element inet burrow blocked_peers_v4 { 10.64.0.7 }",
        "add element inet burrow blocked_peers_v4 { 10.64.0.2 }",
        "add element inet burrow blocked_peers_v6 { fd42:b0::2 }",
    ]
    assert render_block_changes() == ""


def test_a_config_comes_from_the_network_spec() -> None:
    network = NetworkSpec(
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        gateway_ipv4="10.64.0.1",
        gateway_ipv6="fd42:b0::1",
        egress_ipv4="192.0.2.10",
        blocked_egress_udp_ports=(137,),
        isolate_clients=False,
    )
    config = FirewallConfig.from_network(network, wg_interface="bwg0", egress_interface="eth0")
    assert config == FirewallConfig(
        wg_interface="bwg0",
        egress_interface="eth0",
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        egress_ipv4="192.0.2.10",
        blocked_tcp_ports=(25,),
        blocked_udp_ports=(137,),
        isolate_clients=False,
        service_addresses=("10.64.0.1", "fd42:b0::1"),
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"wg_interface": 'bwg0" accept'},
        {"egress_interface": "eth0;"},
        {"tunnel_ipv4": "fd42:b0::/48"},
        {"tunnel_ipv6": "10.64.0.0/10"},
        {"tunnel_ipv4": "10.64.0.1/10"},
        {"egress_ipv4": "2001:db8::1"},
        {"blocked_tcp_ports": (0,)},
    ],
)
def test_a_bad_config_never_reaches_nft(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "wg_interface": "bwg0",
        "egress_interface": "eth0",
        "tunnel_ipv4": "10.64.0.0/10",
        "tunnel_ipv6": "fd42:b0::/48",
        **changes,
    }
    with pytest.raises(ValueError, match=r".+"):
        FirewallConfig(**fields)  # type: ignore[arg-type]


def test_a_blocked_peer_is_one_address() -> None:
    assert tunnel_host("10.64.0.2/32") == ipaddress.ip_address("10.64.0.2")
    with pytest.raises(ValueError, match="one address"):
        tunnel_host("10.64.0.0/24")


# --- nft inside a namespace ----------------------------------------------------------------------


async def nft_table(ns: Namespace) -> list[str]:
    return rules(await list_table(netns=ns.name))


@needs("nft")
async def test_the_table_loads_and_reloads_keeping_blocks(lab: Lab) -> None:
    ns = lab.namespace()
    firewall = NftablesFirewall(CONFIG, netns=ns.name)
    await firewall.apply()
    listed = await nft_table(ns)
    assert 'oifname "eth0" ip saddr 10.64.0.0/10 masquerade' in listed
    assert "tcp dport 25 counter packets 0 bytes 0 drop" in listed
    assert "ip saddr @blocked_peers_v4 counter packets 0 bytes 0 drop" in listed
    assert 'iifname vmap { "bwg0" : jump from_wireguard }' in listed

    await firewall.update_blocked(block=["10.64.0.2/32", "fd42:b0::2/128", "10.64.0.3"])
    await firewall.apply(
        FirewallConfig(
            wg_interface="bwg0",
            egress_interface="eth1",
            tunnel_ipv4="10.64.0.0/10",
            tunnel_ipv6="fd42:b0::/48",
        )
    )
    listed = await nft_table(ns)
    assert 'oifname "eth1" ip saddr 10.64.0.0/10 masquerade' in listed
    assert not any('"eth0"' in line for line in listed)
    assert "elements = { 10.64.0.2, 10.64.0.3 }" in listed
    assert "elements = { fd42:b0::2 }" in listed

    await firewall.update_blocked(unblock=["10.64.0.2", "fd42:b0::2", "10.64.0.99"])
    listed = await nft_table(ns)
    assert "elements = { 10.64.0.3 }" in listed
    assert not any("fd42:b0::2" in line for line in listed)


@needs("nft")
async def test_a_broken_ruleset_leaves_the_old_one_in_force(lab: Lab) -> None:
    ns = lab.namespace()
    firewall = NftablesFirewall(CONFIG, netns=ns.name)
    await firewall.apply()
    await firewall.update_blocked(block=["10.64.0.2"])
    before = await nft_table(ns)
    broken = render_ruleset(CONFIG).replace("masquerade", "masquerade to nowhere", 1)
    with pytest.raises(NftablesError):
        await run_nft(broken, netns=ns.name)
    assert await nft_table(ns) == before


@needs("nft")
async def test_blocks_survive_someone_flushing_the_set(lab: Lab) -> None:
    ns = lab.namespace()
    firewall = NftablesFirewall(CONFIG, netns=ns.name)
    await firewall.apply()
    await firewall.update_blocked(block=["10.64.0.2", "10.64.0.3"])
    ns.run("nft", "flush", "set", "inet", "burrow", "blocked_peers_v4")
    # Deleting 10.64.0.2 from the flushed set fails in nft; the driver reloads instead.
    await firewall.update_blocked(unblock=["10.64.0.2"])
    assert "elements = { 10.64.0.3 }" in await nft_table(ns)
    assert firewall.blocked == {ipaddress.ip_address("10.64.0.3")}


@needs("nft", "sysctl")
async def test_forwarding_is_switched_on_in_the_namespace(lab: Lab) -> None:
    ns = lab.namespace()
    await ensure_forwarding(netns=ns.name)
    shown = ns.run("sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding").stdout
    assert shown.split() == ["1", "1"]


# A TCP server that answers each connection with the address it came from.
ECHO_SOURCE = """
import socket, threading
def serve(port):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen()
    while True:
        c, addr = s.accept()
        c.sendall(addr[0].removeprefix("::ffff:").encode()); c.close()
for port in (8080, 25):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CONNECT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])) as s:
        print(s.recv(100).decode())
except OSError as exc:
    print("failed", type(exc).__name__)
"""


@needs("nft", "sysctl")
async def test_real_traffic_is_natted_port_blocked_and_peer_blocked(lab: Lab) -> None:
    # client --(stands in for the tunnel)-- node --(egress)-- far host
    client, node, far = lab.namespace(), lab.namespace(), lab.namespace()
    _, tunnel = lab.link(
        client, node, ["10.64.0.2/10", "fd42:b0::2/48"], ["10.64.0.1/10", "fd42:b0::1/48"]
    )
    egress, _ = lab.link(
        node, far, ["192.0.2.1/24", "2001:db8::1/64"], ["192.0.2.2/24", "2001:db8::2/64"]
    )
    client.ip("route", "add", "default", "via", "10.64.0.1")
    client.ip("-6", "route", "add", "default", "via", "fd42:b0::1")
    # The far host has no route back to the tunnel pool: only NAT gets answers home.
    await ensure_forwarding(netns=node.name)
    firewall = NftablesFirewall(
        FirewallConfig(
            wg_interface=tunnel,
            egress_interface=egress,
            tunnel_ipv4="10.64.0.0/10",
            tunnel_ipv6="fd42:b0::/48",
        ),
        netns=node.name,
    )
    await firewall.apply()
    server = far.spawn(sys.executable, "-c", ECHO_SOURCE)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"

    def connect(host: str, port: int, timeout: float = 1.0) -> str:
        argv = (sys.executable, "-c", CONNECT, host, str(port), str(timeout))
        return client.run(*argv).stdout.strip()

    # The first packets on fresh IPv6 veths can be lost, so the first, positive
    # checks allow a retransmission; a refusal only counts once the path works.
    assert connect("192.0.2.2", 8080, timeout=5) == "192.0.2.1"
    assert connect("2001:db8::2", 8080, timeout=5) == "2001:db8::1"
    assert connect("192.0.2.2", 25).startswith("failed")
    assert connect("2001:db8::2", 25).startswith("failed")

    await firewall.update_blocked(block=["10.64.0.2"])
    assert connect("192.0.2.2", 8080).startswith("failed")
    assert connect("2001:db8::2", 8080) == "2001:db8::1"
    await firewall.update_blocked(unblock=["10.64.0.2"])
    assert connect("192.0.2.2", 8080) == "192.0.2.1"


def test_from_the_tunnel_only_dns_and_icmp_reach_the_node() -> None:
    config = FirewallConfig.from_network(
        NetworkSpec(
            tunnel_ipv4="10.64.0.0/10",
            tunnel_ipv6="fd42:b0::/48",
            gateway_ipv4="10.64.0.1",
            gateway_ipv6="fd42:b0::1",
            dns=DnsSpec(
                resolvers=(
                    ResolverSpec(ipv4="10.64.0.1", ipv6="fd42:b0::1"),
                    ResolverSpec(ipv4="10.127.255.254", ipv6="fd42:b0::fffe", lists=("ads",)),
                )
            ),
        ),
        wg_interface="bwg0",
        egress_interface="eth0",
    )
    assert config.service_addresses == (
        "10.64.0.1",
        "fd42:b0::1",
        "10.127.255.254",
        "fd42:b0::fffe",
    )
    text = render_ruleset(config)
    # Only the tunnel's packets leave the input hook's chain; other interfaces are untouched.
    assert chain(text, "input")[1:] == ['iifname vmap { "bwg0" : goto wireguard_input }']
    assert chain(text, "wireguard_input")[-1] == "goto tunnel_input"
    lines = chain(text, "tunnel_input")
    assert (
        "ip daddr { 10.64.0.1, 10.127.255.254 } meta l4proto { tcp, udp } th dport 53 accept"
        in lines
    )
    assert "ip6 daddr { fd42:b0::1, fd42:b0::fffe } meta l4proto ipv6-icmp accept" in lines
    # Everything else from the tunnel to the node ends here.
    assert lines[-1] == "counter drop"


TCP_LISTEN = """
import socket, threading
def serve(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen()
    while True:
        c, _ = s.accept()
        c.sendall(b"open")
        c.close()
for port in (53, 8080, 22):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

TCP_PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])) as s:
        print(s.recv(10).decode())
except OSError as exc:
    print("failed", type(exc).__name__)
"""


@needs("nft", "sysctl")
async def test_a_tunnel_reaches_only_dns_on_the_node(lab: Lab) -> None:
    client, node = lab.namespace(), lab.namespace()
    _, tunnel = lab.link(
        client, node, ["10.64.0.2/10", "fd42:b0::2/48"], ["10.64.0.1/10", "fd42:b0::1/48"]
    )
    firewall = NftablesFirewall(
        FirewallConfig(
            wg_interface=tunnel,
            egress_interface=tunnel,
            tunnel_ipv4="10.64.0.0/10",
            tunnel_ipv6="fd42:b0::/48",
            service_addresses=("10.64.0.1", "fd42:b0::1"),
        ),
        netns=node.name,
    )
    server = node.spawn(sys.executable, "-c", TCP_LISTEN)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"

    def probe(host: str, port: int, timeout: float = 1.0) -> str:
        argv = (sys.executable, "-c", TCP_PROBE, host, str(port), str(timeout))
        return client.run(*argv).stdout.strip()

    # Before the firewall every service of the node answers the tunnel (today's hole).
    assert probe("10.64.0.1", 8080, timeout=5) == "open"
    await firewall.apply()
    assert probe("10.64.0.1", 53) == "open"
    assert probe("fd42:b0::1", 53, timeout=5) == "open"
    for port in (8080, 22):
        assert probe("10.64.0.1", port).startswith("failed")
        assert probe("fd42:b0::1", port).startswith("failed")


@needs("nft")
async def test_other_tunnels_get_the_same_rules_as_wireguards(lab: Lab) -> None:
    ns = lab.namespace()
    config = FirewallConfig(
        wg_interface="bwg0",
        egress_interface="eth0",
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        service_addresses=("10.64.0.1",),
        other_tunnels=("ipsec0",),
    )
    text = render_ruleset(config)
    assert chain(text, "forward")[1:] == [
        'iifname vmap { "bwg0" : jump from_wireguard, "ipsec0" : jump from_tunnel }',
        'oifname vmap { "bwg0" : jump to_wireguard, "ipsec0" : jump to_tunnel }',
    ]
    assert chain(text, "input")[1:] == [
        'iifname vmap { "bwg0" : goto wireguard_input, "ipsec0" : goto tunnel_input }'
    ]
    firewall = NftablesFirewall(config, netns=ns.name)
    await firewall.apply()
    listed = " ".join(await nft_table(ns))
    assert '"ipsec0" : jump from_tunnel' in listed
    assert "tcp dport 25 counter packets 0 bytes 0 drop" in listed
    with pytest.raises(ValueError, match="interface"):
        dataclasses.replace(config, other_tunnels=("bad name",))


# --- deterministic and random NAT (RFC 7422) -----------------------------------------------

BLOCKS = NatSpec(mode="deterministic", ports_per_device=100, devices_per_egress_ip=4)


def nat_config(nat: NatSpec | None, **changes: object) -> FirewallConfig:
    fields: dict[str, object] = {
        "wg_interface": "bwg0",
        "egress_interface": "eth0",
        "tunnel_ipv4": "10.64.0.0/10",
        "tunnel_ipv6": "fd42:b0::/48",
        "egress_ipv4": "192.0.2.10",
        "egress_ipv6": "2001:db8::10",
        "nat": nat,
    }
    return FirewallConfig(**{**fields, **changes})  # type: ignore[arg-type]


def test_deterministic_nat_gives_each_tunnel_address_its_own_block() -> None:
    lines = rules(render_ruleset(nat_config(BLOCKS)))
    assert (
        'oifname "eth0" ip saddr 10.64.0.2-10.64.0.5 meta l4proto { tcp, udp } snat ip to ip '
        "saddr map { 10.64.0.2 : 192.0.2.10 . 1024-1123, 10.64.0.3 : 192.0.2.10 . 1124-1223, "
        "10.64.0.4 : 192.0.2.10 . 1224-1323, 10.64.0.5 : 192.0.2.10 . 1324-1423 }"
    ) in lines
    assert (
        'oifname "eth0" ip6 saddr fd42:b0::3 meta l4proto { tcp, udp } '
        "snat ip6 to [2001:db8::10]:1124-1223"
    ) in lines
    # Beyond the blocks nobody leaves a tunnel.
    assert (
        'oifname "eth0" ip saddr 10.64.0.0/10 ip saddr != 10.64.0.2-10.64.0.5 counter drop'
    ) in chain(render_ruleset(nat_config(BLOCKS)), "from_tunnel")


def test_deterministic_nat_spreads_blocks_over_several_egress_addresses() -> None:
    config = nat_config(BLOCKS, egress_ipv4_extra=("192.0.2.11",))
    lines = rules(render_ruleset(config))
    assert (
        'oifname "eth0" ip saddr 10.64.0.2-10.64.0.9 meta l4proto { tcp, udp } snat ip to ip '
        "saddr map { 10.64.0.2 : 192.0.2.10 . 1024-1123, 10.64.0.3 : 192.0.2.10 . 1124-1223, "
        "10.64.0.4 : 192.0.2.10 . 1224-1323, 10.64.0.5 : 192.0.2.10 . 1324-1423, "
        "10.64.0.6 : 192.0.2.11 . 1024-1123, 10.64.0.7 : 192.0.2.11 . 1124-1223, "
        "10.64.0.8 : 192.0.2.11 . 1224-1323, 10.64.0.9 : 192.0.2.11 . 1324-1423 }"
    ) in lines
    from_tunnel = chain(render_ruleset(config), "from_tunnel")
    assert (
        'oifname "eth0" ip saddr 10.64.0.0/10 ip saddr != 10.64.0.2-10.64.0.9 counter drop'
    ) in from_tunnel
    # One IPv6 egress address holds one address's blocks; past them IPv6 is dropped.
    assert (
        'oifname "eth0" ip6 saddr fd42:b0::/48 ip6 saddr != fd42:b0::2-fd42:b0::5 counter drop'
    ) in from_tunnel


def test_the_further_egress_addresses_come_from_the_network_spec() -> None:
    network = NetworkSpec(
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        gateway_ipv4="10.64.0.1",
        gateway_ipv6="fd42:b0::1",
        egress_ipv4="192.0.2.10",
        egress_ipv4_extra=("192.0.2.11", "192.0.2.12"),
        nat=BLOCKS,
    )
    config = FirewallConfig.from_network(network, wg_interface="bwg0", egress_interface="eth0")
    assert config.egress_ipv4_extra == ("192.0.2.11", "192.0.2.12")
    with pytest.raises(ValueError, match="IPv4"):
        nat_config(BLOCKS, egress_ipv4_extra=("2001:db8::1",))


@needs("nft")
async def test_deterministic_nat_loads_into_nft_for_both_families(lab: Lab) -> None:
    ns = lab.namespace()
    configs = (
        nat_config(BLOCKS),
        nat_config(BLOCKS, egress_ipv4=None, egress_ipv6=None),
        nat_config(BLOCKS, egress_ipv4_extra=("192.0.2.11",)),
    )
    for config in configs:
        await NftablesFirewall(config, netns=ns.name).apply()
        listed = await nft_table(ns)
        assert any("fd42:b0::5" in line for line in listed)
    assert any("10.64.0.9 : 192.0.2.11 . 1324-1423" in line for line in listed)


def test_deterministic_nat_without_an_egress_address_masquerades_per_block() -> None:
    lines = rules(render_ruleset(nat_config(BLOCKS, egress_ipv4=None)))
    assert (
        'oifname "eth0" ip saddr 10.64.0.3 meta l4proto { tcp, udp } masquerade to :1124-1223'
        in lines
    )


def test_random_nat_picks_a_fresh_port_per_connection() -> None:
    lines = rules(render_ruleset(nat_config(NatSpec(mode="random"))))
    assert 'oifname "eth0" ip saddr 10.64.0.0/10 snat ip to 192.0.2.10 fully-random' in lines
    assert not any(" map " in line for line in lines)


def test_the_blocks_come_from_the_network_spec() -> None:
    network = NetworkSpec(
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        gateway_ipv4="10.64.0.1",
        gateway_ipv6="fd42:b0::1",
        nat=BLOCKS,
    )
    config = FirewallConfig.from_network(network, wg_interface="bwg0", egress_interface="eth0")
    assert config.nat == BLOCKS


def test_blocks_that_overrun_the_port_range_are_refused() -> None:
    with pytest.raises(ValueError, match="past port 65535"):
        NatSpec(mode="deterministic", ports_per_device=1000, devices_per_egress_ip=65)


ECHO_PORT_SOURCE = """
import socket, threading
s = socket.socket(socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
print("ready", flush=True)
while True:
    c, addr = s.accept()
    c.sendall(f"{addr[0]} {addr[1]}".encode()); c.close()
"""

# Opens N connections from one source address; prints what the far host saw, one a line.
CONNECT_MANY = """
import socket, sys
source, host, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(count):
    try:
        s = socket.create_connection((host, 8080), 3, source_address=(source, 0))
        print(s.recv(100).decode()); s.close()
    except OSError as exc:
        print("failed", type(exc).__name__)
"""


@needs("nft", "sysctl")
async def test_real_connections_leave_from_their_own_block_or_from_random_ports(lab: Lab) -> None:
    client, node, far = lab.namespace(), lab.namespace(), lab.namespace()
    inside, tunnel = lab.link(client, node, ["10.64.0.2/10"], ["10.64.0.1/10"])
    for extra in ("10.64.0.3/10", "10.64.0.9/10"):
        client.ip("addr", "add", extra, "dev", inside)
    egress, _far = lab.link(node, far, ["192.0.2.1/24"], ["192.0.2.2/24"])
    client.ip("route", "add", "default", "via", "10.64.0.1")
    await ensure_forwarding(netns=node.name)
    config = nat_config(
        BLOCKS,
        wg_interface=tunnel,
        egress_interface=egress,
        egress_ipv4="192.0.2.1",
        egress_ipv6=None,
    )
    firewall = NftablesFirewall(config, netns=node.name)
    await firewall.apply()
    server = far.spawn(sys.executable, "-c", ECHO_PORT_SOURCE)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"

    def seen(source: str, count: int) -> list[tuple[str, int]]:
        out = client.run(sys.executable, "-c", CONNECT_MANY, source, "192.0.2.2", str(count))
        found = []
        for line in out.stdout.split("\n"):
            if line.strip():
                address, port = line.split()
                found.append((address, int(port)) if address != "failed" else (address, -1))
        return found

    first = seen("10.64.0.2", 12)
    assert len(first) == 12
    assert all(a == "192.0.2.1" and 1024 <= p <= 1123 for a, p in first), first
    second = seen("10.64.0.3", 12)
    assert len(second) == 12
    assert all(a == "192.0.2.1" and 1124 <= p <= 1223 for a, p in second), second
    # 10.64.0.9 is past the four blocks: the node refuses its traffic.
    assert seen("10.64.0.9", 1) == [("failed", -1)]

    await firewall.apply(
        nat_config(
            NatSpec(mode="random"),
            wg_interface=tunnel,
            egress_interface=egress,
            egress_ipv4="192.0.2.1",
            egress_ipv6=None,
        )
    )
    ports = [p for _a, p in seen("10.64.0.2", 12)]
    assert len(ports) == 12
    assert all(p > 0 for p in ports)
    # Twelve random ports from 64,000 never all land in one 100-port block.
    assert len({(p - 1024) // 100 for p in ports}) > 1, ports


@needs("nft", "sysctl")
async def test_real_connections_leave_from_the_second_egress_address_past_the_first(
    lab: Lab,
) -> None:
    client, node, far = lab.namespace(), lab.namespace(), lab.namespace()
    inside, tunnel = lab.link(client, node, ["10.64.0.2/10"], ["10.64.0.1/10"])
    for extra in ("10.64.0.6/10", "10.64.0.9/10", "10.64.0.10/10"):
        client.ip("addr", "add", extra, "dev", inside)
    egress, _far = lab.link(node, far, ["192.0.2.1/24"], ["192.0.2.2/24"])
    node.ip("addr", "add", "192.0.2.3/24", "dev", egress)
    client.ip("route", "add", "default", "via", "10.64.0.1")
    await ensure_forwarding(netns=node.name)
    config = nat_config(
        BLOCKS,
        wg_interface=tunnel,
        egress_interface=egress,
        egress_ipv4="192.0.2.1",
        egress_ipv4_extra=("192.0.2.3",),
        egress_ipv6=None,
    )
    await NftablesFirewall(config, netns=node.name).apply()
    server = far.spawn(sys.executable, "-c", ECHO_PORT_SOURCE)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"

    def seen(source: str, count: int) -> list[tuple[str, int]]:
        out = client.run(sys.executable, "-c", CONNECT_MANY, source, "192.0.2.2", str(count))
        found = []
        for line in out.stdout.split("\n"):
            if line.strip():
                address, port = line.split()
                found.append((address, int(port)) if address != "failed" else (address, -1))
        return found

    first = seen("10.64.0.2", 6)
    assert len(first) == 6
    assert all(a == "192.0.2.1" and 1024 <= p <= 1123 for a, p in first), first
    # Offset 6 is the fifth device: the first block of the second address; offset 9 its last.
    fifth = seen("10.64.0.6", 6)
    assert len(fifth) == 6
    assert all(a == "192.0.2.3" and 1024 <= p <= 1123 for a, p in fifth), fifth
    eighth = seen("10.64.0.9", 6)
    assert all(a == "192.0.2.3" and 1324 <= p <= 1423 for a, p in eighth), eighth
    # Past both addresses' eight blocks: refused.
    assert seen("10.64.0.10", 1) == [("failed", -1)]


# --- a WireGuard block is for WireGuard only -------------------------------------------------


def test_a_wireguard_block_matches_only_wireguard_interfaces() -> None:
    config = dataclasses.replace(CONFIG, more_wg_interfaces=("bwg1",), other_tunnels=("bovpn0",))
    text = render_ruleset(config)
    assert chain(text, "forward")[1:] == [
        'iifname vmap { "bwg0" : jump from_wireguard, "bwg1" : jump from_wireguard, '
        '"bovpn0" : jump from_tunnel }',
        'oifname vmap { "bwg0" : jump to_wireguard, "bwg1" : jump to_wireguard, '
        '"bovpn0" : jump to_tunnel }',
    ]
    # The blocked sets are read in WireGuard's chains only.
    readers = {
        name
        for name in ("from_tunnel", "to_tunnel", "tunnel_input")
        if any("@blocked_peers" in line for line in chain(text, name))
    }
    assert readers == set()
    assert "ip saddr @blocked_peers_v4 counter drop" in chain(text, "wireguard_input")


@needs("nft", "sysctl")
async def test_a_blocked_wireguard_key_leaves_the_same_devices_openvpn_session_alone(
    lab: Lab,
) -> None:
    # The client's link stands in for an OpenVPN tun: the device's address is the same as
    # its WireGuard peer's, and WireGuard (bwg0, absent here) is the one that is blocked.
    client, node, far = lab.namespace(), lab.namespace(), lab.namespace()
    _, tun = lab.link(client, node, ["10.64.0.2/10"], ["10.64.0.1/10"])
    egress, _ = lab.link(node, far, ["192.0.2.1/24"], ["192.0.2.2/24"])
    client.ip("route", "add", "default", "via", "10.64.0.1")
    await ensure_forwarding(netns=node.name)
    firewall = NftablesFirewall(
        dataclasses.replace(CONFIG, egress_interface=egress, other_tunnels=(tun,)),
        netns=node.name,
    )
    await firewall.apply()
    server = far.spawn(sys.executable, "-c", ECHO_SOURCE)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"

    def connect(timeout: float = 1.0) -> str:
        argv = (sys.executable, "-c", CONNECT, "192.0.2.2", "8080", str(timeout))
        return client.run(*argv).stdout.strip()

    assert connect(timeout=5) == "192.0.2.1"
    await firewall.update_blocked(block=["10.64.0.2"])
    assert connect() == "192.0.2.1"
