"""Limits enforced through the node API, and what the customer sees of them."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import func, inspect, select, table

from burrow.control.billing.service import billing as billing_service
from burrow.control.connections.limits import per_server_reason
from burrow.control.connections.tasks import purge_connection_records
from burrow.control.db import unit_of_work
from burrow.control.models import ConnectionRecord, PaymentMethod, UsageCounter, utcnow
from burrow.control.refunds.usage.tasks import expire_usage_counters
from burrow.control.runtime import Runtime
from tests.control.connections.conftest import FakeClock, MakeCustomer, MakeNode
from tests.support.factories import get_plan

pytestmark = pytest.mark.usefixtures("clock")

BUSINESS_REASON = "Your plan allows 1 simultaneous connection; disconnect another device."


async def test_a_second_device_on_the_same_node_is_blocked_but_not_on_another_node(
    customer: MakeCustomer, node: MakeNode, client: httpx.AsyncClient
) -> None:
    # The strict policy's personal plans: one WireGuard connection per server.
    alice = await customer("personal-monthly", devices=2)
    ams, fra = await node("ams-1"), await node("fra-1")

    assert await ams.report(alice.key(0)) == []
    assert await ams.report(alice.key(0), alice.key(1)) == [alice.key(1)]
    # The older connection stays; the newer is refused on every report while it lasts.
    assert await ams.report(alice.key(0), alice.key(1)) == [alice.key(1)]

    device = await client.get(f"/api/v1/devices/{alice.devices[1].id}", headers=alice.headers)
    assert device.status_code == 200, device.text
    assert device.json()["connection"] == {
        "state": "blocked",
        "reason": per_server_reason(1, "wireguard", "ams-1"),
        "node_name": "ams-1",
    }
    first = await client.get(f"/api/v1/devices/{alice.devices[0].id}", headers=alice.headers)
    assert first.json()["connection"]["state"] == "connected"

    # The same device on another node is fine.
    assert await ams.report(alice.key(0)) == []
    assert await fra.report(alice.key(1)) == []
    listing = await client.get("/api/v1/devices", headers=alice.headers)
    states = {d["id"]: d["connection"]["state"] for d in listing.json()}
    assert states == {alice.devices[0].id: "connected", alice.devices[1].id: "connected"}


async def test_business_plan_third_connection_refused_until_the_first_disconnects(
    customer: MakeCustomer, node: MakeNode, client: httpx.AsyncClient
) -> None:
    bob = await customer("business-monthly", devices=2)
    ams, fra = await node("ams-1"), await node("fra-1")

    assert await ams.report(bob.key(0)) == []
    assert await fra.report(bob.key(1)) == [bob.key(1)]

    body = (await client.get("/api/v1/connections", headers=bob.headers)).json()
    assert [
        (c["device_name"], c["node_name"], c["state"], c["reason"]) for c in body["connections"]
    ] == [
        ("Device 0", "ams-1", "connected", None),
        ("Device 1", "fra-1", "blocked", BUSINESS_REASON),
    ]
    # Strict mode: no times, no addresses.
    assert all(c["connected_since"] is None for c in body["connections"])
    assert "nothing of it is recorded" in body["note"]
    assert "3 minutes after its last one" in body["note"]

    # The first device goes idle: at fra's next report the second passes.
    assert await ams.report(idle=(bob.key(0),)) == []
    assert await fra.report(bob.key(1)) == []
    device = await client.get(f"/api/v1/devices/{bob.devices[0].id}", headers=bob.headers)
    assert device.json()["connection"] == {"state": "idle", "reason": None, "node_name": None}


async def test_a_silent_nodes_leases_lapse_and_free_their_slots(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, clock: FakeClock
) -> None:
    bob = await customer("business-monthly", devices=2)
    ams, fra = await node("ams-1"), await node("fra-1")
    await ams.report(bob.key(0))
    assert await fra.report(bob.key(1)) == [bob.key(1)]

    # ams stops reporting; its lease lives for the TTL, then lapses.
    clock.advance(runtime.settings.connection_lease_ttl_seconds - 1)
    assert await fra.report(bob.key(1)) == [bob.key(1)]
    clock.advance(2)
    assert await fra.report(bob.key(1)) == []


async def test_unlimited_plan_and_other_accounts_do_not_count(
    customer: MakeCustomer, node: MakeNode
) -> None:
    nodes = [await node(f"node-{n}") for n in range(4)]
    carol = await customer("personal-yearly", devices=4)
    dave = await customer("business-monthly", devices=2)
    for index, reporting in enumerate(nodes):
        # Dave's first device is one connection wherever it is reported; his second is refused.
        dave_key = dave.key(0 if index == 0 else 1)
        assert await reporting.report(carol.key(index), dave_key) == (
            [] if index == 0 else [dave_key]
        )


async def test_a_repeated_report_still_answers_the_blocked_keys(
    customer: MakeCustomer, node: MakeNode, client: httpx.AsyncClient
) -> None:
    bob = await customer("business-monthly", devices=2)
    ams = await node("ams-1")
    assert await ams.report(bob.key(0), bob.key(1)) == [bob.key(1)]
    body = {"boot_id": ams.boot_id, "seq": ams.seq, "revision": 0, "peers": []}
    response = await client.post("/node-api/v1/report", json=body, headers=ams.headers)
    assert response.json() == {
        "accepted": False,
        "last_seq": ams.seq,
        "blocked": [bob.key(1)],
        "blocked_connections": [],
    }


async def test_unknown_keys_are_ignored(node: MakeNode, customer: MakeCustomer) -> None:
    alice = await customer(devices=1)
    ams = await node("ams-1")
    stranger = "A" * 43 + "="
    assert await ams.report(stranger, alice.key(0)) == []


async def test_strict_mode_writes_no_row_anywhere(
    customer: MakeCustomer,
    node: MakeNode,
    runtime: Runtime,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="burrow")
    alice = await customer("personal-monthly", devices=3)
    bob = await customer("business-monthly", devices=2)
    ams, fra = await node("ams-1"), await node("fra-1")

    async def counts() -> dict[str, int]:
        async with runtime.engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
            return {
                name: (
                    await conn.execute(select(func.count()).select_from(table(name)))
                ).scalar_one()
                for name in names
            }

    before = await counts()
    for _ in range(5):
        await ams.report(alice.key(0), alice.key(1), bob.key(0), bytes_each=(1_000, 9_000))
        await fra.report(alice.key(2), bob.key(1), bytes_each=(500, 500))
        clock.advance(5)
    await ams.report(idle=(alice.key(0), alice.key(1), bob.key(0)))
    clock.advance(100)
    await fra.report()

    assert await counts() == before
    assert before["connection_records"] == before["usage_counters"] == 0
    # Nor a log line of burrow's naming a customer's device (the SQL driver's own debug log
    # echoes query parameters; it is off unless an operator turns it on).
    keys = [alice.key(n) for n in range(3)] + [bob.key(n) for n in range(2)]
    ours = [r for r in caplog.records if r.name.startswith("burrow")]
    assert not [r for r in ours if any(k in r.getMessage() for k in keys)]


async def test_strict_mode_purges_records_left_from_a_metered_past(
    customer: MakeCustomer, runtime: Runtime
) -> None:
    alice = await customer(devices=1)
    async with unit_of_work(runtime.sessionmaker) as session:
        session.add(
            ConnectionRecord(
                account_id=alice.account.id,
                node_name="ams-1",
                node_country="DE",
                node_city="Berlin",
                started_at=utcnow(),
            )
        )
        session.add(UsageCounter(account_id=alice.account.id))
    assert await purge_connection_records(runtime) == 1
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(ConnectionRecord)) == 0
        assert await session.scalar(select(func.count()).select_from(UsageCounter)) == 0


async def test_strict_mode_counts_no_usage_of_a_paid_first_order(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, clock: FakeClock
) -> None:
    alice = await customer(devices=1)
    async with unit_of_work(runtime.sessionmaker) as session:
        plan = await get_plan(session, "personal-monthly")
        await billing_service.record_payment(
            session, runtime, alice.account, plan, plan.price_minor, plan.currency,
            PaymentMethod.card, "manual", "strict-1",
        )  # fmt: skip
    ams = await node("ams-1")
    await ams.report(alice.key(0), bytes_each=(1_000, 1_000))
    clock.advance(5)
    await ams.report(idle=(alice.key(0),))
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(UsageCounter)) == 0
        assert await session.scalar(select(func.count()).select_from(ConnectionRecord)) == 0
        session.add(UsageCounter(account_id=alice.account.id, sessions=1))  # a metered past
    # The refund-window job keeps nothing under strict mode either.
    assert await expire_usage_counters(runtime) == 1
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(UsageCounter)) == 0


async def test_records_in_strict_mode_say_nothing_is_recorded(
    customer: MakeCustomer, client: httpx.AsyncClient
) -> None:
    alice = await customer(devices=1)
    response = await client.get("/api/v1/connections/records", headers=alice.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["records"] == []
    assert body["recorded"] is False
    assert body["mode"] == "strict"
    assert body["statement"].startswith("Nothing is recorded")


async def test_the_connections_api_needs_a_sign_in_and_checks_its_input(
    client: httpx.AsyncClient, customer: MakeCustomer
) -> None:
    assert (await client.get("/api/v1/connections")).status_code == 401
    assert (await client.get("/api/v1/connections/records")).status_code == 401
    alice = await customer(devices=0)
    bad = await client.get("/api/v1/connections/records?limit=0", headers=alice.headers)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
