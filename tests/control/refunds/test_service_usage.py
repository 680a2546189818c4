"""Which usage counts the refund rules see: the counter of the order being evaluated only."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    Order,
    RefundRequest,
    UsageCounter,
    utcnow,
)
from burrow.control.refunds.engine import Verdict, evaluate
from burrow.control.refunds.service import refund as refund_service
from burrow.control.runtime import Runtime
from tests.support.factories import create_account, create_paid_order


async def _paid(
    session: AsyncSession, runtime: Runtime, account: Account, reference: str, days_ago: float
) -> Order:
    paid_at = utcnow() - timedelta(days=days_ago)
    return await create_paid_order(session, runtime, account, reference, paid_at=paid_at)


def _request(account: Account, order: Order) -> RefundRequest:
    # Not stored: the facts only read its time, reason and finding.
    return RefundRequest(
        order_id=order.id,
        account_id=account.id,
        reason="Too slow.",
        requested_at=utcnow(),
        unsupported_device=False,
        terms_version="t",
    )


async def _usage(
    session: AsyncSession, runtime: Runtime, account: Account, order: Order
) -> tuple[int | None, int | None]:
    facts = await refund_service.facts(session, runtime, account, order, _request(account, order))
    return facts.usage_bytes, facts.usage_sessions


async def test_the_first_order_reads_its_counter_and_a_renewal_has_none(
    metered: Runtime,
) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session)
        first = await _paid(session, metered, account, "u-1", days_ago=3)
        renewal = await _paid(session, metered, account, "u-2", days_ago=1)
        session.add(
            UsageCounter(
                account_id=account.id, order_id=first.id, bytes_total=2_000_000_000, sessions=40
            )
        )
        await session.flush()
        assert await _usage(session, metered, account, first) == (2_000_000_000, 40)
        # The renewal's own usage was never counted: nothing to read, a person would judge.
        assert await _usage(session, metered, account, renewal) == (None, None)

        decision = evaluate(
            metered.policy.refunds,
            await refund_service.facts(
                session, metered, account, renewal, _request(account, renewal)
            ),
        )
        assert decision.verdict == Verdict.refused
        data = next(o for o in decision.outcomes if o.rule == "max_data_bytes")
        assert data.evidence["bytes"] is None
        assert "no usage counts are kept for this order" in data.message


async def test_a_counter_of_another_order_is_not_this_orders(metered: Runtime) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session)
        first = await _paid(session, metered, account, "o-1", days_ago=3)
        later = await _paid(session, metered, account, "o-2", days_ago=1)
        session.add(
            UsageCounter(account_id=account.id, order_id=later.id, bytes_total=5, sessions=5)
        )
        await session.flush()
        assert await _usage(session, metered, account, first) == (0, 0)


async def test_a_trial_counter_not_tied_yet_is_the_first_orders(metered: Runtime) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session)
        first = await _paid(session, metered, account, "t-1", days_ago=1)
        session.add(UsageCounter(account_id=account.id, bytes_total=7, sessions=2))
        await session.flush()
        assert await _usage(session, metered, account, first) == (7, 2)


async def test_strict_mode_reads_no_counts(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        first = await _paid(session, runtime, account, "s-1", days_ago=1)
        assert await _usage(session, runtime, account, first) == (None, None)
