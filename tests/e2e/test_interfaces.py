"""A node with more devices than one WireGuard interface holds, with real wireguard-go.

The control plane runs with four devices per interface (``BURROW_PEERS_PER_INTERFACE``; in
production wireguard-go's 65,536), so the third customer's device (pool index 4) falls on the
node's second interface: its downloaded config names port 51821, the agent has started that
interface for it, and the customer's real tunnel carries traffic through it under the same
firewall (port 25 blocked). When the device leaves, the second interface goes away.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.node.netns import unique_name

from .lab import (
    Host,
    NodeRun,
    Tunnel,
    World,
    build_world,
    prepare_world,
    tcp_open,
    wait_for,
)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with build_world(tmp_path_factory.mktemp("interfaces")) as world:
        world.control_extra = {"BURROW_PEERS_PER_INTERFACE": "4"}
        prepare_world(world)
        world.start_control_plane()
        created = world.create_node(0, "ams-1", "NL", "Amsterdam")
        world.enroll_and_run([(0, created["enrollment"]["token"], created["node"]["id"])])
        node = world.nodes[0]
        wait_for(lambda: node.wireguard_go_pid() is not None, 30, "the node to serve")
        yield world


def _peers_of(interface: str) -> set[str]:
    out = subprocess.run(
        ["wg", "show", interface, "peers"], capture_output=True, text=True, timeout=10, check=False
    )
    return set(out.stdout.split()) if out.returncode == 0 else set()


def _port(config: str) -> int:
    found = re.search(r"^Endpoint = .*:(\d+)$", config, re.MULTILINE)
    assert found is not None, config
    return int(found.group(1))


def _device(world: World, node: NodeRun) -> tuple[str, dict[str, Any]]:
    token = world.new_customer()
    return token, world.add_device(token, node.node_id)


def _tunnel(world: World, host: Host, config: str, made: list[Tunnel]) -> Tunnel:
    tunnel = Tunnel(world, host, unique_name("bwc"), "")
    made.append(tunnel)
    tunnel.up(config)
    return tunnel


def test_a_device_beyond_the_first_interface_gets_the_next_port_and_a_working_tunnel(
    small_world: World,
) -> None:
    world = small_world
    node = world.nodes[0]
    second = f"{node.interface}-1"
    devices = [_device(world, node) for _ in range(3)]
    indices = [int(d["ipv4"].rsplit(".", 1)[1]) for _t, d in devices]
    assert indices == [2, 3, 4]  # the pool's first device addresses
    first_device, third_device = devices[0][1], devices[2][1]
    assert _port(first_device["config"]) == 51820
    assert _port(third_device["config"]) == 51821

    wait_for(lambda: third_device["public_key"] in _peers_of(second), 10, "the second interface")
    assert first_device["public_key"] in _peers_of(node.interface)
    assert first_device["public_key"] not in _peers_of(second)

    made: list[Tunnel] = []
    try:
        alice, bob = world.customers
        _tunnel(world, alice, first_device["config"], made)
        _tunnel(world, bob, third_device["config"], made)
        for customer in (alice, bob):
            wait_for(
                lambda c=customer: tcp_open(c, world.inet.ipv4, 587),  # type: ignore[misc]
                10,
                "traffic through the tunnel",
            )
            # The second interface is under the same firewall as the first.
            assert not tcp_open(customer, world.inet.ipv4, 25)

        # The third device leaves: its interface goes, the first tunnel keeps working.
        token = devices[2][0]
        assert world.api is not None
        world.api.call("DELETE", f"/api/v1/devices/{third_device['id']}", token=token, expect=204)
        wait_for(
            lambda: (
                subprocess.run(
                    ["wg", "show", second], capture_output=True, timeout=10, check=False
                ).returncode
                != 0
            ),
            10,
            "the second interface to go",
        )
        assert tcp_open(alice, world.inet.ipv4, 587)
    finally:
        for tunnel in made:
            tunnel.down()
