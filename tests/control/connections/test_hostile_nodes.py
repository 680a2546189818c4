"""A hostile node reaches no customer on another node.

A node sits in someone else's data centre and may be compromised. Every test here drives real
reports through the node API: a node that claims a customer's device blocks nothing of that
customer on an honest node (``test_invented_traffic`` has the node that invents traffic).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from burrow.control.connections.service import connection as connection_service
from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import SubscriptionStatus
from burrow.control.runtime import Runtime
from tests.control.connections.conftest import FakeClock, MakeCustomer, MakeNode
from tests.support.factories import create_account, create_device, create_subscription

pytestmark = pytest.mark.usefixtures("clock")


async def test_a_device_claimed_first_on_a_hostile_node_still_connects_on_an_honest_one(
    customer: MakeCustomer, node: MakeNode, client: httpx.AsyncClient
) -> None:
    # Business plan: one connection in all. The hostile node claims Bob's device before he
    # connects anywhere; a device is one connection wherever it is reported, so his real
    # connection on the honest node is not the "newest" one to refuse.
    bob = await customer("business-monthly", devices=2)
    evil, ams = await node("evil-1"), await node("ams-1")
    assert await evil.report(bob.key(0)) == []
    for _ in range(3):
        assert await ams.report(bob.key(0)) == []
        await evil.report(bob.key(0))
    device = await client.get(f"/api/v1/devices/{bob.devices[0].id}", headers=bob.headers)
    assert device.json()["connection"]["state"] == "connected"


async def test_a_live_connection_is_never_pushed_off_by_another_nodes_claims(
    customer: MakeCustomer, node: MakeNode, clock: FakeClock
) -> None:
    bob = await customer("business-monthly", devices=2)
    ams, evil = await node("ams-1"), await node("evil-1")
    assert await ams.report(bob.key(0)) == []
    for _ in range(5):
        # The hostile node claims the live device and the other one; only its own claim of
        # the other device is refused, and only on itself.
        assert await evil.report(bob.key(1), bob.key(0)) == [bob.key(1)]
        assert await ams.report(bob.key(0)) == []
        clock.advance(5)


async def test_a_node_speaks_only_for_the_devices_it_serves(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    # A device of an account without access is in no node's desired state: a report naming
    # it is ignored (no lease, nothing blocked, nothing the customer sees).
    erin = await customer("business-monthly", devices=1)
    async with unit_of_work(runtime.sessionmaker) as session:
        lapsed = await create_account(session)
        await create_subscription(session, lapsed, status=SubscriptionStatus.expired)
        unserved = await create_device(session, lapsed)
        await desired_state_service.refresh_account(session, runtime, lapsed.id)
    evil = await node("evil-1")
    assert await evil.report(unserved.public_key, evil.row.wg_public_key or "") == []
    assert await connection_service.device_statuses(runtime, lapsed.id) == {}
    # And a served device it names counts for that device's account only.
    assert await evil.report(unserved.public_key, erin.key(0)) == []
    listing = (await client.get("/api/v1/connections", headers=erin.headers)).json()
    assert [c["node_name"] for c in listing["connections"]] == ["evil-1"]


async def test_twenty_nodes_reporting_one_account_at_once_admit_one_connection(
    customer: MakeCustomer, node: MakeNode
) -> None:
    # Business plan: one connection in all. Twenty nodes report twenty devices of it at the
    # same moment; each account's leases change in one atomic update, so exactly one passes.
    bob = await customer("business-monthly", devices=20)
    nodes = [await node(f"node-{n}") for n in range(20)]
    blocked = await asyncio.gather(*(n.report(bob.key(i)) for i, n in enumerate(nodes)))
    assert sorted(len(b) for b in blocked) == [0] + [1] * 19
    # And it stays so on the next round, in any order.
    again = await asyncio.gather(
        *(n.report(bob.key(i)) for i, n in reversed(list(enumerate(nodes))))
    )
    assert again[::-1] == blocked
