"""Subscription service: trials, current/cancel/resume, admin grants, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    AccountStatus,
    ServedPeer,
    Subscription,
    SubscriptionStatus,
    TrialClaim,
    utcnow,
)
from burrow.control.plans.service import PlanRetired, UnknownPlan
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import (
    AccountNotActive,
    AccountNotFound,
    AccountTerminated,
    AlreadySubscribed,
    EmailNotVerified,
    NoSubscription,
    SubscriptionEnded,
    TrialAlreadyUsed,
    TrialNotOffered,
    add_months,
    describe_next,
    trial_email_key,
)
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.subscriptions.tasks import expire_due_subscriptions
from tests.support.factories import (
    create_account,
    create_device,
    create_subscription,
    get_plan,
)


def _close(a: datetime, b: datetime) -> bool:
    return abs(a - b) < timedelta(seconds=30)


# --- pure helpers -----------------------------------------------------------------------------


def test_add_months_keeps_calendar_dates() -> None:
    jan31 = datetime(2027, 1, 31, 12, 0, tzinfo=UTC)
    assert add_months(jan31, 1) == datetime(2027, 2, 28, 12, 0, tzinfo=UTC)
    assert add_months(datetime(2028, 1, 31, tzinfo=UTC), 1).day == 29  # leap year
    assert add_months(datetime(2026, 11, 22, tzinfo=UTC), 2) == datetime(2027, 1, 22, tzinfo=UTC)
    assert add_months(datetime(2026, 12, 22, tzinfo=UTC), 120) == datetime(2036, 12, 22, tzinfo=UTC)


def test_trial_email_key_ignores_case_and_plus_tags() -> None:
    assert trial_email_key(" Alice+vpn2@Example.COM ") == "alice@example.com"
    assert trial_email_key("alice@example.com") == "alice@example.com"
    assert trial_email_key("bob@example.com") != trial_email_key("alice@example.com")


def test_describe_next_in_plain_words() -> None:
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    end = datetime(2026, 12, 22, 10, 0, tzinfo=UTC)

    def sub(status: SubscriptionStatus, **kw: object) -> Subscription:
        return Subscription(
            status=status,
            current_period_start=now,
            current_period_end=kw.pop("period_end", end),
            cancel_at_period_end=kw.pop("cancel", False),
            ended_at=kw.pop("ended_at", None),
            provider_subscription_id=kw.pop("provider_sub", None),
        )

    # Only a provider's recurring subscription renews by itself; one paid a period at a time
    # ends, and the customer is reminded.
    assert (
        describe_next(sub(SubscriptionStatus.active, provider_sub="sub_123"), now)
        == "Renews on 2026-12-22"
    )
    assert (
        describe_next(sub(SubscriptionStatus.active), now)
        == "Ends on 2026-12-22 (we will remind you before then)"
    )
    assert (
        describe_next(sub(SubscriptionStatus.active, cancel=True), now)
        == "Ends on 2026-12-22 because you cancelled"
    )
    assert describe_next(sub(SubscriptionStatus.trialing), now) == "Trial ends on 2026-12-22"
    assert (
        describe_next(sub(SubscriptionStatus.expired, ended_at=end), now) == "Expired on 2026-12-22"
    )
    assert (
        describe_next(sub(SubscriptionStatus.canceled, ended_at=end), now)
        == "Ended on 2026-12-22 because you cancelled"
    )
    # Period over, expiry job not yet run: it says what is already true.
    past = datetime(2026, 11, 1, tzinfo=UTC)
    assert (
        describe_next(sub(SubscriptionStatus.active, period_end=past), now)
        == "Expired on 2026-11-01"
    )
    overdue = sub(SubscriptionStatus.past_due, period_end=past)
    overdue.grace_until = datetime(2026, 11, 25, tzinfo=UTC)
    assert describe_next(overdue, now) == (
        "Payment failed; access continues until 2026-11-25 and then ends unless the payment "
        "goes through"
    )
    overdue.grace_until = past
    assert describe_next(overdue, now) == "Payment failed; access ended on 2026-11-01"


# --- current and access_plan ------------------------------------------------------------------


async def test_current_is_newest_not_ended(session: AsyncSession) -> None:
    account = await create_account(session)
    other = await create_account(session)
    assert await subscription_service.current(session, account.id) is None
    await create_subscription(session, account, status=SubscriptionStatus.expired)
    assert await subscription_service.current(session, account.id) is None
    newest = await create_subscription(session, account, status=SubscriptionStatus.past_due)
    await create_subscription(session, other)
    current = await subscription_service.current(session, account.id)
    assert current is not None
    assert current.id == newest.id


@pytest.mark.parametrize(
    ("status", "days_left", "has_plan"),
    [
        (SubscriptionStatus.trialing, 1, True),
        (SubscriptionStatus.active, 30, True),
        (SubscriptionStatus.active, -1, False),  # period over, job not yet run
        (SubscriptionStatus.past_due, 30, False),
        (SubscriptionStatus.canceled, 30, False),
        (SubscriptionStatus.expired, 30, False),
    ],
)
async def test_access_plan(
    session: AsyncSession, status: SubscriptionStatus, days_left: int, has_plan: bool
) -> None:
    account = await create_account(session)
    assert await subscription_service.access_plan(session, account.id) is None
    await create_subscription(
        session,
        account,
        plan_code="business-monthly",
        status=status,
        period_end=utcnow() + timedelta(days=days_left),
    )
    plan = await subscription_service.access_plan(session, account.id)
    if has_plan:
        assert plan is not None
        assert plan.code == "business-monthly"
        assert plan.device_limit == 1
    else:
        assert plan is None


# --- trial ------------------------------------------------------------------------------------


async def test_trial_starts_once(
    session: AsyncSession, runtime: Runtime, refreshed: list[int]
) -> None:
    account = await create_account(session)
    details = await subscription_service.start_trial(session, runtime, account)

    sub = details.subscription
    assert sub.status == SubscriptionStatus.trialing
    assert details.plan.code == runtime.policy.trial.plan  # type: ignore[union-attr]
    assert _close(sub.current_period_end, utcnow() + timedelta(days=1))
    assert "ends on" in details.message
    assert refreshed == [account.id]
    assert await session.scalar(select(func.count()).select_from(TrialClaim)) == 1
    # The claim holds a keyed digest, never the address.
    claim = await session.scalar(select(TrialClaim))
    assert claim is not None
    assert account.email not in claim.email_digest

    with pytest.raises(AlreadySubscribed):
        await subscription_service.start_trial(session, runtime, account)
    # Once the trial is over, the same email still gets no second trial.
    sub.current_period_end = utcnow() - timedelta(minutes=1)
    with pytest.raises(TrialAlreadyUsed):
        await subscription_service.start_trial(session, runtime, account)


async def test_trial_once_per_email_even_after_account_deletion(
    session: AsyncSession, runtime: Runtime
) -> None:
    first = await create_account(session, email="returning@example.com")
    await subscription_service.start_trial(session, runtime, first)
    await session.execute(delete(Account).where(Account.id == first.id))
    session.expunge_all()
    assert await session.scalar(select(func.count()).select_from(Subscription)) == 0

    again = await create_account(session, email="returning@example.com")
    with pytest.raises(TrialAlreadyUsed):
        await subscription_service.start_trial(session, runtime, again)
    tagged = await create_account(session, email="Returning+second@example.com")
    with pytest.raises(TrialAlreadyUsed):
        await subscription_service.start_trial(session, runtime, tagged)
    # Someone else's address still gets a trial.
    stranger = await create_account(session, email="stranger@example.com")
    details = await subscription_service.start_trial(session, runtime, stranger)
    assert details.subscription.status == SubscriptionStatus.trialing


async def test_trial_needs_verified_email(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session, verified=False)
    with pytest.raises(EmailNotVerified) as caught:
        await subscription_service.start_trial(session, runtime, account)
    assert caught.value.status == 403
    assert "Verify your email" in caught.value.message
    # Refused attempts do not use up the trial.
    assert await session.scalar(select(func.count()).select_from(TrialClaim)) == 0
    account.email_verified_at = utcnow()
    await subscription_service.start_trial(session, runtime, account)


async def test_trial_refused_when_not_offered_or_account_inactive(
    session: AsyncSession, runtime: Runtime
) -> None:
    suspended = await create_account(session, status=AccountStatus.suspended)
    with pytest.raises(AccountNotActive):
        await subscription_service.start_trial(session, runtime, suspended)

    account = await create_account(session)
    assert runtime.policy.trial is not None
    runtime.policy = runtime.policy.model_copy(
        update={"trial": runtime.policy.trial.model_copy(update={"enabled": False})}
    )
    with pytest.raises(TrialNotOffered):
        await subscription_service.start_trial(session, runtime, account)
    runtime.policy = runtime.policy.model_copy(update={"trial": None})
    with pytest.raises(TrialNotOffered):
        await subscription_service.start_trial(session, runtime, account)
    assert await subscription_service.current(session, account.id) is None


async def test_trial_refused_with_paid_access(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    await create_subscription(session, account)
    with pytest.raises(AlreadySubscribed):
        await subscription_service.start_trial(session, runtime, account)
    assert await session.scalar(select(func.count()).select_from(TrialClaim)) == 0


# --- cancel and resume ------------------------------------------------------------------------


async def test_cancel_keeps_access_until_period_end_then_resume(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    sub = await create_subscription(session, account)
    end = sub.current_period_end.date().isoformat()

    cancelled = await subscription_service.cancel(session, runtime, account.id)
    assert cancelled.subscription.cancel_at_period_end is True
    assert cancelled.subscription.canceled_at is not None
    assert cancelled.subscription.status == SubscriptionStatus.active
    assert f"You keep access until {end}" in cancelled.message
    assert describe_next(sub) == f"Ends on {end} because you cancelled"
    assert await subscription_service.access_plan(session, account.id) is not None

    again = await subscription_service.cancel(session, runtime, account.id)
    assert again.message.startswith("Already cancelled")

    resumed = await subscription_service.resume(session, runtime, account.id)
    assert resumed.subscription.cancel_at_period_end is False
    assert resumed.subscription.canceled_at is None
    assert resumed.message == f"Resumed. Ends on {end} (we will remind you before then)."

    noop = await subscription_service.resume(session, runtime, account.id)
    assert noop.message.startswith("Nothing to resume")


async def test_cancel_and_resume_refused_after_period_end(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    with pytest.raises(NoSubscription):
        await subscription_service.cancel(session, runtime, account.id)
    with pytest.raises(NoSubscription):
        await subscription_service.overview(session, account.id)
    sub = await create_subscription(session, account, period_end=utcnow() + timedelta(days=3))
    await subscription_service.cancel(session, runtime, account.id)
    sub.current_period_end = utcnow() - timedelta(seconds=1)
    with pytest.raises(SubscriptionEnded) as caught:
        await subscription_service.resume(session, runtime, account.id)
    assert caught.value.status == 409
    sub.status, sub.ended_at = SubscriptionStatus.canceled, sub.current_period_end
    with pytest.raises(SubscriptionEnded):
        await subscription_service.resume(session, runtime, account.id)
    overview = await subscription_service.overview(session, account.id)
    assert overview.subscription.id == sub.id


# --- admin grant ------------------------------------------------------------------------------


async def test_grant_creates_active_subscription(
    session: AsyncSession, runtime: Runtime, refreshed: list[int]
) -> None:
    account = await create_account(session)
    details = await subscription_service.grant(
        session, runtime, account.id, "personal-yearly", months=3
    )
    sub = details.subscription
    assert sub.status == SubscriptionStatus.active
    assert details.plan.code == "personal-yearly"
    assert _close(sub.current_period_end, add_months(sub.current_period_start, 3))
    assert details.message.startswith("Granted 3 months of Personal, 12 months")
    assert refreshed == [account.id]


async def test_grant_extends_same_plan(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    existing = await create_subscription(session, account, plan_code="personal-monthly")
    end = existing.current_period_end
    details = await subscription_service.grant(
        session, runtime, account.id, "personal-monthly", months=2
    )
    assert details.subscription.id == existing.id
    assert details.subscription.current_period_end == add_months(end, 2)
    assert details.message.startswith("Extended")

    days = await subscription_service.grant(
        session, runtime, account.id, "personal-monthly", days=10
    )
    assert days.subscription.current_period_end == add_months(end, 2) + timedelta(days=10)
    count = await session.scalar(
        select(func.count()).select_from(Subscription).where(Subscription.account_id == account.id)
    )
    assert count == 1


async def test_grant_ends_trial_and_other_plans(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    trial = await subscription_service.start_trial(session, runtime, account)
    granted = await subscription_service.grant(
        session, runtime, account.id, trial.plan.code, months=1
    )
    assert granted.subscription.id != trial.subscription.id
    assert trial.subscription.status == SubscriptionStatus.canceled
    assert trial.subscription.ended_at is not None
    assert granted.subscription.status == SubscriptionStatus.active

    business = await subscription_service.grant(
        session, runtime, account.id, "business-monthly", months=1
    )
    assert granted.subscription.ended_at is not None
    current = await subscription_service.current(session, account.id)
    assert current is not None
    assert current.id == business.subscription.id
    plan = await subscription_service.access_plan(session, account.id)
    assert plan is not None
    assert plan.code == "business-monthly"


async def test_grant_refusals(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    with pytest.raises(UnknownPlan) as unknown:
        await subscription_service.grant(session, runtime, account.id, "gold", months=1)
    assert "'gold'" in unknown.value.message
    assert unknown.value.field == "plan_code"
    with pytest.raises(AccountNotFound):
        await subscription_service.grant(session, runtime, 10**9, "personal-monthly", months=1)

    plans = {k: v for k, v in runtime.policy.plans.items() if k != "personal-yearly"}
    await plan_service.sync_from_policy(session, runtime.policy.model_copy(update={"plans": plans}))
    with pytest.raises(PlanRetired) as retired:
        await subscription_service.grant(session, runtime, account.id, "personal-yearly", months=1)
    assert retired.value.status == 409

    terminated = await create_account(session, status=AccountStatus.terminated)
    with pytest.raises(AccountTerminated):
        await subscription_service.grant(
            session, runtime, terminated.id, "personal-monthly", days=1
        )
    assert await subscription_service.current(session, account.id) is None


# --- expiry -----------------------------------------------------------------------------------


async def test_expiry_job(runtime: Runtime, refreshed: list[int]) -> None:
    past = utcnow() - timedelta(hours=1)
    async with unit_of_work(runtime.sessionmaker) as session:
        lapsed_account = await create_account(session)
        lapsed = await create_subscription(session, lapsed_account, period_end=past)
        cancelled_account = await create_account(session)
        cancelled = await create_subscription(
            session, cancelled_account, status=SubscriptionStatus.trialing, period_end=past
        )
        cancelled.cancel_at_period_end = True
        overdue_account = await create_account(session)
        overdue = await create_subscription(
            session, overdue_account, status=SubscriptionStatus.past_due, period_end=past
        )
        running_account = await create_account(session)
        running = await create_subscription(session, running_account)
        ids = (lapsed.id, cancelled.id, overdue.id, running.id)
        expected_refreshed = {lapsed_account.id, cancelled_account.id, overdue_account.id}

    assert await expire_due_subscriptions(runtime) == 3
    assert set(refreshed) == expected_refreshed

    async with unit_of_work(runtime.sessionmaker) as session:
        rows = {s.id: s for s in await session.scalars(select(Subscription))}
        assert rows[ids[0]].status == SubscriptionStatus.expired
        assert rows[ids[1]].status == SubscriptionStatus.canceled
        assert rows[ids[2]].status == SubscriptionStatus.expired
        assert rows[ids[3]].status == SubscriptionStatus.active
        for sub_id in ids[:3]:
            assert rows[sub_id].ended_at is not None
            assert _close(rows[sub_id].ended_at, past)  # type: ignore[arg-type]
        assert rows[ids[3]].ended_at is None
        overview = await subscription_service.overview(session, lapsed_account.id)
        assert describe_next(overview.subscription) == f"Expired on {past.date().isoformat()}"

    # Nothing left to do.
    assert await expire_due_subscriptions(runtime) == 0


async def test_expiry_job_works_in_batches(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        for _ in range(5):
            account = await create_account(session)
            await create_subscription(session, account, period_end=utcnow() - timedelta(days=1))

    assert await expire_due_subscriptions(runtime, batch_size=2) == 5

    async with unit_of_work(runtime.sessionmaker) as session:
        statuses = set(await session.scalars(select(Subscription.status)))
        assert statuses == {SubscriptionStatus.expired}


async def test_retired_plan_subscription_still_expires(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        await create_subscription(
            session, account, plan_code="personal-yearly", period_end=utcnow() - timedelta(days=1)
        )
        plans = {k: v for k, v in runtime.policy.plans.items() if k != "personal-yearly"}
        await plan_service.sync_from_policy(
            session, runtime.policy.model_copy(update={"plans": plans})
        )
    assert await expire_due_subscriptions(runtime) == 1
    async with unit_of_work(runtime.sessionmaker) as session:
        details = await subscription_service.overview(session, account.id)
        assert details.plan.code == "personal-yearly"
        assert (await get_plan(session, "personal-yearly")).retired_at is not None


# --- what the nodes are told ------------------------------------------------------------------


async def _served_keys(runtime: Runtime, account_id: int) -> set[str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        rows = await session.scalars(
            select(ServedPeer.public_key).where(ServedPeer.account_id == account_id)
        )
        return set(rows)


async def test_trial_serves_devices_and_expiry_removes_them(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        device = await create_device(session, account)
        account_id = account.id
    assert await _served_keys(runtime, account_id) == set()

    async with unit_of_work(runtime.sessionmaker) as session:
        loaded = await session.get(Account, account_id)
        assert loaded is not None
        await subscription_service.start_trial(session, runtime, loaded)
    assert await _served_keys(runtime, account_id) == {device.public_key}

    # Cancelling changes nothing until the period ends.
    async with unit_of_work(runtime.sessionmaker) as session:
        await subscription_service.cancel(session, runtime, account_id)
    assert await _served_keys(runtime, account_id) == {device.public_key}

    async with unit_of_work(runtime.sessionmaker) as session:
        current = await subscription_service.current(session, account_id)
        assert current is not None
        current.current_period_end = utcnow() - timedelta(seconds=1)
    assert await expire_due_subscriptions(runtime) == 1
    assert await _served_keys(runtime, account_id) == set()

    async with unit_of_work(runtime.sessionmaker) as session:
        await subscription_service.grant(session, runtime, account_id, "personal-monthly", days=3)
    assert await _served_keys(runtime, account_id) == {device.public_key}


# --- a provider's subscription: past_due and its grace -----------------------------------------


async def _provider_subscribed(runtime: Runtime) -> tuple[int, int, str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        device = await create_device(session, account)
        granted = await subscription_service.grant(
            session,
            runtime,
            account.id,
            "personal-monthly",
            months=1,
            provider="stripe",
            provider_subscription_id="sub_grace",
        )
        return account.id, granted.subscription.id, device.public_key


@pytest.mark.parametrize(
    "period_left",
    # The renewal failed at the period end; or Stripe had already moved the period on.
    [timedelta(hours=-2), timedelta(days=30)],
    ids=["period-over", "period-moved-on"],
)
async def test_past_due_serves_until_the_grace_ends_then_expiry_removes_peers(
    runtime: Runtime, period_left: timedelta
) -> None:
    account_id, sub_id, key = await _provider_subscribed(runtime)
    failed_at = utcnow()
    async with unit_of_work(runtime.sessionmaker) as session:
        sub = await session.get(Subscription, sub_id)
        assert sub is not None
        # Only the grace keeps access, whatever the period says.
        sub.current_period_end = failed_at + period_left
        assert await subscription_service.provider_payment_failed(session, runtime, sub, failed_at)
        assert sub.status == SubscriptionStatus.past_due
        assert sub.grace_until == failed_at + timedelta(days=3)
    assert await _served_keys(runtime, account_id) == {key}
    # The grace is still running: the expiry job leaves it alone.
    assert await expire_due_subscriptions(runtime) == 0
    assert await _served_keys(runtime, account_id) == {key}
    async with unit_of_work(runtime.sessionmaker) as session:
        plan = await subscription_service.access_plan(session, account_id)
        assert plan is not None
        # A second failure keeps the first one's grace.
        sub = await session.get(Subscription, sub_id)
        assert sub is not None
        later = failed_at + timedelta(days=1)
        await subscription_service.provider_payment_failed(session, runtime, sub, later)
        assert sub.grace_until == failed_at + timedelta(days=3)
        assert sub.provider_updated_at == later

    async with unit_of_work(runtime.sessionmaker) as session:
        sub = await session.get(Subscription, sub_id)
        assert sub is not None
        sub.grace_until = utcnow() - timedelta(seconds=1)
    assert await expire_due_subscriptions(runtime) == 1
    assert await _served_keys(runtime, account_id) == set()
    async with unit_of_work(runtime.sessionmaker) as session:
        sub = await session.get(Subscription, sub_id)
        assert sub is not None
        assert sub.status == SubscriptionStatus.expired
        assert sub.ended_at == sub.grace_until
        assert await subscription_service.access_plan(session, account_id) is None


async def test_provider_renewal_keeps_access_through_the_margin(runtime: Runtime) -> None:
    account_id, sub_id, key = await _provider_subscribed(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        sub = await session.get(Subscription, sub_id)
        assert sub is not None
        # The period ended an hour ago; Stripe is charging for the next one.
        sub.current_period_end = utcnow() - timedelta(hours=1)
    assert await expire_due_subscriptions(runtime) == 0
    assert await _served_keys(runtime, account_id) == {key}
    async with unit_of_work(runtime.sessionmaker) as session:
        overview = await subscription_service.overview(session, account_id)
        assert describe_next(overview.subscription).startswith("Renewing: the payment")
        # Cancelled, it has no margin: the job ends it.
        overview.subscription.cancel_at_period_end = True
    assert await expire_due_subscriptions(runtime) == 1
    assert await _served_keys(runtime, account_id) == set()


async def test_an_older_provider_event_changes_nothing(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    sub = await create_subscription(session, account)
    now = utcnow()
    end = sub.current_period_end
    assert await subscription_service.provider_updated(
        session, runtime, sub, now, cancel_at_period_end=True, period_end=end, renewing=True
    )
    assert not await subscription_service.provider_updated(
        session,
        runtime,
        sub,
        now - timedelta(seconds=1),
        cancel_at_period_end=False,
        period_end=end + timedelta(days=9),
        renewing=True,
    )
    assert not await subscription_service.provider_payment_failed(
        session, runtime, sub, now - timedelta(seconds=1)
    )
    assert (sub.cancel_at_period_end, sub.current_period_end, sub.status) == (True, end, "active")
    # An end at the provider is final, whatever its age.
    assert await subscription_service.provider_ended(session, runtime, sub, now - timedelta(days=1))
    assert sub.status == SubscriptionStatus.canceled
    assert not await subscription_service.provider_ended(session, runtime, sub, now)
