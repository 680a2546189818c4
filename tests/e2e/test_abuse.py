"""Abuse complaints against real traffic through real wireguard-go tunnels and the node's NAT.

Under the metered example policy (deterministic NAT, RFC 7422) two customers' devices open
connections to the internet host, which notes the address and port each came from; every
connection leaves from its device's own port block, and a complaint naming what the host saw
is traced to the right account. After the retention the same trace finds nothing. Under the
strict example policy the host sees ports outside any fixed block and the trace is refused
with the reason no trace is possible.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.node.netns import unique_name

from .lab import PYTHON, Host, NodeRun, Tunnel, World, fetch, run_db, wait_for

PORT = 9100
CONNECTIONS = 8
BLOCK = 1000  # the example policy's nat_ports_per_device
FIRST_PORT = 1024

# On the internet host: answers each connection with the address and port it came from, and
# notes them with the time, as a complainant's server log would.
RECORDER = """
import socket, sys, time
log = open(sys.argv[1], "a", buffering=1)
s = socket.socket(socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(64)
print("ready", flush=True)
while True:
    c, (address, port) = s.accept()
    log.write(f"{address} {port} {int(time.time())}\\n")
    c.sendall(f"{address} {port}".encode()); c.close()
"""

# On a customer: N connections to the host, one answer a line ("address port" or "failed").
CONNECT = """
import socket, sys
for _ in range(int(sys.argv[3])):
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), 5) as s:
            print(s.recv(100).decode())
    except OSError as exc:
        print("failed", type(exc).__name__)
"""


@dataclass
class Customer:
    token: str
    account_id: int
    device: dict[str, Any]
    tunnel: Tunnel


@pytest.fixture
def tunnels() -> Iterator[list[Tunnel]]:
    made: list[Tunnel] = []
    yield made
    for tunnel in made:
        tunnel.down()


def start_recorder(world: World) -> None:
    log = world.tmp / "seen.log"
    if log.exists():
        return
    log.touch()
    proc = world.spawn(world.inet.ns, "recorder", PYTHON, "-c", RECORDER, str(log), str(PORT))
    wait_for(lambda: "ready" in proc.output(), 10, "the internet host's recorder")


def connect(world: World, host: Host, count: int) -> list[tuple[str, int]]:
    """What the internet host saw of ``count`` connections from ``host``."""
    out = host.ns.run(PYTHON, "-c", CONNECT, world.inet.ipv4, str(PORT), str(count))
    seen = []
    for line in out.stdout.splitlines():
        address, port = line.split()
        assert address != "failed", out.stdout
        seen.append((address, int(port)))
    return seen


def seen_log(world: World) -> list[tuple[str, int, int]]:
    lines = (world.tmp / "seen.log").read_text().splitlines()
    return [(a, int(p), int(t)) for a, p, t in (line.split() for line in lines)]


def connected(world: World, tunnels: list[Tunnel], host: Host, node: NodeRun) -> Customer:
    assert world.api is not None
    token = world.new_customer()
    account_id = world.api.call("GET", "/api/v1/accounts/me", token=token).json()["id"]
    device = world.add_device(token, node.node_id)
    wait_for(lambda: device["public_key"] in node.peers(), 5, "the node to serve the device")
    tunnel = Tunnel(world, host, unique_name("bwc"), "")
    tunnels.append(tunnel)
    tunnel.up(world.config(token, device["id"], node.node_id), device["private_key"])
    inet = world.inet.ipv4
    wait_for(lambda: fetch(host, f"http://{inet}/file", 2) == world.web_file, 10, "a download")
    return Customer(token, account_id, device, tunnel)


def block_of(world: World, device: dict[str, Any]) -> range:
    pool = ipaddress.ip_network(world.settings.tunnel_ipv4_pool)
    offset = int(ipaddress.ip_address(device["ipv4"])) - int(pool.network_address)
    first = FIRST_PORT + (offset - 2) * BLOCK
    return range(first, first + BLOCK)


def complain(world: World, address: str, port: int, at: int) -> dict[str, Any]:
    assert world.api is not None
    clauses = world.api.call("GET", "/api/v1/admin/terms-clauses", token=world.admin_token)
    body = {
        "clause": clauses.json()["clauses"][0],
        "source": "abuse@victim.example",
        "egress_ip": address,
        "port": port,
        "seen_at": datetime.fromtimestamp(at, UTC).isoformat(),
        "evidence": f"{address}:{port} probed our server",
    }
    recorded: dict[str, Any] = world.api.call(
        "POST", "/api/v1/admin/abuse/complaints", token=world.admin_token, expect=201, json=body
    ).json()
    return recorded


def trace(world: World, complaint_id: int) -> dict[str, Any]:
    assert world.api is not None
    found: dict[str, Any] = world.api.call(
        "POST", f"/api/v1/admin/abuse/complaints/{complaint_id}/trace", token=world.admin_token
    ).json()
    return found


def test_metered_a_complaint_names_the_account_and_is_gone_after_the_retention(
    metered_world: World, tunnels: list[Tunnel]
) -> None:
    world = metered_world
    start_recorder(world)
    node = world.nodes[0]
    alice = connected(world, tunnels, world.customers[0], node)
    bob = connected(world, tunnels, world.customers[1], node)
    seen = {c.account_id: connect(world, c.tunnel.host, CONNECTIONS) for c in (alice, bob)}

    # Every connection left from the node's shared address, from its own device's block.
    for customer in (alice, bob):
        block = block_of(world, customer.device)
        assert len(seen[customer.account_id]) == CONNECTIONS
        for address, port in seen[customer.account_id]:
            assert address == node.host.ipv4
            assert port in block, (port, block)
    assert block_of(world, alice.device) != block_of(world, bob.device)

    # A complaint quotes one line of what the host logged; the trace names Bob's account.
    bob_port = seen[bob.account_id][3][1]
    (line,) = [entry for entry in seen_log(world) if entry[1] == bob_port]
    complaint = complain(world, *line)
    found = trace(world, complaint["id"])
    assert found["outcome"] == "traced", found
    assert found["account_id"] == bob.account_id
    assert found["device_id"] == bob.device["id"]
    assert found["tunnel_ipv4"] == bob.device["ipv4"]

    # Bob removes the device; once the retention has passed, nothing is left to trace with.
    assert world.api is not None
    world.api.call("DELETE", f"/api/v1/devices/{bob.device['id']}", token=bob.token, expect=204)
    later = datetime.now(UTC) + timedelta(days=world.policy.privacy.address_history_retention_days)
    later += timedelta(hours=1)

    async def after_retention(session: Any, runtime: Any) -> tuple[int, Any]:
        from burrow.control.abuse.service import abuse
        from burrow.control.audit.service import CliOperator
        from burrow.control.devices.service import device

        purged = await device.purge_address_history(session, runtime, later)
        return purged, await abuse.trace(
            session, runtime, CliOperator("e2e"), complaint["id"], later
        )

    purged, gone = run_db(world.settings, after_retention)
    assert purged == 1
    assert gone.outcome == "not_found"
    assert gone.account_id is None

    async def holdings(session: Any, _runtime: Any) -> list[str]:
        from sqlalchemy import select

        from burrow.control.models import AddressHolding

        rows = await session.scalars(select(AddressHolding.ipv4))
        return list(rows.all())

    # Only Alice's device, which she still holds, is left in the history.
    assert run_db(world.settings, holdings) == [alice.device["ipv4"]]


def test_strict_the_host_sees_random_ports_and_the_trace_is_refused(
    strict_world: World, tunnels: list[Tunnel]
) -> None:
    world = strict_world
    start_recorder(world)
    node = world.nodes[0]
    carol = connected(world, tunnels, world.customers[0], node)
    seen = connect(world, carol.tunnel.host, CONNECTIONS)
    assert {address for address, _port in seen} == {node.host.ipv4}
    ports = [port for _address, port in seen]
    # Random per connection: the ports spread over more than one block, and outside Carol's.
    assert len({(p - FIRST_PORT) // BLOCK for p in ports}) > 1, ports
    assert not all(p in block_of(world, carol.device) for p in ports), ports

    address, port, at = seen_log(world)[-1]
    found = trace(world, complain(world, address, port, at)["id"])
    assert found["outcome"] == "untraceable", found
    assert found["account_id"] is None
    assert "cannot trace this complaint to a customer, by construction" in found["reason"]
    assert f"{address} is a shared address" in found["reason"]
