"""The affiliate program's scheduled jobs: commissions released after their holding period,
payouts the policy schedules, unfinished batches sent again or checked with PayPal."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from burrow.control.affiliates.tasks import (
    check_payout_batches,
    release_held_commissions,
    scheduled_payouts,
)
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Commission, PayoutBatch, utcnow
from burrow.control.runtime import Runtime
from tests.control.affiliates.conftest import make_affiliate, make_commission, policy_with
from tests.support.app import running_runtime
from tests.support.paypal_server import FakePayPal


async def _batch(runtime: Runtime) -> PayoutBatch:
    async with unit_of_work(runtime.sessionmaker) as session:
        [batch] = await session.scalars(select(PayoutBatch))
        return batch


async def test_the_scheduler_pays_out_where_the_policy_says(
    money_settings: Settings, fake_paypal: FakePayPal
) -> None:
    policy = policy_with(scheduled_payouts=True, payout_minimum_minor=100)
    async with running_runtime(money_settings, policy=policy) as runtime:
        async with unit_of_work(runtime.sessionmaker) as session:
            affiliate = await make_affiliate(session, paypal_email="sched@example.net")
            due = await make_commission(session, affiliate.id, amount=250, status="pending")
            waiting = await make_commission(session, affiliate.id, amount=90, status="pending")
            stored = await session.get(Commission, waiting.id)
            assert stored is not None
            stored.available_at = utcnow() + timedelta(days=3)
        assert await release_held_commissions(runtime) == 1
        # PayPal makes the batch but its answer is lost.
        fake_paypal.lost_payout_answers = 1
        assert await scheduled_payouts(runtime) == 1
        assert (await _batch(runtime)).status == "created"
        # The next run sends it again under the same sender_batch_id: paid once.
        assert await check_payout_batches(runtime) == 1
        batch = await _batch(runtime)
        assert batch.status == "pending"
        assert len(fake_paypal.payouts) == 1
        assert fake_paypal.paid_to("sched@example.net") == 250
        fake_paypal.settle_payouts()
        assert await check_payout_batches(runtime) == 1
        assert (await _batch(runtime)).status == "done"
        assert await check_payout_batches(runtime) == 0  # nothing unfinished
        # The 0.90 still in its holding period was not paid.
        async with unit_of_work(runtime.sessionmaker) as session:
            left = await session.get(Commission, waiting.id)
            paid = await session.get(Commission, due.id)
            assert left is not None
            assert paid is not None
            assert (left.status, paid.status) == ("pending", "paid")


async def test_without_the_policys_word_the_scheduler_pays_nobody(
    money_settings: Settings, fake_paypal: FakePayPal
) -> None:
    async with running_runtime(money_settings, policy=policy_with()) as runtime:
        async with unit_of_work(runtime.sessionmaker) as session:
            affiliate = await make_affiliate(session)
            await make_commission(session, affiliate.id, amount=20000)
        assert await scheduled_payouts(runtime) == 0
    assert fake_paypal.payouts == {}
