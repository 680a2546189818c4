"""DNS on the node, end to end: real tunnels, the node's resolver, an authoritative NSD.

The lab's internet host runs NSD (Debian's) for ``lab.test``; every node's resolver is told
to ask it for that zone (a stub zone, ``BURROW_NODE_RESOLVER_STUB_ZONES``). The policy is the
strict seed's example, whose ``[dns]`` section names three filter lists (here, the lab's own).
Customers resolve through their own wireguard-go tunnels with ``dig``, over IPv4 and IPv6, UDP
and TCP.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.node.netns import unique_name
from tests.support.nsd import write_nsd

from .lab import (
    BURROW,
    HERE,
    PYTHON,
    ROOT,
    Host,
    Tunnel,
    World,
    build_world,
    prepare_world,
    start_nodes,
    tcp_open,
    wait_for,
)

ADS = "# the lab's ad servers\nads.lab.test\nnot a domain name\n"
GATEWAYS = "10.64.0.1, fd42:b0::1"
PROBE_PORT = 2525


@pytest.fixture(scope="module")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dns")
    policy = tmp / "policy.toml"
    strict = (ROOT / "examples" / "policies" / "strict-no-logs.toml").read_text()
    # The strict example policy as it is: its [dns] lists live next to it, so here the lab's.
    policy.write_text(strict)
    (tmp / "dns").mkdir()
    (tmp / "dns" / "ads.txt").write_text(ADS)
    (tmp / "dns" / "trackers.txt").write_text("")
    (tmp / "dns" / "malware.txt").write_text("")
    with build_world(tmp, customers=2) as world:
        world.node_extra = {
            "BURROW_NODE_RESOLVER_STUB_ZONES": json.dumps({"lab.test.": [world.inet.ipv4]}),
            "BURROW_NODE_RUNTIME_DIR": str(tmp / "run"),
        }
        prepare_world(world, policy)
        world.spawn(
            world.inet.ns, "nsd", *write_nsd(tmp / "nsd", [world.inet.ipv4, world.inet.ipv6])
        )
        world.start_control_plane()
        start_nodes(world)
        # A service on the node that customers must not reach through their tunnels.
        node = world.node_hosts[0]
        world.spawn(
            node.ns, "node-service", PYTHON, str(HERE / "internet.py"), "--banner", str(PROBE_PORT)
        )
        yield world


@pytest.fixture
def tunnels() -> Iterator[list[Tunnel]]:
    made: list[Tunnel] = []
    yield made
    for tunnel in made:
        tunnel.down()


def dig(host: Host, server: str, name: str, kind: str = "A", *, tcp: bool = False) -> str:
    """``STATUS answers`` of one query, e.g. ``NOERROR 192.0.2.80`` or ``NXDOMAIN``."""
    argv = [
        "dig",
        "+time=2",
        "+tries=1",
        "+noall",
        "+answer",
        "+comments",
        f"@{server}",
        name,
        kind,
    ]
    if tcp:
        argv.insert(1, "+tcp")
    out = host.ns.run(*argv, check=False).stdout
    status = re.search(r"status: (\w+)", out)
    answers = [line.split()[-1] for line in out.splitlines() if line and not line.startswith(";")]
    return " ".join([status.group(1) if status else "NO-ANSWER", *answers])


def dns_line(config: str) -> str:
    found = re.search(r"^DNS = (.+)$", config, re.MULTILINE)
    assert found is not None, config
    return found.group(1)


def connected(
    world: World, tunnels: list[Tunnel], customer: Host, **device: Any
) -> tuple[str, dict[str, Any], str]:
    """A new customer's device (with ``device`` fields) on node 0, its tunnel up; its config."""
    node = world.nodes[0]
    assert world.api is not None
    token = world.new_customer()
    made = world.api.call(
        "POST", "/api/v1/devices", token=token, expect=201,
        json={"name": "laptop", "node_id": node.node_id, **device},
    ).json()  # fmt: skip
    wait_for(lambda: made["public_key"] in node.peers(), 10, "the node to serve the device")
    config = world.config(token, made["id"], node.node_id)
    tunnel = Tunnel(world, customer, unique_name("bwc"), "")
    tunnels.append(tunnel)
    tunnel.up(config, made["private_key"])
    return token, made, config


def test_names_resolve_through_the_tunnel(dns_world: World, tunnels: list[Tunnel]) -> None:
    world = dns_world
    customer = world.customers[0]
    _, _, config = connected(world, tunnels, customer)
    # The configuration names the node's resolver, which now answers there.
    assert dns_line(config) == GATEWAYS
    wait_for(
        lambda: dig(customer, "10.64.0.1", "www.lab.test") == "NOERROR 192.0.2.80",
        20,
        "the node's resolver to answer through the tunnel",
    )
    assert dig(customer, "fd42:b0::1", "www.lab.test", "AAAA") == "NOERROR 2001:db8:ff::80"
    assert dig(customer, "10.64.0.1", "www.lab.test", tcp=True) == "NOERROR 192.0.2.80"
    assert dig(customer, "fd42:b0::1", "ok.lab.test", tcp=True) == "NOERROR 192.0.2.81"
    # Unfiltered: the ads name answers here.
    assert dig(customer, "10.64.0.1", "ads.lab.test") == "NOERROR 192.0.2.82"


def test_the_ads_filter_is_chosen_by_address(dns_world: World, tunnels: list[Tunnel]) -> None:
    world = dns_world
    assert world.api is not None
    customer = world.customers[1]
    token, device, config = connected(world, tunnels, customer, dns_filters=["ads"])
    resolver4, resolver6 = dns_line(config).split(", ")
    assert (resolver4, resolver6) != tuple(GATEWAYS.split(", "))
    wait_for(
        lambda: dig(customer, resolver4, "www.lab.test") == "NOERROR 192.0.2.80",
        20,
        "the filtering resolver to answer",
    )
    for name in ("ads.lab.test", "x.ads.lab.test", "deep.x.ads.lab.test"):
        assert dig(customer, resolver4, name) == "NXDOMAIN", name
        assert dig(customer, resolver6, name, "AAAA") == "NXDOMAIN", name
    assert dig(customer, resolver4, "adsnot.lab.test") == "NOERROR 192.0.2.85"
    assert dig(customer, resolver6, "www.lab.test", "AAAA") == "NOERROR 2001:db8:ff::80"

    # Changing the device's filters changes its configuration.
    world.api.call(
        "PUT", f"/api/v1/devices/{device['id']}/dns-filters", token=token, expect=200,
        json={"filters": []},
    )  # fmt: skip
    assert dns_line(world.config(token, device["id"], world.nodes[0].node_id)) == GATEWAYS
    world.api.call(
        "PUT", f"/api/v1/devices/{device['id']}/dns-filters", token=token, expect=200,
        json={"filters": ["malware", "ads", "trackers"]},
    )  # fmt: skip
    both = dns_line(world.config(token, device["id"], world.nodes[0].node_id))
    assert both not in (GATEWAYS, dns_line(config))
    assert dig(customer, both.split(", ")[0], "x.ads.lab.test") == "NXDOMAIN"


def test_only_dns_reaches_the_node_from_a_tunnel(dns_world: World, tunnels: list[Tunnel]) -> None:
    world = dns_world
    node = world.node_hosts[0]
    customer = world.customers[0]
    # The node's service is up: reachable from outside the tunnel.
    wait_for(lambda: tcp_open(customer, node.ipv4, PROBE_PORT), 10, "the node's service")
    connected(world, tunnels, customer)
    wait_for(lambda: dig(customer, "10.64.0.1", "ok.lab.test") == "NOERROR 192.0.2.81", 20, "DNS")
    # (The node's public address is routed around the tunnel, as wg-quick does.)
    for address in ("10.64.0.1", "fd42:b0::1"):
        assert not tcp_open(customer, address, PROBE_PORT), address
    # The agent's resolver upstream (Unbound) is on the node's loopback only.
    assert dig(customer, "10.64.0.1", "ok.lab.test", tcp=True) == "NOERROR 192.0.2.81"
    assert not tcp_open(customer, "10.64.0.1", 5335)


def audit(world: World) -> subprocess.CompletedProcess[str]:
    argv = [BURROW, "audit"]
    for node in world.nodes:
        argv += ["--node-state-dir", str(node.state_dir)]
    return subprocess.run(
        argv, env={**os.environ, **world.control_env()},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def resolver_pids(world: World, program: str) -> list[int]:
    found = []
    for pid in world.node_hosts[0].ns.pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode()).name == program:
            found.append(pid)
    return found


def test_the_audit_finds_nothing_until_query_logging_is_switched_on(
    dns_world: World, tunnels: list[Tunnel]
) -> None:
    world = dns_world
    customer = world.customers[0]
    connected(world, tunnels, customer)
    wait_for(lambda: dig(customer, "10.64.0.1", "www.lab.test") == "NOERROR 192.0.2.80", 20, "DNS")
    clean = audit(world)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    running = re.search(r"(\d+) running resolvers", clean.stdout)
    assert running is not None
    # Two nodes: Unbound, and a dnsmasq for no filter and for each of the four choices.
    assert int(running.group(1)) >= 12
    # Nothing of the queries was written anywhere the node keeps files.
    for path in (world.tmp / "run").rglob("*"):
        if path.is_file():
            assert b"www.lab.test" not in path.read_bytes(), path

    # An operator switches query logging on by hand and restarts that dnsmasq.
    conf = next((world.tmp / "run").rglob("dnsmasq-0.conf"))
    conf.write_text(conf.read_text() + "log-queries\n")
    for pid in resolver_pids(world, "dnsmasq"):
        os.kill(pid, signal.SIGTERM)
    time.sleep(1)
    dirty = audit(world)
    assert dirty.returncode != 0, dirty.stdout
    assert "query logging: log-queries" in dirty.stdout
