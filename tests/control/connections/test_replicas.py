"""Connection limits hold across replicas that share PostgreSQL/SQLite and Redis.

Two runtimes (as two ``burrow serve`` replicas) on one database and one Redis; nodes' reports
reach them at the same moment. Each lease decision is one atomic step in Redis, so the last
slot is taken once, whichever replica serves the report.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.runtime import Runtime
from tests.control.connections.conftest import MakeCustomer, MakeNode, ReportingNode
from tests.support.app import app_client, running_runtime


@pytest.mark.parametrize("settings", ["redis"], indirect=True)
async def test_simultaneous_reports_on_two_replicas_take_the_last_slot_once(
    settings: Settings, runtime: Runtime, customer: MakeCustomer, node: MakeNode
) -> None:
    # The strict policy's business plan: one simultaneous connection in all.
    bob = await customer("business-monthly", devices=10)
    nodes = [await node(f"n-{n}") for n in range(10)]
    async with running_runtime(settings) as other, app_client(other) as second:
        # Half the nodes report through the second replica.
        for reporting in nodes[1::2]:
            reporting.client = second

        async def connect(index: int, reporting: ReportingNode) -> list[str]:
            return await reporting.report(bob.key(index))

        for _round in range(3):
            blocked = await asyncio.gather(*(connect(i, n) for i, n in enumerate(nodes)))
            admitted = [i for i, keys in enumerate(blocked) if keys == []]
            assert len(admitted) == 1, blocked

        # Both replicas see the same lease: the customer's one connection.
        listing: list[httpx.Response] = [
            await c.get("/api/v1/devices", headers=bob.headers) for c in (nodes[0].client, second)
        ]
        for response in listing:
            states = [d["connection"]["state"] for d in response.json()]
            assert states.count("connected") == 1, states
