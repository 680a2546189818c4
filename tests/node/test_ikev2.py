"""The IKEv2 service's reading of charon's SAs, with a driver that holds them in memory.

What charon itself does is tested against real processes in ``drivers/test_ikev2.py``; here,
what the service tells the status reporter of a moment charon shows (two SAs of one
subscription, the newer one not yet ended), without a tick's timing deciding the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import cast

from burrow.node.drivers.ikev2 import CharonDriver, IkeV2Device, IkeV2Server, IkeV2Session
from burrow.node.ikev2 import IKEV2, IkeV2Service
from burrow.node.status import RefusalSource
from tests.node.drivers.test_ikev2 import ALICE, BOB


class HeldSas:
    """Stands in for charon: the SAs it would list, and the ones the service terminated."""

    def __init__(self, devices: Iterable[IkeV2Device], sas: Iterable[IkeV2Session]) -> None:
        self.applied: Mapping[str, IkeV2Device] = {d.username: d for d in devices}
        self.sas = list(sas)
        self.terminated: list[int] = []

    async def ensure_running(self) -> bool:
        return False  # never died

    async def sessions(self) -> list[IkeV2Session]:
        return list(self.sas)

    async def terminate_sa(self, ike_id: int) -> None:
        self.terminated.append(ike_id)
        self.sas = [s for s in self.sas if s.ike_id != ike_id]


def service(charon: HeldSas) -> IkeV2Service:
    server = IkeV2Server("vpn.test", "cert", "key")
    return IkeV2Service(cast(CharonDriver, charon), server, lambda: None)


def sa(device: IkeV2Device, ike_id: int, *, established: bool = True) -> IkeV2Session:
    return IkeV2Session(device.username, ike_id, established, rx_bytes=100, tx_bytes=200)


async def test_a_second_connection_read_before_it_is_ended_is_not_reported_connected() -> None:
    # Alice's phone connected first (SA 3); Bob's tablet of the same subscription came in
    # second (SA 7) and charon lists it first. Both are read before the tick that ends SA 7.
    charon = HeldSas([ALICE, BOB], [sa(BOB, 7), sa(ALICE, 3)])
    ikev2 = service(charon)
    read = await ikev2.read_sessions()
    assert [(c.public_key, c.connected) for c in read] == [(ALICE.key, True), (BOB.key, False)]
    # Its bytes are still counted, whatever became of it.
    assert read[1].rx_bytes == 100
    # The panel learns why the tablet is not connected.
    assert isinstance(ikev2, RefusalSource)
    [refusal] = ikev2.refusals()
    assert (refusal.public_key, refusal.protocol) == (BOB.key, IKEV2)


async def test_the_report_lists_connections_oldest_first() -> None:
    other = replace(BOB, subscription="sub-2")
    charon = HeldSas([ALICE, other], [sa(other, 9), sa(ALICE, 4)])
    read = await service(charon).read_sessions()
    assert [(c.public_key, c.connected) for c in read] == [(ALICE.key, True), (other.key, True)]


async def test_the_refused_sa_is_ended_and_the_refusal_lapses_once_the_device_is_up() -> None:
    charon = HeldSas([ALICE, BOB], [sa(BOB, 7), sa(ALICE, 3)])
    ikev2 = service(charon)
    await ikev2.step()
    assert charon.terminated == [7]
    assert [r.public_key for r in ikev2.refusals()] == [BOB.key]
    assert [c.connected for c in await ikev2.read_sessions()] == [True]
    # Alice's phone leaves; the tablet connects again and is within the limit now.
    charon.sas = [sa(BOB, 12)]
    read = await ikev2.read_sessions()
    assert [(c.public_key, c.connected) for c in read] == [(BOB.key, True), (ALICE.key, False)]
    assert ikev2.refusals() == []


async def test_an_sa_still_negotiating_is_neither_connected_nor_refused() -> None:
    charon = HeldSas([ALICE, BOB], [sa(ALICE, 3), sa(BOB, 7, established=False)])
    ikev2 = service(charon)
    read = await ikev2.read_sessions()
    assert [(c.public_key, c.connected) for c in read] == [(ALICE.key, True), (BOB.key, False)]
    assert ikev2.refusals() == []
