"""Metered privacy mode: connection records, their purge, and the usage counters."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from burrow.control.config import Settings
from burrow.control.connections.tasks import end_lapsed_leases, purge_connection_records
from burrow.control.db import unit_of_work
from burrow.control.models import ConnectionRecord, UsageCounter, utcnow
from burrow.control.runtime import Runtime
from tests.conftest import ROOT
from tests.control.connections.conftest import MakeCustomer, MakeNode, Wall, forget_live

METERED_POLICY = ROOT / "examples" / "policies" / "metered.toml"
TWO_REASON = "Your plan allows 2 simultaneous connections; disconnect another device."


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"policy_path": METERED_POLICY})


async def records(runtime: Runtime) -> list[ConnectionRecord]:
    async with unit_of_work(runtime.sessionmaker) as session:
        query = select(ConnectionRecord).order_by(ConnectionRecord.id)
        return list((await session.scalars(query)).all())


async def counter(runtime: Runtime, account_id: int) -> tuple[int, int] | None:
    async with unit_of_work(runtime.sessionmaker) as session:
        query = select(UsageCounter).where(UsageCounter.account_id == account_id)
        row = await session.scalar(query)
        return None if row is None else (row.bytes_total, row.sessions)


async def test_two_connection_plan_third_refused_then_admitted_within_one_report(
    customer: MakeCustomer,
    node: MakeNode,
    client: httpx.AsyncClient,
    runtime: Runtime,
    wall: Wall,
) -> None:
    alice = await customer("personal-monthly", devices=3)
    ams, fra, lon = await node("ams-1"), await node("fra-1"), await node("lon-1")
    assert await ams.report(alice.key(0)) == []
    assert await fra.report(alice.key(1)) == []
    assert await lon.report(alice.key(2)) == [alice.key(2)]

    device = await client.get(f"/api/v1/devices/{alice.devices[2].id}", headers=alice.headers)
    assert device.json()["connection"]["reason"] == TWO_REASON
    listing = (await client.get("/api/v1/connections", headers=alice.headers)).json()
    # Metered mode shows when each connection started.
    assert all(c["connected_since"] is not None for c in listing["connections"])

    wall.advance(5)
    assert await ams.report(idle=(alice.key(0),)) == []
    assert await lon.report(alice.key(2)) == []
    # Only admitted connections are recorded: the refused stretch of the third is not.
    rows = await records(runtime)
    assert [(r.node_name, r.ended_at is not None) for r in rows] == [
        ("ams-1", True),
        ("fra-1", False),
        ("lon-1", False),
    ]


async def test_a_record_holds_start_duration_location_and_bytes(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, client: httpx.AsyncClient, wall: Wall
) -> None:
    alice = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    started = wall.now
    await ams.report(alice.key(0), bytes_each=(100, 200))
    wall.advance(10)
    await ams.report(alice.key(0), bytes_each=(1_000, 2_000))
    wall.advance(10)
    await ams.report(alice.key(0))  # connected, no traffic
    wall.advance(10)
    await ams.report(idle=(alice.key(0),))

    [row] = await records(runtime)
    assert (row.account_id, row.device_id) == (alice.account.id, alice.devices[0].id)
    assert (row.node_name, row.node_country, row.node_city) == ("ams-1", "DE", "Berlin")
    assert row.started_at == started
    # It ended when its traffic stopped, not when the idle threshold noticed.
    assert row.ended_at == started + timedelta(seconds=10)
    assert (row.duration_seconds, row.rx_bytes, row.tx_bytes) == (10, 1_100, 2_200)

    body = (await client.get("/api/v1/connections/records", headers=alice.headers)).json()
    assert body["recorded"] is True
    assert body["retention_days"] == 30
    assert "30 days" in body["statement"]
    assert "never your IP address" in body["statement"]
    assert [(r["node_name"], r["duration_seconds"], r["rx_bytes"]) for r in body["records"]] == [
        ("ams-1", 10, 1_100)
    ]
    bob = await customer("personal-monthly", devices=1)
    other = (await client.get("/api/v1/connections/records", headers=bob.headers)).json()
    assert other["records"] == []


async def test_an_open_record_is_brought_up_to_date_and_a_crash_leaves_it_closed(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, wall: Wall
) -> None:
    runtime.settings.connection_record_flush_seconds = 20
    alice = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    await ams.report(alice.key(0), bytes_each=(10, 20))
    for _ in range(5):
        wall.advance(5)
        await ams.report(alice.key(0), bytes_each=(10, 20))

    [row] = await records(runtime)
    assert row.ended_at is None
    assert (row.duration_seconds, row.rx_bytes, row.tx_bytes) == (20, 50, 100)

    # The control plane restarts: the leases are gone, the row is still open.
    await forget_live(runtime)
    wall.advance(10)
    await end_lapsed_leases(runtime)
    assert (await records(runtime))[0].ended_at is None  # too recent to call stale
    wall.advance(60)
    await end_lapsed_leases(runtime)
    [row] = await records(runtime)
    assert row.ended_at == row.started_at + timedelta(seconds=20)


async def test_a_lease_that_lapses_closes_its_record_and_frees_its_slot(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, wall: Wall
) -> None:
    alice = await customer("personal-monthly", devices=3)
    ams, fra = await node("ams-1"), await node("fra-1")
    await ams.report(alice.key(0), alice.key(1), bytes_each=(5, 5))
    assert await fra.report(alice.key(2)) == [alice.key(2)]

    wall.advance(runtime.settings.connection_lease_ttl_seconds + 1)
    assert await end_lapsed_leases(runtime) == 3  # ams went silent; fra too, for a moment
    rows = await records(runtime)
    assert [(r.node_name, r.ended_at is not None, r.rx_bytes) for r in rows] == [
        ("ams-1", True, 5),
        ("ams-1", True, 5),
    ]
    assert await fra.report(alice.key(2)) == []


async def test_the_purge_deletes_only_records_past_the_retention(
    customer: MakeCustomer, runtime: Runtime
) -> None:
    alice = await customer("personal-monthly", devices=1)
    now = utcnow()
    ages = {"old": 31, "edge": 30, "young": 29, "new": 0}
    async with unit_of_work(runtime.sessionmaker) as session:
        for name, days in ages.items():
            session.add(
                ConnectionRecord(
                    account_id=alice.account.id,
                    device_id=None,
                    node_name=name,
                    node_country="DE",
                    node_city="Berlin",
                    started_at=now - timedelta(days=days, minutes=1),
                    ended_at=now - timedelta(days=days),
                    duration_seconds=60,
                    rx_bytes=1,
                    tx_bytes=1,
                )
            )

    assert await purge_connection_records(runtime) == 2
    assert sorted(r.node_name for r in await records(runtime)) == ["new", "young"]


async def test_usage_counters_count_admitted_sessions_and_their_bytes(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, wall: Wall
) -> None:
    alice = await customer("personal-monthly", devices=3)
    ams = await node("ams-1")
    await ams.report(alice.key(0), alice.key(1), alice.key(2), bytes_each=(1_000, 500))
    wall.advance(5)
    await ams.report(idle=(alice.key(0), alice.key(1), alice.key(2)))
    wall.advance(5)
    await ams.report(alice.key(0), bytes_each=(7, 3))
    wall.advance(5)
    await ams.report(idle=(alice.key(0),))

    # Three sessions admitted (the refused third is not one); their bytes, up and down.
    assert await counter(runtime, alice.account.id) == (2 * 1_500 + 10, 3)
