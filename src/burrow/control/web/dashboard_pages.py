"""The start page and the dashboard: the plan, its status, what happens next, and cancelling
(with a confirmation that states the day access ends) or resuming.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import Request, Response

from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.models import Account, Subscription, SubscriptionStatus
from burrow.control.subscriptions.service import (
    NoSubscription,
    SubscriptionDetails,
    describe_next,
    gives_access,
)
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.web.auth import OptionalWebAccount, WebAccount, WebPerson
from burrow.control.web.forms import press
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()


def access_ends(subscription: Subscription) -> datetime:
    """The day access would end if the customer cancelled now (or has cancelled)."""
    if subscription.status == SubscriptionStatus.past_due and subscription.grace_until:
        return subscription.grace_until
    return subscription.current_period_end


async def _overview(session: SessionDep, account: Account) -> SubscriptionDetails | None:
    try:
        return await subscription_service.overview(session, account.id)
    except NoSubscription:
        return None


@router.get("/")
async def home(request: Request, account: OptionalWebAccount) -> Response:
    return redirect(request, "/dashboard" if account is not None else "/login")


@router.get("/dashboard")
async def dashboard(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
    person: WebPerson,
) -> Response:
    details = await _overview(session, account)
    trial = runtime.policy.trial
    context = {
        "account": person,
        "details": details,
        "sub": details.subscription if details else None,
        "plan": details.plan if details else None,
        "next": describe_next(details.subscription) if details else None,
        "has_access": gives_access(details.subscription) if details else False,
        "access_ends": access_ends(details.subscription) if details else None,
        "trial_offered": trial is not None and trial.enabled,
        "trial_days": trial.days if trial is not None else None,
    }
    return render(request, "dashboard.html", context)


@router.get("/dashboard/cancel")
async def cancel_confirm(request: Request, session: SessionDep, account: WebAccount) -> Response:
    details = await _overview(session, account)
    if details is None or not gives_access(details.subscription):
        return redirect(request, "/dashboard", flash="There is nothing to cancel.", kind="info")
    return render(
        request,
        "cancel.html",
        {
            "sub": details.subscription,
            "plan": details.plan,
            "access_ends": access_ends(details.subscription),
        },
    )


async def _change(
    request: Request, session: SessionDep, account: Account, action: str, runtime: RuntimeDep
) -> Response:
    async def change() -> SubscriptionDetails:
        if action == "cancel":
            return await subscription_service.cancel(session, runtime, account.id)
        if action == "resume":
            return await subscription_service.resume(session, runtime, account.id)
        return await subscription_service.start_trial(session, runtime, account)

    return await press(
        request,
        session,
        change,
        back="/dashboard",
        done=lambda details: redirect(request, "/dashboard", flash=details.message),
    )


@router.post("/dashboard/cancel")
async def cancel(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await _change(request, session, account, "cancel", runtime)


@router.post("/dashboard/resume")
async def resume(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await _change(request, session, account, "resume", runtime)


@router.post("/dashboard/trial")
async def start_trial(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await _change(request, session, account, "trial", runtime)
