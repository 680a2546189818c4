"""Several wireguard-go interfaces as one driver: real daemons in a namespace, with a cap of
four devices per interface so that six devices need two interfaces (and two ports)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from burrow.node.drivers.interfaces import InterfaceSet, interface_name
from burrow.node.drivers.wireguard import WireGuardGoDriver, push_full
from burrow.wire import NetworkSpec, PeerSpec

from ..netns import Lab, Namespace, needs, unique_name
from .test_wireguard import keypair, random_key

NETWORK = NetworkSpec(
    listen_port=51820,
    tunnel_ipv4="10.99.0.0/24",
    tunnel_ipv6="fd00:99::/64",
    gateway_ipv4="10.99.0.1",
    gateway_ipv6="fd00:99::1",
    peers_per_interface=4,
)


def device(key: str, index: int) -> PeerSpec:
    """The device at pool index ``index`` (its addresses are the pools' base + index)."""
    return PeerSpec(public_key=key, allowed_ips=(f"10.99.0.{index}/32", f"fd00:99::{index:x}/128"))


def test_a_device_s_interface_follows_from_its_address() -> None:
    assert [NETWORK.interface_of(f"10.99.0.{n}") for n in (1, 3, 4, 7, 8, 200)] == [
        0,
        0,
        1,
        1,
        2,
        50,
    ]
    assert NETWORK.interface_slice(1) == ("10.99.0.4/30", "fd00:99::4/126")
    assert interface_name("bwt12345678", 3) == "bwt12345678-3"
    assert interface_name("a-fifteen-chars", 12) == "a-fifteen-ch-12"


def test_the_cap_per_interface_is_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        NetworkSpec.model_validate({**NETWORK.model_dump(), "peers_per_interface": 6})


@pytest.fixture
async def interfaces(lab: Lab) -> AsyncIterator[tuple[Namespace, InterfaceSet]]:
    ns = lab.namespace()
    found = InterfaceSet(unique_name(), netns=ns.name)
    found.network = NETWORK
    found.addresses = ("10.99.0.1/24", "fd00:99::1/64")
    try:
        yield ns, found
    finally:
        await found.stop()


def _listen_port(ns: Namespace, name: str) -> int:
    return int(ns.run("wg", "show", name, "listen-port").stdout)


@needs("wireguard-go", "wg")
async def test_six_devices_with_four_per_interface_use_two_interfaces_and_two_ports(
    lab: Lab, interfaces: tuple[Namespace, InterfaceSet]
) -> None:
    ns, driver = interfaces
    server_private, server_public = keypair()
    assert await driver.ensure_running() is True
    await driver.configure_interface(server_private, 51820)
    client_private, client_public = keypair()
    keys = [client_public] + [random_key() for _ in range(5)]
    # Pool indices 2..7: 2 and 3 on interface 0, 4..7 on interface 1. The real client is 4.
    desired = {key: device(key, n) for n, key in zip([4, 2, 3, 5, 6, 7], keys, strict=True)}
    await push_full(driver, desired)

    first, second = driver.interfaces
    assert second == f"{first}-1"
    assert _listen_port(ns, first) == 51820
    assert _listen_port(ns, second) == 51821
    on_second = set(ns.run("wg", "show", second, "peers").stdout.split())
    assert on_second == {keys[0], keys[3], keys[4], keys[5]}
    assert {p.public_key for p in await driver.get_state()} == set(keys)
    assert dict(driver.applied) == {k: p.allowed_ips for k, p in desired.items()}
    assert "10.99.0.4/30 dev " + second in ns.ip("route").stdout

    # A real client of interface 1 reaches the node through port 51821.
    client_ns = lab.namespace()
    lab.link(ns, client_ns, ["10.200.0.1/30"], ["10.200.0.2/30"])
    client = WireGuardGoDriver(unique_name(), netns=client_ns.name, addresses=("10.99.0.4/24",))
    await client.start()
    try:
        await client.configure_interface(client_private, 40000)
        client_ns.run(
            "wg", "set", client.interface, "peer", server_public,
            "endpoint", "10.200.0.1:51821", "allowed-ips", "10.99.0.0/24",
        )  # fmt: skip
        client_ns.run(
            sys.executable, "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            ".sendto(b'hello', ('10.99.0.1', 9))",
        )  # fmt: skip
        # The node counts a handshake as done only when the client's first data packet
        # arrives after its response: the initiation alone (148 bytes) is not enough.
        for _ in range(100):
            seen = {p.public_key: p for p in await driver.get_state()}
            if seen[keys[0]].last_handshake is not None:
                break
            await asyncio.sleep(0.05)
        assert seen[keys[0]].last_handshake is not None
        assert seen[keys[0]].rx_bytes > 148
    finally:
        await client.stop()

    # The devices of interface 1 leave: it stops; interface 0 keeps its peers.
    await push_full(driver, {k: p for k, p in desired.items() if k in keys[1:3]})
    assert driver.interfaces == (first,)
    assert ns.run("wg", "show", second, check=False).returncode != 0
    assert set(ns.run("wg", "show", first, "peers").stdout.split()) == set(keys[1:3])
