"""Who a busy node shapes: the pure decision and the in-memory traffic window."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from burrow.node.client import NodeApiClient
from burrow.node.drivers.tc import TcShaper
from burrow.node.drivers.uapi import WgPeer
from burrow.node.drivers.wireguard import WireGuardGoDriver
from burrow.node.fairuse import (
    MAX_SAMPLES,
    FairUseSettings,
    Sample,
    TrafficMeter,
    decide,
    measure,
)
from burrow.node.loop import SyncLoop
from burrow.wire import FairUseSpec

from .drivers.test_tc import LIMIT_BPS, RATE_MBIT, add_client, throughput
from .drivers.test_wireguard import keypair
from .fakes import NETWORK, NODE_TOKEN, FakeControlPlane, FakeNetwork
from .netns import Lab, needs, unique_name

# A 100 Mbit/s uplink, shaping to 10 Mbit/s at 90 %, a one-minute window.
SETTINGS = FairUseSettings(
    shaped_rate_mbit=10, trigger_utilisation_percent=90, window_seconds=60.0, uplink_mbit=100
)
MBIT = 1_000_000 // 8  # bytes a second at 1 Mbit/s


def window(rates: dict[str, tuple[float, float]], seconds: int = 60, step: int = 5) -> list[Sample]:
    """Samples every ``step`` seconds of peers moving (rx, tx) Mbit/s steadily."""
    return [
        Sample(
            at=float(t),
            seconds=float(step),
            traffic={
                key: (int(rx * MBIT * step), int(tx * MBIT * step))
                for key, (rx, tx) in rates.items()
            },
        )
        for t in range(step, seconds + step, step)
    ]


def test_utilisation_is_the_busier_direction_over_the_uplink() -> None:
    load = measure(window({"a": (5, 60), "b": (5, 32)}), 60.0, 100)
    assert load.utilisation_percent == pytest.approx(92.0)
    assert load.seconds == 60.0
    assert load.usage["a"] == 65 * MBIT * 60


@pytest.mark.parametrize(
    ("rates", "shaped", "expected"),
    [
        # Quiet node: nobody, whatever their share.
        ({"a": (1, 50), "b": (1, 1)}, set(), set()),
        # Busy: the heavy one above its fair share, not the light one.
        ({"a": (2, 85), "b": (1, 5)}, set(), {"a"}),
        # Busy, two heavy and one light: both heavy ones.
        ({"a": (1, 45), "b": (1, 40), "c": (1, 6)}, set(), {"a", "b"}),
        # Busy but everyone equal: nobody takes more than their share.
        ({"a": (1, 31), "b": (1, 31), "c": (1, 31)}, set(), set()),
        # Busy, a peer above the average but already below the shaped rate is left alone.
        ({f"p{n}": (0, 9) for n in range(9)} | {"x": (0, 9.5)}, set(), set()),
        # Between release (72 %) and trigger (90 %): who is shaped stays shaped.
        ({"a": (1, 70), "b": (1, 8)}, {"a"}, {"a"}),
        ({"a": (1, 70), "b": (1, 8)}, set(), set()),
        # Below release: everything is lifted.
        ({"a": (1, 60), "b": (1, 8)}, {"a"}, set()),
        # Busy: a shaped peer that is still active stays shaped even below its share now.
        ({"a": (1, 10), "b": (1, 85)}, {"a"}, {"a", "b"}),
        # A shaped peer that left (moved nothing in the window) is dropped.
        ({"b": (1, 95), "c": (1, 1)}, {"a"}, {"b"}),
        # One peer alone fills the link: it takes nobody's share, it is not shaped.
        ({"b": (1, 95)}, set(), set()),
    ],
)
def test_decide(
    rates: dict[str, tuple[float, float]], shaped: set[str], expected: set[str]
) -> None:
    assert decide(window(rates), SETTINGS, shaped) == expected


def test_only_the_window_counts() -> None:
    # A burst long ago, a quiet last minute.
    old = window({"a": (1, 95), "b": (1, 1)}, seconds=60)
    recent = [Sample(at=s.at + 60, seconds=s.seconds, traffic={"a": (MBIT, MBIT)}) for s in old]
    assert decide(old, SETTINGS) == {"a"}
    assert decide(old + recent, SETTINGS, {"a"}) == set()


def test_no_samples_no_shaping() -> None:
    assert decide([], SETTINGS, {"a"}) == set()
    assert measure([], 60.0, 100).utilisation_percent == 0.0


def test_settings_come_from_the_wire() -> None:
    spec = FairUseSpec(shaped_rate_mbit=20, trigger_utilisation_percent=90, window_minutes=15)
    assert FairUseSettings.from_spec(spec, 1000) == FairUseSettings(20, 90, 900.0, 1000)


def wg(key: str, rx: int, tx: int) -> WgPeer:
    return WgPeer(public_key=key, rx_bytes=rx, tx_bytes=tx)


def test_the_meter_turns_counters_into_samples_and_forgets_the_old() -> None:
    meter = TrafficMeter()
    meter.observe([wg("a", 1_000, 2_000)], now=100.0, window_seconds=10.0)
    assert list(meter.samples) == []  # the first read is only the baseline
    meter.observe([wg("a", 1_500, 2_000), wg("b", 7, 0)], now=105.0, window_seconds=10.0)
    assert list(meter.samples) == [Sample(105.0, 5.0, {"a": (500, 0), "b": (7, 0)})]
    # A counter that went down restarted: all of it is new. An idle peer is not listed.
    meter.observe([wg("a", 40, 2_000), wg("b", 7, 0)], now=110.0, window_seconds=10.0)
    assert meter.samples[-1] == Sample(110.0, 5.0, {"a": (40, 0)})
    meter.observe([], now=116.0, window_seconds=10.0)
    assert [s.at for s in meter.samples] == [110.0, 116.0]
    meter.reset()
    assert list(meter.samples) == []


def test_the_meter_is_bounded() -> None:
    meter = TrafficMeter(max_samples=3)
    for n in range(10):
        meter.observe([wg("a", n, n)], now=float(n), window_seconds=1e9)
    assert len(meter.samples) == 3
    assert MAX_SAMPLES >= 15 * 60 // 5


# --- the agent's loop, a real interface, tc and iperf3 ------------------------------------------


TRICKLE = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(100):
    s.sendto(b"x" * 100, ("10.99.0.1", 9))
    time.sleep(0.1)
"""


@needs("wireguard-go", "wg", "iperf3", "tc", "ss")
async def test_the_loop_shapes_a_real_heavy_peer_and_lifts_it(lab: Lab) -> None:
    """The sync loop's status reads feed the meter, decide shapes the heavy client with tc,
    and a quiet window lifts it: real wireguard-go, real counters, real tc, iperf3."""
    server_ns = lab.namespace()
    cp = FakeControlPlane(
        network=NETWORK.model_copy(
            update={
                "fair_use": FairUseSpec(
                    shaped_rate_mbit=RATE_MBIT,
                    trigger_utilisation_percent=90,
                    window_minutes=1,
                    uplink_mbit=50,
                )
            }
        )
    )
    server_private, server_public = keypair()
    driver = WireGuardGoDriver(
        unique_name(), netns=server_ns.name, addresses=("10.99.0.1/24", "fd00:99::1/64")
    )
    shaper = TcShaper(driver.interface, netns=server_ns.name)
    client = NodeApiClient("http://control.test", NODE_TOKEN, transport=cp.transport())
    loop = SyncLoop(client, driver, FakeNetwork(), private_key=server_private, shaper=shaper)
    clients: list[WireGuardGoDriver] = []
    try:
        tunnels = []
        for n in (2, 3):
            tunnel = await add_client(
                lab,
                server_ns,
                server_public,
                n,
                clients,
                port=NETWORK.listen_port,
                allowed_ips="10.99.0.0/24",
            )
            cp.upsert(tunnel.spec)
            tunnels.append(tunnel)
        heavy, light = tunnels

        await loop.full_sync()
        assert driver.pid is not None
        lab.track(driver.pid)
        server_ns.spawn("iperf3", "-s")
        for _ in range(200):
            if ":5201" in server_ns.run("ss", "-ltn").stdout:
                break
            await asyncio.sleep(0.05)
        await loop.read_peers()  # the baseline

        # The heavy client fills the link while the light one sends a trickle (ten small
        # datagrams a second for ten seconds); the reporter's reads (here twice a second)
        # see it.
        running = asyncio.create_task(asyncio.to_thread(throughput, heavy))
        light.ns.spawn(sys.executable, "-c", TRICKLE)
        for _ in range(40):
            await asyncio.sleep(0.5)
            await loop.read_peers()
            if shaper.shaped:
                break
        await running
        assert shaper.shaped == {heavy.spec.public_key}
        shaped = await asyncio.to_thread(throughput, heavy)
        print(f"shaped by the loop: {shaped / 1e6:.1f} Mbit/s")
        assert shaped <= LIMIT_BPS

        # A minute later with little moving (the loop's clock jumps), the window is quiet:
        # the shaping is lifted.
        loop._monotonic = lambda: time.monotonic() + 61.0
        await loop.read_peers()
        assert shaper.shaped == frozenset()
        freed = await asyncio.to_thread(throughput, heavy)
        print(f"lifted: {freed / 1e6:.0f} Mbit/s")
        assert freed > 3 * LIMIT_BPS
    finally:
        await shaper.close()
        await driver.stop()
        for end in clients:
            await end.stop()
        await client.aclose()
