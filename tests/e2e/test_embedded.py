"""All-in-one: ``burrow serve`` with ``BURROW_EMBEDDED_NODE`` is a complete VPN provider."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.node.netns import unique_name

from .lab import Tunnel, World, build_world, prepare_world, tcp_open, wait_for


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with build_world(tmp_path_factory.mktemp("embedded")) as world:
        prepare_world(world)
        yield world


def test_serve_with_an_embedded_node_serves_customers(single: World) -> None:
    world = single
    interface = unique_name("bwl")
    forwarding = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
    world.ctl.ns.run("sysctl", "-q", "-w", *(f"{name}=0" for name in forwarding))
    world.start_control_plane(
        BURROW_EMBEDDED_NODE="true",
        BURROW_EMBEDDED_NODE_NAME="box",
        BURROW_NODE_STATE_DIR=str(world.tmp / "embedded-node"),
        BURROW_NODE_INTERFACE=interface,
        BURROW_NODE_REPORT_INTERVAL_SECONDS="1",
    )
    assert world.api is not None

    def online() -> list[dict[str, Any]]:
        assert world.api is not None
        nodes = world.api.call("GET", "/api/v1/admin/nodes", token=world.admin_token).json()
        return [n for n in nodes if n["name"] == "box" and n["health"]["state"] == "online"]

    wait_for(lambda: bool(online()), 20, "the embedded node to enroll and report")
    node = online()[0]
    # Customers reach it where the control plane is published.
    assert node["endpoint_host"] == world.ctl.ipv4

    token = world.new_customer()
    device = world.add_device(token, node["id"])
    customer = world.customers[0]
    tunnel = Tunnel(world, customer, unique_name("bwc"), "")
    try:
        tunnel.up(device["config"])
        wait_for(lambda: tcp_open(customer, world.inet.ipv4, 587), 10, "traffic through it")
    finally:
        tunnel.down()

    # Stopping the server stops the node with it: no interface, no firewall table left.
    assert world.serve is not None
    world.serve.stop(signal.SIGTERM, grace=10)
    # uvicorn ends by re-raising the signal it caught: -SIGTERM is a clean stop.
    assert world.serve.popen.returncode in (0, -signal.SIGTERM), world.serve.output()[-2000:]
    assert "node agent stopped" in world.serve.output()
    assert not Path(f"/var/run/wireguard/{interface}.sock").exists()
    links = world.ctl.ns.ip("link", "show").stdout
    assert interface not in links
    tables = world.ctl.ns.run("nft", "list", "tables").stdout
    assert "burrow" not in tables
    # The forwarding it switched on is off again, and the output says what was put back.
    values = world.ctl.ns.run("sysctl", "-n", *forwarding).stdout.split()
    assert values == ["0", "0"]
    said = [line for line in world.serve.output().splitlines() if "put back" in line]
    assert len(said) == 1, world.serve.output()[-2000:]
    assert "net.ipv4.ip_forward=0" in said[0]
    assert f"interface {interface} removed" in said[0]
    assert "nftables table removed" in said[0]
    # The one file the node keeps, readable by root only.
    identity = world.tmp / "embedded-node" / "identity.json"
    assert identity.stat().st_mode & 0o777 == 0o600
