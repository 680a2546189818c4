"""Real WireGuard tunnels through burrow nodes, governed by a real control plane.

A customer registers, starts a trial, adds a device and uses the downloaded ``.conf`` with
its own wireguard-go (``wg setconf``), exactly as a WireGuard app would. The tests share one
lab (``conftest.world``) and run in file order; each one makes its own customers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.node.netns import unique_name

from .lab import Host, NodeRun, Tunnel, World, fetch, run_db, sha256, tcp_open, upload, wait_for

# The promise under test: access ends within this many seconds of the decision.
REVOKE_SECONDS = 5.0


@pytest.fixture
def tunnels(world: World) -> Iterator[list[Tunnel]]:
    made: list[Tunnel] = []
    yield made
    for tunnel in made:
        tunnel.down()


def connect(
    world: World,
    tunnels: list[Tunnel],
    customer: Host,
    config: str,
    private_key: str | None = None,
) -> Tunnel:
    tunnel = Tunnel(world, customer, unique_name("bwc"), "")
    tunnels.append(tunnel)
    tunnel.up(config, private_key)
    return tunnel


def serves(node: NodeRun, device: dict[str, Any]) -> bool:
    return device["public_key"] in node.peers()


def device_on(world: World, node: NodeRun) -> tuple[str, dict[str, Any]]:
    """A new customer with a trial and a device; waits until ``node`` serves it."""
    token = world.new_customer()
    device = world.add_device(token, node.node_id)
    wait_for(lambda: serves(node, device), 5, "the node to serve the new device")
    return token, device


def url(world: World, version: int, path: str = "/file") -> str:
    host = world.inet.ipv4 if version == 4 else f"[{world.inet.ipv6}]"
    return f"http://{host}{path}"


def reaches_internet(customer: Host, world: World, timeout: float = 1.0) -> bool:
    return tcp_open(customer, world.inet.ipv4, 587, timeout=timeout)


def works_within(customer: Host, world: World, seconds: float) -> None:
    """The tunnel carries traffic within ``seconds`` (a fresh handshake may take a moment)."""
    wait_for(lambda: reaches_internet(customer, world), seconds, "traffic through the tunnel")


# --- 1. through the node to the internet -------------------------------------------------------


def test_a_customer_reaches_the_internet_through_the_node_unchanged(
    world: World, tunnels: list[Tunnel]
) -> None:
    node = world.nodes[0]
    customer = world.customers[0]
    _token, device = device_on(world, node)
    connect(world, tunnels, customer, device["config"])
    works_within(customer, world, 10)
    before = len(world.web_clients())

    for version in (4, 6):
        got = fetch(customer, url(world, version))
        assert got is not None, f"no download over IPv{version}"
        assert sha256(got) == sha256(world.web_file)
        sent = world.tmp / f"upload{version}"
        sent.write_bytes(os.urandom(2 * 1024 * 1024 + version))
        assert upload(customer, url(world, version, "/upload"), sent) == sha256(sent.read_bytes())

    seen = world.web_clients()[before:]
    assert sorted(set(seen)) == sorted({node.host.ipv4, node.host.ipv6})
    customer_addresses = {customer.ipv4, customer.ipv6, device["ipv4"], device["ipv6"]}
    assert not customer_addresses & set(world.web_clients())


# --- 2. blocked ports and client isolation ----------------------------------------------------


def test_port_25_is_blocked_587_works_and_customers_cannot_reach_each_other(
    world: World, tunnels: list[Tunnel]
) -> None:
    node = world.nodes[0]
    alice, bob = world.customers
    _t1, alice_device = device_on(world, node)
    _t2, bob_device = device_on(world, node)
    # Without the tunnel, port 25 is open: the block is the node's, not the lab's.
    assert tcp_open(alice, world.inet.ipv4, 25)
    connect(world, tunnels, alice, alice_device["config"])
    connect(world, tunnels, bob, bob_device["config"])
    works_within(alice, world, 10)
    works_within(bob, world, 10)

    for address in (world.inet.ipv4, world.inet.ipv6):
        assert tcp_open(alice, address, 587), f"587 to {address} should work"
        assert not tcp_open(alice, address, 25), f"25 to {address} must be blocked"

    bob_v4, bob_v6 = bob_device["ipv4"], bob_device["ipv6"]
    assert not tcp_open(alice, bob_v4, 8000)
    assert not tcp_open(alice, bob_v6, 8000)
    # Bob's listener is up: Alice reaches it at his public address, through her tunnel.
    assert tcp_open(alice, bob.ipv4, 8000)


# --- 3. access ends within seconds ------------------------------------------------------------


def _remove_device(world: World, token: str, device: dict[str, Any]) -> None:
    assert world.api is not None
    world.api.call("DELETE", f"/api/v1/devices/{device['id']}", token=token, expect=204)


def _expire_subscription(world: World, token: str, _device: dict[str, Any]) -> None:
    """The period ends now; the control plane's expiry job (every second here) does the rest."""
    from sqlalchemy import update

    from burrow.control.models import Subscription, utcnow

    assert world.api is not None
    account_id = world.api.call("GET", "/api/v1/accounts/me", token=token).json()["id"]

    async def end_period(session: Any, _runtime: Any) -> None:
        await session.execute(
            update(Subscription)
            .where(Subscription.account_id == account_id)
            .values(current_period_end=utcnow() - timedelta(seconds=1))
        )

    run_db(world.settings, end_period)


def _suspend_account(world: World, token: str, _device: dict[str, Any]) -> None:
    assert world.api is not None
    account_id = world.api.call("GET", "/api/v1/accounts/me", token=token).json()["id"]
    world.api.call(
        "POST",
        f"/api/v1/admin/accounts/{account_id}/suspend",
        token=world.admin_token,
        json={"reason": "end-to-end test"},
    )


@pytest.mark.parametrize(
    "revoke",
    [_remove_device, _expire_subscription, _suspend_account],
    ids=["device removed", "subscription expired", "account suspended"],
)
def test_losing_access_stops_traffic_within_seconds(
    world: World, tunnels: list[Tunnel], revoke: Any
) -> None:
    node = world.nodes[0]
    customer = world.customers[1]
    token, device = device_on(world, node)
    connect(world, tunnels, customer, device["config"])
    works_within(customer, world, 10)

    start = time.monotonic()
    revoke(world, token, device)
    wait_for(
        lambda: not reaches_internet(customer, world, timeout=0.3),
        REVOKE_SECONDS,
        "traffic to stop",
        interval=0.1,
    )
    assert time.monotonic() - start < REVOKE_SECONDS
    assert not serves(node, device)
    # And it stays stopped.
    time.sleep(1)
    assert not reaches_internet(customer, world)


# --- 5. one device, another node ----------------------------------------------------------------


def test_the_same_device_connects_through_a_second_node(
    world: World, tunnels: list[Tunnel]
) -> None:
    first, second = world.nodes
    customer = world.customers[0]
    token, device = device_on(world, first)
    wait_for(lambda: serves(second, device), 5, "the second node to serve the device too")
    tunnel = connect(world, tunnels, customer, device["config"])
    works_within(customer, world, 10)
    before = len(world.web_clients())
    assert fetch(customer, url(world, 4)) is not None
    tunnel.down()

    # The config for the second node has no private key (the server never keeps one): the
    # customer puts back the one they kept, as the config's comment says.
    config = world.config(token, device["id"], second.node_id)
    assert "# PrivateKey" in config
    connect(world, tunnels, customer, config, private_key=device["private_key"])
    works_within(customer, world, 10)
    got = fetch(customer, url(world, 6))
    assert got is not None
    assert sha256(got) == sha256(world.web_file)
    seen = world.web_clients()[before:]
    assert seen[0] == first.host.ipv4
    assert set(seen[1:]) == {second.host.ipv6}


# --- 4. the control plane away, wireguard-go or the agent killed --------------------------------


def test_tunnels_outlive_the_control_plane_and_the_node_converges_when_it_is_back(
    world: World, tunnels: list[Tunnel]
) -> None:
    node = world.nodes[0]
    alice, bob = world.customers
    _t1, serving = device_on(world, node)
    connect(world, tunnels, alice, serving["config"])
    works_within(alice, world, 10)
    bob_token = world.new_customer()

    world.stop_control_plane()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert reaches_internet(alice, world), (
                "a running tunnel broke without the control plane"
            )
            time.sleep(0.3)
        assert node.proc is not None
        assert node.proc.alive()

        # Back, but out of the node's reach: a device added now cannot reach it yet.
        world.ctl.cut_off(node.host)
        world.start_control_plane()
        added = world.add_device(bob_token, node.node_id)
        time.sleep(2)
        assert not serves(node, added)
        assert serves(node, serving)
        assert reaches_internet(alice, world)
    finally:
        world.ctl.cut_off(node.host, cut=False)
    wait_for(
        lambda: serves(node, added), 10, "the node to converge once it reaches the control plane"
    )
    connect(world, tunnels, bob, added["config"])
    works_within(bob, world, 10)
    assert node.peers() == world.desired_peers(node)


def test_killing_wireguard_go_restarts_it_with_every_peer_and_no_stranger(
    world: World, tunnels: list[Tunnel]
) -> None:
    node = world.nodes[0]
    customer = world.customers[0]
    _token, device = device_on(world, node)
    connect(world, tunnels, customer, device["config"])
    works_within(customer, world, 10)
    desired = world.desired_peers(node)

    old = node.wireguard_go_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(
        lambda: node.wireguard_go_pid() not in (None, old) and node.peers() == desired,
        10,
        "wireguard-go to come back with every peer",
    )
    # The client notices the lost session and shakes hands again by itself (WireGuard's
    # 15 s rule); no one touches it.
    works_within(customer, world, 30)

    # A peer nobody asked for, put on the interface behind the agent's back, goes away.
    stranger = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True)
    public = subprocess.run(
        ["wg", "pubkey"], input=stranger.stdout, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        ["wg", "set", node.interface, "peer", public, "allowed-ips", "10.127.0.9/32"], check=True
    )
    assert public in node.peers()
    wait_for(lambda: node.peers() == desired, 10, "the stranger to be removed")


def test_killing_the_agent_and_starting_it_again_serves_exactly_the_desired_peers(
    world: World, tunnels: list[Tunnel]
) -> None:
    node = world.nodes[1]
    customer = world.customers[1]
    token, staying = device_on(world, node)
    other_token, leaving = device_on(world, node)
    assert node.proc is not None
    node.proc.stop(signal.SIGKILL)
    # wireguard-go does not outlive its agent: nobody is served while it is away.
    wait_for(lambda: node.wireguard_go_pid() is None, 5, "wireguard-go to follow its agent")

    assert world.api is not None
    world.api.call("DELETE", f"/api/v1/devices/{leaving['id']}", token=other_token, expect=204)
    arrived = world.add_device(token, node.node_id, name="phone")
    node.start()
    desired = world.desired_peers(node)
    assert staying["public_key"] in desired
    assert arrived["public_key"] in desired
    assert leaving["public_key"] not in desired
    wait_for(lambda: node.peers() == desired, 20, "the restarted agent to converge")
    connect(world, tunnels, customer, arrived["config"])
    works_within(customer, world, 10)
