"""A hostile node that invents traffic gets no further than what its uplink could carry.

Under the metered policy a customer's usage decides their refund; a node reporting 60 TB for
one customer turned a paid refund into a refusal. Real reports through the node API.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import UsageCounter
from burrow.control.nodes.service import node as node_service
from burrow.control.nodes.uplink import UPLINK_MARGIN
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.control.connections.conftest import MakeCustomer, MakeNode, Wall
from tests.support.factories import create_paid_order

SIXTY_TB = 60 * 10**12


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"policy_path": METERED_POLICY})


async def test_invented_traffic_is_cut_to_the_uplink_and_the_refund_still_passes(
    customer: MakeCustomer,
    node: MakeNode,
    runtime: Runtime,
    client: httpx.AsyncClient,
    wall: Wall,
) -> None:
    alice = await customer("personal-monthly", devices=1)
    async with unit_of_work(runtime.sessionmaker) as session:
        order = await create_paid_order(session, runtime, alice.account, "uplink-1")
    evil = await node("evil-1", uplink_mbit=100)
    await evil.report(alice.key(0), bytes_each=(SIXTY_TB // 2, SIXTY_TB // 2))
    wall.advance(5)
    await evil.report(idle=(alice.key(0),), idle_bytes=(SIXTY_TB, SIXTY_TB))

    # At most what 100 Mbit/s carries each way in the window a report can speak for (and in
    # the real moment between the two reports).
    window = runtime.settings.connection_lease_ttl_seconds + 1
    bound = 2 * 100 * 1_000_000 / 8 * window * UPLINK_MARGIN
    async with unit_of_work(runtime.sessionmaker) as session:
        counter = await session.scalar(
            select(UsageCounter).where(UsageCounter.account_id == alice.account.id)
        )
        assert counter is not None
        assert 0 < counter.bytes_total <= bound
        health = await node_service.health(runtime, await node_service.get(session, evil.row.id))
    # The operator sees what was dropped (a node-wide count, nothing per customer).
    assert health.dropped_bytes is not None
    assert health.dropped_bytes >= 4 * SIXTY_TB // 2 - bound

    refund = await client.post(
        f"/api/v1/billing/orders/{order.id}/refund", json={"reason": "x"}, headers=alice.headers
    )
    assert refund.status_code == 201, refund.text
    data_rule = next(o for o in refund.json()["outcomes"] if o["rule"] == "max_data_bytes")
    assert data_rule["passed"] is True, data_rule
