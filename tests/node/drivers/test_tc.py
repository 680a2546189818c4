"""The tc driver: the generated batch, then tc in namespaces and iperf3 through real tunnels."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from burrow.node.drivers.tc import TcError, TcShaper, ifb_name, render_clear, render_shaping
from burrow.node.drivers.wireguard import WireGuardGoDriver, push_full
from burrow.node.reconcile import DesiredPeers
from burrow.wire import PeerSpec

from ..netns import Lab, Namespace, needs, unique_name
from .test_wireguard import keypair

A = "A" * 43 + "="
B = "B" * 43 + "="
PEERS = {
    A: ("10.64.0.2/32", "fd42:b0::2/128"),
    B: ("10.64.1.7/32", "fd42:b0::1:ff/128"),
}


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_the_batch_first_removes_whatever_is_there() -> None:
    batch = lines(render_shaping("bwg0", "bwg0ifb", PEERS, 20))
    assert batch[:6] == lines(render_clear("bwg0", "bwg0ifb"))
    assert batch[:2] == ["qdisc replace dev bwg0 ingress", "qdisc del dev bwg0 ingress"]


def test_nothing_to_shape_leaves_nothing_on_the_interface() -> None:
    assert render_shaping("bwg0", "bwg0ifb", {}, 20) == render_clear("bwg0", "bwg0ifb")


def test_each_peer_gets_a_class_at_the_rate_both_ways() -> None:
    batch = lines(render_shaping("bwg0", "bwg0ifb", PEERS, 20))
    for dev in ("bwg0", "bwg0ifb"):
        assert f"qdisc add dev {dev} root handle 1: htb default 0 direct_qlen 1000" in batch
        for classid in ("1:2", "1:3"):
            assert (
                f"class add dev {dev} parent 1: classid {classid} "
                "htb rate 20mbit ceil 20mbit quantum 1514"
            ) in batch


def test_filters_match_both_addresses_in_the_bucket_of_their_last_byte() -> None:
    batch = lines(render_shaping("bwg0", "bwg0ifb", PEERS, 20))
    # To the client: by destination on the WireGuard interface.
    assert (
        "filter add dev bwg0 parent 1: prio 1 protocol ip u32 ht 10:2: "
        "match ip dst 10.64.0.2/32 flowid 1:2"
    ) in batch
    assert (
        "filter add dev bwg0 parent 1: prio 2 protocol ipv6 u32 ht 11:ff: "
        "match ip6 dst fd42:b0::1:ff/128 flowid 1:3"
    ) in batch
    # From the client: by source on the IFB.
    assert (
        "filter add dev bwg0ifb parent 1: prio 1 protocol ip u32 ht 10:7: "
        "match ip src 10.64.1.7/32 flowid 1:3"
    ) in batch
    # The hash keys: the destination's last byte (offset 16 / 36), the source's (12 / 20).
    assert any("hashkey mask 0x000000ff at 16 link 10:" in line for line in batch)
    assert any("hashkey mask 0x000000ff at 36 link 11:" in line for line in batch)
    assert any("bwg0ifb" in line and "at 12 link 10:" in line for line in batch)
    assert any("bwg0ifb" in line and "at 20 link 11:" in line for line in batch)


def test_uploads_are_redirected_only_once_the_ifb_shapes() -> None:
    batch = lines(render_shaping("bwg0", "bwg0ifb", PEERS, 20))
    redirect = batch.index(
        "filter add dev bwg0 parent ffff: prio 1 protocol all u32 match u32 0 0 "
        "action mirred egress redirect dev bwg0ifb"
    )
    assert redirect == len(batch) - 1
    assert batch.index("qdisc add dev bwg0ifb root handle 1: htb default 0 direct_qlen 1000") < (
        redirect
    )


@pytest.mark.parametrize(
    ("interface", "peers", "rate", "message"),
    [
        ("bad name", PEERS, 20, "not an interface name"),
        ("bwg0", {A: ("10.64.0.0/24",)}, 20, "one host"),
        ("bwg0", PEERS, 0, "at least 1 Mbit/s"),
    ],
)
def test_bad_input_never_reaches_tc(
    interface: str, peers: dict[str, tuple[str, ...]], rate: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_shaping(interface, ifb_name(interface), peers, rate)


def test_the_ifb_name_fits() -> None:
    assert ifb_name("bwt0123456789a") == "bwt012345678ifb"
    assert len(ifb_name("x" * 15)) == 15


# --- tc in namespaces -----------------------------------------------------------------------


def qdiscs(ns: Namespace) -> str:
    return ns.run("tc", "qdisc", "show").stdout


@needs("tc")
async def test_the_batch_loads_again_and_again_and_clears(lab: Lab) -> None:
    ns = lab.namespace()
    here, there = lab.link(ns, lab.namespace())
    shaper = TcShaper(here, netns=ns.name)
    assert await shaper.apply(PEERS, 20) is True
    assert await shaper.apply(PEERS, 20) is False  # already so: tc is not run
    assert await shaper.apply(PEERS, 20, force=True) is True
    assert shaper.shaped == {A, B}
    shown = qdiscs(ns)
    assert f"qdisc htb 1: dev {here} root" in shown
    assert f"qdisc htb 1: dev {shaper.ifb} root" in shown
    assert f"qdisc ingress ffff: dev {here}" in shown
    filters = ns.run("tc", "filter", "show", "dev", here).stdout
    assert "match 0a400002/ffffffff at 16" in filters  # 10.64.0.2
    assert "match 000100ff/ffffffff at 36" in filters  # fd42:b0::1:ff, its last word

    assert await shaper.apply({A: PEERS[A]}, 20) is True
    assert shaper.shaped == {A}
    assert "classid 1:3" not in ns.run("tc", "class", "show", "dev", here).stdout

    await shaper.clear()
    assert shaper.shaped == frozenset()
    shown = qdiscs(ns)
    assert "htb" not in shown
    assert "ingress" not in shown
    await shaper.close()
    assert ns.ip("link", "show", "dev", shaper.ifb, check=False).returncode != 0
    del there


@needs("tc")
async def test_a_failed_batch_leaves_nobody_shaped(lab: Lab) -> None:
    ns = lab.namespace()
    shaper = TcShaper("bwtnosuchdev", netns=ns.name)
    with pytest.raises(TcError):
        await shaper.apply(PEERS, 20)
    assert shaper.shaped == frozenset()
    # The IFB was made for the batch; it holds nothing of ours after the failure.
    assert "htb" not in qdiscs(ns)
    await shaper.close()
    assert ns.ip("link", "show", "dev", shaper.ifb, check=False).returncode != 0


# --- real tunnels and iperf3 ------------------------------------------------------------------

RATE_MBIT = 20
LIMIT_BPS = RATE_MBIT * 1_000_000 * 1.10  # the rate, +10 %


@dataclass
class Client:
    ns: Namespace
    driver: WireGuardGoDriver
    spec: PeerSpec


async def add_client(
    lab: Lab,
    server_ns: Namespace,
    server_public: str,
    n: int,
    drivers: list[WireGuardGoDriver],
    *,
    port: int = 51820,
    allowed_ips: str = "10.99.0.0/24,fd00:99::/64",
) -> Client:
    """Client ``n`` (10.99.0.n) in a namespace of its own, linked to the server's namespace and
    peered with the server at 10.200.n.1:``port``. Its driver is added to ``drivers`` before it
    starts, so the caller stops it even if starting fails."""
    ns = lab.namespace()
    lab.link(server_ns, ns, [f"10.200.{n}.1/30"], [f"10.200.{n}.2/30"])
    private, public = keypair()
    driver = WireGuardGoDriver(
        unique_name(), netns=ns.name, addresses=(f"10.99.0.{n}/24", f"fd00:99::{n}/64")
    )
    drivers.append(driver)
    await driver.start()
    assert driver.pid is not None
    lab.track(driver.pid)
    await driver.configure_interface(private, 51820 + n)
    ns.run(
        "wg", "set", driver.interface, "peer", server_public,
        "endpoint", f"10.200.{n}.1:{port}", "allowed-ips", allowed_ips,
    )  # fmt: skip
    spec = PeerSpec(public_key=public, allowed_ips=(f"10.99.0.{n}/32", f"fd00:99::{n}/128"))
    return Client(ns, driver, spec)


@dataclass
class Tunnels:
    server_ns: Namespace
    server: WireGuardGoDriver
    clients: list[Client]


@pytest.fixture
async def tunnels(lab: Lab) -> AsyncIterator[Tunnels]:
    """A node with wireguard-go and two clients, each in its own namespace, and iperf3 -s."""
    server_ns = lab.namespace()
    server = WireGuardGoDriver(
        unique_name(), netns=server_ns.name, addresses=("10.99.0.1/24", "fd00:99::1/64")
    )
    drivers = [server]
    try:
        await server.start()
        assert server.pid is not None
        lab.track(server.pid)
        server_private, server_public = keypair()
        await server.configure_interface(server_private, 51820)
        clients = [await add_client(lab, server_ns, server_public, n, drivers) for n in (2, 3)]
        await push_full(server, DesiredPeers(1, [c.spec for c in clients]).peers)
        server_ns.spawn("iperf3", "-s")
        deadline = time.monotonic() + 10
        while ":5201" not in server_ns.run("ss", "-ltn").stdout:
            assert time.monotonic() < deadline, "iperf3 -s did not listen within 10 s"
            await asyncio.sleep(0.05)
        yield Tunnels(server_ns, server, clients)
    finally:
        for driver in reversed(drivers):
            await driver.stop()


def throughput(client: Client, *, to_client: bool = False, server: str = "10.99.0.1") -> float:
    """Bits per second the receiver saw in a 3-second iperf3 run (after a 1-second warm-up)."""
    argv = ["iperf3", "-c", server, "-t", "3", "-O", "1", "-J"]
    if to_client:
        argv.append("-R")
    for attempt in range(3):
        done = client.ns.run(*argv, check=False, timeout=30)
        if done.returncode == 0:
            return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])
        # The server is busy finishing the previous test (or the handshake was slow).
        time.sleep(0.5 * (attempt + 1))
    raise AssertionError(f"iperf3 failed: {done.stdout[-500:]} {done.stderr[-500:]}")


@needs("wireguard-go", "wg", "iperf3", "tc", "ss")
async def test_a_shaped_peer_is_held_to_the_rate_and_another_is_not(tunnels: Tunnels) -> None:
    heavy, other = tunnels.clients
    baseline = await asyncio.to_thread(throughput, other)
    assert baseline > 3 * LIMIT_BPS, f"the lab is too slow to tell: {baseline / 1e6:.0f} Mbit/s"

    shaper = TcShaper(tunnels.server.interface, netns=tunnels.server_ns.name)
    try:
        await shaper.apply({heavy.spec.public_key: heavy.spec.allowed_ips}, RATE_MBIT)
        up = await asyncio.to_thread(throughput, heavy)
        down = await asyncio.to_thread(throughput, heavy, to_client=True)
        up6 = await asyncio.to_thread(throughput, heavy, server="fd00:99::1")
        unshaped = await asyncio.to_thread(throughput, other)
        print(
            f"baseline {baseline / 1e6:.0f}, shaped up {up / 1e6:.1f} down {down / 1e6:.1f} "
            f"up6 {up6 / 1e6:.1f}, other {unshaped / 1e6:.0f} Mbit/s"
        )
        for rate in (up, down, up6):
            assert RATE_MBIT * 1e6 * 0.5 < rate <= LIMIT_BPS
        # The other peer is not held to the rate, and not slowed by much.
        assert unshaped > 3 * LIMIT_BPS
        assert unshaped > 0.5 * baseline

        await shaper.clear()
        freed = await asyncio.to_thread(throughput, heavy)
        print(f"after the shaping is removed: {freed / 1e6:.0f} Mbit/s")
        assert freed > 3 * LIMIT_BPS
        shown = tunnels.server_ns.run("tc", "qdisc", "show").stdout
        assert "htb" not in shown
        assert "ingress" not in shown
    finally:
        await shaper.close()
    assert tunnels.server_ns.ip("link", "show", "dev", shaper.ifb, check=False).returncode != 0
