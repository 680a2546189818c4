"""Plans mirrored from the policy: added, updated, retired (never deleted), restored."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import Plan, PlanKind
from burrow.control.plans.service import plan as plan_service
from burrow.control.policy.schemas import PlanSection, Policy
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service
from tests.support.factories import create_account, create_subscription, get_plan


def _without(policy: Policy, code: str) -> Policy:
    plans = {k: v for k, v in policy.plans.items() if k != code}
    return policy.model_copy(update={"plans": plans})


async def test_start_mirrors_every_policy_plan(session: AsyncSession, runtime: Runtime) -> None:
    plans = {plan.code: plan for plan in await plan_service.list_all(session)}
    assert set(plans) == set(runtime.policy.plans)
    business = plans["business-monthly"]
    assert business.kind == PlanKind.business
    assert (business.price_minor, business.currency, business.period_months) == (999, "USD", 1)
    assert (business.device_limit, business.connection_limit) == (1, 1)
    personal = plans["personal-yearly"]
    # Absent limits in the policy mean unlimited.
    assert (personal.device_limit, personal.connection_limit) == (None, None)
    assert personal.period_months == 12
    assert all(plan.retired_at is None for plan in plans.values())


async def test_sync_again_changes_nothing(session: AsyncSession, runtime: Runtime) -> None:
    result = await plan_service.sync_from_policy(session, runtime.policy)
    assert not result.changed
    count = await session.scalar(select(func.count()).select_from(Plan))
    assert count == len(runtime.policy.plans)


async def test_sync_adds_new_and_updates_changed(session: AsyncSession, runtime: Runtime) -> None:
    plans = dict(runtime.policy.plans)
    plans["business-monthly"] = plans["business-monthly"].model_copy(
        update={"price_minor": 1299, "device_limit": 3, "simultaneous_connections": None}
    )
    plans["family-yearly"] = PlanSection(
        name="Family, 12 months",
        price_minor=7999,
        currency="EUR",
        period_months=12,
        device_limit=6,
        simultaneous_connections=4,
    )
    result = await plan_service.sync_from_policy(
        session, runtime.policy.model_copy(update={"plans": plans})
    )
    assert result.added == ["family-yearly"]
    assert result.updated == ["business-monthly"]
    assert result.retired == []
    assert result.restored == []

    business = await get_plan(session, "business-monthly")
    assert (business.price_minor, business.device_limit, business.connection_limit) == (
        1299,
        3,
        None,
    )
    family = await get_plan(session, "family-yearly")
    assert (family.kind, family.currency, family.connection_limit) == (PlanKind.personal, "EUR", 4)


async def test_plan_leaving_policy_is_retired_not_deleted(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    sub = await create_subscription(session, account, plan_code="personal-yearly")

    result = await plan_service.sync_from_policy(
        session, _without(runtime.policy, "personal-yearly")
    )

    assert result.retired == ["personal-yearly"]
    retired = await get_plan(session, "personal-yearly")
    assert retired.retired_at is not None
    assert "personal-yearly" not in {p.code for p in await plan_service.list_active(session)}
    assert "personal-yearly" in {p.code for p in await plan_service.list_all(session)}
    # The subscription still points at the plan and loads with it.
    details = await subscription_service.overview(session, account.id)
    assert details.subscription.id == sub.id
    assert details.plan.code == "personal-yearly"
    assert (await subscription_service.access_plan(session, account.id)) is not None

    # A second sync without it does not move the retirement date.
    again = await plan_service.sync_from_policy(
        session, _without(runtime.policy, "personal-yearly")
    )
    assert not again.changed
    assert (await get_plan(session, "personal-yearly")).retired_at == retired.retired_at


async def test_plan_coming_back_is_offered_again(session: AsyncSession, runtime: Runtime) -> None:
    await plan_service.sync_from_policy(session, _without(runtime.policy, "business-monthly"))
    assert (await get_plan(session, "business-monthly")).retired_at is not None

    result = await plan_service.sync_from_policy(session, runtime.policy)

    assert result.restored == ["business-monthly"]
    assert (await get_plan(session, "business-monthly")).retired_at is None
    count = await session.scalar(
        select(func.count()).select_from(Plan).where(Plan.code == "business-monthly")
    )
    assert count == 1
