"""Real WireGuard tunnels through burrow nodes, in a lab of network namespaces."""

from __future__ import annotations

from .lab import World, fetch, sha256, Tunnel


def test_smoke(world: World) -> None:
    token = world.new_customer()
    node = world.nodes[0]
    device = world.add_device(token, node.node_id)
    tunnel = Tunnel(world, world.customers[0], "bwc" + "0001", "")
    tunnel.up(device["config"])
    got = fetch(world.customers[0], f"http://{world.inet.ipv4}/file")
    assert got is not None
    assert sha256(got) == sha256(world.web_file)
    print(world.web_clients())
