"""Subscription endpoints: the customer's own subscription and the administrators' grant."""

from __future__ import annotations

from fastapi import APIRouter

from burrow.control.deps import CurrentAccount, CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.params import AccountId
from burrow.control.plans.schemas import PlanOut
from burrow.control.problems import problem_responses
from burrow.control.subscriptions.schemas import GrantIn, SubscriptionChangeOut, SubscriptionOut
from burrow.control.subscriptions.service import (
    SubscriptionDetails,
    describe_next,
    gives_access,
)
from burrow.control.subscriptions.service import subscription as subscription_service

customer_router = APIRouter(prefix="/api/v1/subscriptions", tags=["subscriptions"])
admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


def _out(details: SubscriptionDetails) -> SubscriptionOut:
    sub = details.subscription
    return SubscriptionOut(
        id=sub.id,
        plan=PlanOut.model_validate(details.plan),
        status=sub.status,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        canceled_at=sub.canceled_at,
        ended_at=sub.ended_at,
        has_access=gives_access(sub),
        next=describe_next(sub),
    )


def _change(details: SubscriptionDetails) -> SubscriptionChangeOut:
    return SubscriptionChangeOut(message=details.message, subscription=_out(details))


@customer_router.get(
    "/current",
    summary="Your current subscription",
    response_model=SubscriptionOut,
    responses=problem_responses(401, 404),
)
async def get_current(session: SessionDep, account: CurrentAccount) -> SubscriptionOut:
    """The subscription now in force, or the last one and when it ended. ``next`` says what
    happens next in plain words."""
    return _out(await subscription_service.overview(session, account.id))


@customer_router.post(
    "/trial",
    status_code=201,
    summary="Start the free trial",
    response_model=SubscriptionChangeOut,
    responses=problem_responses(401, 403, 409),
)
async def start_trial(
    session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> SubscriptionChangeOut:
    """Once per email address, ever, and only after the address is verified."""
    return _change(await subscription_service.start_trial(session, runtime, account))


@customer_router.post(
    "/current/cancel",
    summary="Cancel at the end of the period",
    response_model=SubscriptionChangeOut,
    responses=problem_responses(401, 404, 409, 502),
)
async def cancel_current(
    session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> SubscriptionChangeOut:
    """Access continues until the period end; then the subscription ends instead of renewing.
    A card subscription is cancelled at Stripe too, so the card is not charged again; if
    Stripe cannot be reached, nothing changes (502)."""
    return _change(await subscription_service.cancel(session, runtime, account.id))


@customer_router.post(
    "/current/resume",
    summary="Undo a cancellation",
    response_model=SubscriptionChangeOut,
    responses=problem_responses(401, 404, 409, 502),
)
async def resume_current(
    session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> SubscriptionChangeOut:
    """Allowed until the period end: the subscription renews again (at Stripe too, for a card
    subscription; if Stripe cannot be reached, nothing changes: 502)."""
    return _change(await subscription_service.resume(session, runtime, account.id))


@admin_router.post(
    "/accounts/{account_id}/grant",
    summary="Grant or extend a paid period",
    response_model=SubscriptionChangeOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def grant_period(
    account_id: AccountId,
    body: GrantIn,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: CurrentAdmin,
) -> SubscriptionChangeOut:
    """An active subscription on the same plan is extended from its period end; otherwise a
    new active subscription starts now and replaces any trial."""
    # grant_by records the grant in the admin audit trail.
    details = await subscription_service.grant_by(
        session,
        runtime,
        admin,
        account_id,
        body.plan_code,
        months=body.months,
        days=body.days,
        reason=body.reason,
    )
    return _change(details)


router = APIRouter()
router.include_router(customer_router)
router.include_router(admin_router)
