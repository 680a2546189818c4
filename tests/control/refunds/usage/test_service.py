"""The first order's usage counters: tied to the first paid order, counted only inside its
refund window, deleted once no refund rule needs them, and never written in strict mode."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    ConnectionRecord,
    RefundRequest,
    RefundStatus,
    UsageCounter,
)
from burrow.control.refunds.service import refund as refund_service
from burrow.control.refunds.usage.service import usage as usage_service
from burrow.control.refunds.usage.tasks import expire_usage_counters
from burrow.control.runtime import Runtime
from burrow.control.scheduler import JOBS
from tests.control.connections.conftest import MakeCustomer, MakeNode, Wall
from tests.control.connections.test_records import METERED_POLICY
from tests.support.factories import create_account, create_paid_order

# metered.toml: refunds.window_days = 7, trial.days = 1.
WINDOW = timedelta(days=7)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"policy_path": METERED_POLICY})


async def pay(runtime: Runtime, account: Account, reference: str, paid_at: datetime) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        order = await create_paid_order(session, runtime, account, reference, paid_at=paid_at)
        return order.id


async def counters(runtime: Runtime) -> dict[int, tuple[int | None, int, int]]:
    """account id -> (order id, bytes, sessions) of every counter."""
    async with unit_of_work(runtime.sessionmaker) as session:
        rows = (await session.scalars(select(UsageCounter))).all()
        return {r.account_id: (r.order_id, r.bytes_total, r.sessions) for r in rows}


async def test_trial_usage_becomes_the_first_orders_and_later_orders_change_nothing(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, wall: Wall
) -> None:
    alice = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    await ams.report(alice.key(0), bytes_each=(1_000, 500))
    wall.advance(5)
    await ams.report(idle=(alice.key(0),))
    # Before any payment (a trial): counted, tied to no order yet.
    assert await counters(runtime) == {alice.account.id: (None, 1_500, 1)}

    first = await pay(runtime, alice.account, "first", wall.now)
    wall.advance(5)
    await ams.report(alice.key(0), bytes_each=(10, 20))
    wall.advance(5)
    await ams.report(idle=(alice.key(0),))
    assert await counters(runtime) == {alice.account.id: (first, 1_530, 2)}

    # A renewal later inside the window: the counter stays the first order's.
    await pay(runtime, alice.account, "second", wall.now)
    wall.advance(5)
    await ams.report(alice.key(0), bytes_each=(1, 1))
    wall.advance(5)
    await ams.report(idle=(alice.key(0),))
    assert await counters(runtime) == {alice.account.id: (first, 1_532, 3)}


async def test_counting_stops_when_the_window_passes_and_the_job_deletes_the_counter(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, wall: Wall
) -> None:
    alice = await customer("personal-monthly", devices=1)
    bob = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    # Alice paid just over a window ago, Bob just under.
    alice_order = await pay(runtime, alice.account, "a", wall.now - WINDOW - timedelta(seconds=1))
    bob_order = await pay(runtime, bob.account, "b", wall.now - WINDOW + timedelta(hours=1))
    await ams.report(alice.key(0), bob.key(0), bytes_each=(100, 100))
    wall.advance(5)
    await ams.report(idle=(alice.key(0), bob.key(0)))
    # Alice's window had passed: nothing of hers was counted, her records still are.
    assert await counters(runtime) == {bob.account.id: (bob_order, 200, 1)}
    async with unit_of_work(runtime.sessionmaker) as session:
        owners = set(await session.scalars(select(ConnectionRecord.account_id)))
    assert owners == {alice.account.id, bob.account.id}

    # A counter left from before (say the report came just before the window closed) goes.
    async with unit_of_work(runtime.sessionmaker) as session:
        session.add(UsageCounter(account_id=alice.account.id, order_id=alice_order, sessions=4))
    assert await expire_usage_counters(runtime) == 1
    assert set(await counters(runtime)) == {bob.account.id}

    wall.advance(3600)
    assert await expire_usage_counters(runtime) == 1
    assert await counters(runtime) == {}


async def test_a_counter_waits_for_a_refund_request_still_being_decided(
    runtime: Runtime, wall: Wall
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
    order_id = await pay(runtime, account, "q", wall.now - WINDOW - timedelta(days=1))
    async with unit_of_work(runtime.sessionmaker) as session:
        session.add(UsageCounter(account_id=account.id, order_id=order_id, bytes_total=9))
        request = RefundRequest(
            order_id=order_id,
            account_id=account.id,
            status=RefundStatus.queued,
            terms_version="t",
        )
        session.add(request)
    assert await expire_usage_counters(runtime) == 0
    assert await counters(runtime) == {account.id: (order_id, 9, 0)}

    async with unit_of_work(runtime.sessionmaker) as session:
        stored = await session.get(RefundRequest, request.id)
        assert stored is not None
        stored.status = RefundStatus.refused
    assert await expire_usage_counters(runtime) == 1
    assert await counters(runtime) == {}


async def _account(session: AsyncSession) -> Account:
    return await create_account(session)


async def test_unlinked_counters_are_tied_or_dropped(runtime: Runtime, wall: Wall) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        payer = await _account(session)
        lapsed_trial = await _account(session)
        running_trial = await _account(session)
        old = wall.now - timedelta(days=1) - WINDOW - timedelta(minutes=1)
        for account, created in ((payer, old), (lapsed_trial, old), (running_trial, wall.now)):
            session.add(UsageCounter(account_id=account.id, sessions=1, created_at=created))
    order_id = await pay(runtime, payer, "p", wall.now - timedelta(days=1))

    assert await expire_usage_counters(runtime) == 1
    # The payer's trial usage is now its first order's; a trial a window past its end is gone.
    assert await counters(runtime) == {
        payer.id: (order_id, 0, 1),
        running_trial.id: (None, 0, 1),
    }


def test_the_job_is_registered() -> None:
    assert expire_usage_counters in [job for _name, job in JOBS]


async def test_a_connection_still_open_counts_for_the_refund_decision(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, wall: Wall
) -> None:
    alice = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    first = await pay(runtime, alice.account, "open-1", wall.now - timedelta(hours=1))
    # Connected, and 2.5 GB through the tunnel since: reported, but not flushed or ended yet.
    await ams.report(alice.key(0), bytes_each=(1_000, 1_000))
    wall.advance(30)
    await ams.report(alice.key(0), bytes_each=(1_500_000_000, 1_000_000_000))
    counted = (await counters(runtime)).get(alice.account.id, (first, 0, 0))[1]
    assert counted < 1_000_000_000  # the counter alone would allow a full refund
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, alice.account.id)
        assert account is not None
        view = await refund_service.request(session, runtime, account, first, "Too slow.")
    assert view.request.status == RefundStatus.refused
    data = next(o for o in view.outcomes if o.rule == "max_data_bytes")
    assert not data.passed
    assert json.loads(data.evidence)["bytes"] == 2_500_002_000

    # Once the connection ends, its bytes are in the counter and counted once, not twice.
    wall.advance(5)
    await ams.report(idle=(alice.key(0),))
    assert (await counters(runtime))[alice.account.id][1] == 2_500_002_000
    assert await usage_service.open_bytes(runtime, alice.account.id) == 0
