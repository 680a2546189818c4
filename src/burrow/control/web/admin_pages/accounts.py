"""The admin panel's accounts: search, view what the policy lets be seen, suspend,
unsuspend, terminate for a named clause of the terms, grant time, record a manual payment,
send the verification email again, remove a device.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.schemas import SearchText, StatusChange, StatusReason
from burrow.control.accounts.service import account as account_service
from burrow.control.accounts.service.operators import AccountRow
from burrow.control.admin.schemas import TerminationIn
from burrow.control.audit.repository import ActionFilters
from burrow.control.audit.service import admin_audit
from burrow.control.billing.service import billing as billing_service
from burrow.control.connections.service import connection as connection_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.devices.service import device as device_service
from burrow.control.models import Account, AccountStatus, PaymentMethod
from burrow.control.plans.service import plan as plan_service
from burrow.control.policy.clauses import terms_clauses
from burrow.control.refunds.service import refund as refund_service
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.schemas import GrantIn
from burrow.control.subscriptions.service import NoSubscription, describe_next
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.web.admin_pages.common import (
    PAGE_SIZE,
    AccountIdPath,
    DeviceIdPath,
    PanelAdmin,
)
from burrow.control.web.forms import Form, M, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()


class _Search(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: SearchText | None = None
    status: AccountStatus | None = None
    plan: str | None = Field(None, max_length=64)
    page: int = Field(1, ge=1, le=1_000_000)


@router.get("/accounts")
async def accounts(
    request: Request,
    session: SessionDep,
    admin: PanelAdmin,
    q: Annotated[str | None, Query(max_length=400)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    plan: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    filters = (("q", q), ("status", status), ("plan", plan))
    form = Form.empty(**{k: v for k, v in filters if v})
    form.values.update({"page": page} if page else {})
    search = form.validate(_Search)
    found: list[Account] = []
    rows: list[AccountRow] = []
    total = 0
    current = 1
    if search is not None:
        current = search.page
        result = await account_service.search(
            session,
            search.q,
            search.status,
            PAGE_SIZE,
            (current - 1) * PAGE_SIZE,
            plan_code=search.plan,
        )
        found, total = result.items, result.total
        rows = await account_service.rows(session, found)
    query = {k: v for k, v in filters if v}
    return render(
        request,
        "admin/accounts.html",
        {
            "form": form,
            "accounts": found,
            "rows": rows,
            "plans": list(await plan_service.list_all(session)),
            "total": total,
            "page": current,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "query": urlencode(query),
            "statuses": [s.value for s in AccountStatus],
        },
        status_code=200 if search is not None else 422,
    )


async def _account_page(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    account_id: int,
    forms: dict[str, Form] | None = None,
    status_code: int = 200,
) -> Response:
    account = await account_service.get(session, account_id)
    policy = runtime.policy
    try:
        details = await subscription_service.overview(session, account.id)
        subscription: dict[str, Any] | None = {
            "plan": details.plan,
            "row": details.subscription,
            "next": describe_next(details.subscription),
        }
    except NoSubscription:
        subscription = None
    devices = list(await device_service.list(session, account))
    statuses = await connection_service.device_statuses(runtime, account.id)
    connected = len([s for s in statuses.values() if s.state == "connected"])
    records = None
    if policy.privacy.keeps_connection_records:
        records = await connection_service.records(session, runtime, account, 20)
    orders = await billing_service.orders(session, account.id)
    refunds = await refund_service.list_own(session, account.id)
    history = await admin_audit.search(
        session, ActionFilters(target_type="account", target_id=str(account.id)), limit=20
    )
    plans = list(await plan_service.list_all(session))
    forms = forms or {}
    return render(
        request,
        "admin/account.html",
        {
            "account": account,
            "subscription": subscription,
            "devices": devices,
            "device_statuses": statuses,
            "connected_now": connected,
            "records": records,
            "strict": not policy.privacy.keeps_connection_records,
            "show_login_ip": policy.privacy.store_last_login_ip,
            "orders": orders,
            "refunds": refunds,
            "history": history.items,
            "plans": plans,
            "clauses": terms_clauses(policy),
            "terms_version": policy.terms.version,
            "suspend_form": forms.get("suspend") or Form.empty(),
            "unsuspend_form": forms.get("unsuspend") or Form.empty(),
            "terminate_form": forms.get("terminate") or Form.empty(),
            "grant_form": forms.get("grant") or Form.empty(months="1"),
            "payment_form": forms.get("payment") or Form.empty(),
            "verify_form": forms.get("verify") or Form.empty(),
            "remove_forms": {d.id: forms.get(f"remove-{d.id}") or Form.empty() for d in devices},
            # A removal refused for a device no longer listed (removed meanwhile, say).
            "removal_refused": next(
                (
                    form.message
                    for key, form in forms.items()
                    if key.startswith("remove-") and key not in {f"remove-{d.id}" for d in devices}
                ),
                None,
            ),
        },
        status_code=status_code,
    )


@router.get("/accounts/{account_id}")
async def account_detail(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    account_id: AccountIdPath,
) -> Response:
    return await _account_page(request, session, runtime, account_id)


async def _account_action(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    admin: Account,
    account_id: int,
    name: str,
    model: type[M],
    act: Callable[[M], Awaitable[str]],
    *,
    fields: Iterable[str] = (),
) -> Response:
    """One of the account page's forms (``name``): valid, ``act`` runs and its message is
    flashed on the account page; refused, the page shows the form again with why, and what
    ``act`` did is undone (its savepoint)."""
    return await submit(
        request,
        session,
        model,
        act,
        page=lambda form, status: _account_page(
            request, session, runtime, account_id, {name: form}, status
        ),
        done=lambda _body, flash: redirect(request, f"/admin/accounts/{account_id}", flash=flash),
        fields=fields,
    )


@router.post("/accounts/{account_id}/suspend")
async def suspend(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    account_id: AccountIdPath,
) -> Response:
    async def act(body: StatusReason) -> str:
        await account_service.suspend(session, runtime, admin, account_id, body.reason)
        return "The account is suspended: VPN access ended."

    return await _account_action(
        request, session, runtime, admin, account_id, "suspend", StatusReason, act
    )


@router.post("/accounts/{account_id}/unsuspend")
async def unsuspend(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    account_id: AccountIdPath,
) -> Response:
    async def act(body: StatusChange) -> str:
        await account_service.unsuspend(session, runtime, admin, account_id, body.reason)
        return "The account is active again."

    return await _account_action(
        request, session, runtime, admin, account_id, "unsuspend", StatusChange, act
    )


@router.post("/accounts/{account_id}/terminate")
async def terminate(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    account_id: AccountIdPath,
) -> Response:
    async def act(body: TerminationIn) -> str:
        await account_service.terminate(
            session, runtime, admin, account_id, body.reason, clause=body.clause
        )
        return f"The account is terminated for breaking “{body.clause}”."

    return await _account_action(
        request,
        session,
        runtime,
        admin,
        account_id,
        "terminate",
        TerminationIn,
        act,
        fields=("clause",),
    )


@router.post("/accounts/{account_id}/grant")
async def grant(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    account_id: AccountIdPath,
) -> Response:
    async def act(body: GrantIn) -> str:
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
        return details.message or "The time is granted."

    return await _account_action(
        request, session, runtime, admin, account_id, "grant", GrantIn, act
    )


@router.post("/accounts/{account_id}/verification-email")
async def resend_verification(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    account_id: AccountIdPath,
) -> Response:
    async def act(body: StatusChange) -> str:
        account = await account_service.resend_verification_by(
            session, runtime, admin, account_id, body.reason
        )
        return f"A new verification link is on its way to {account.email}."

    return await _account_action(
        request, session, runtime, admin, account_id, "verify", StatusChange, act
    )


@router.post("/accounts/{account_id}/devices/{device_id}/remove")
async def remove_device(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    account_id: AccountIdPath,
    device_id: DeviceIdPath,
) -> Response:
    async def act(body: StatusReason) -> str:
        device = await device_service.remove_by(
            session, runtime, admin, account_id, device_id, body.reason
        )
        return f"The device {device.name} is removed; its key stops working on every server."

    return await _account_action(
        request, session, runtime, admin, account_id, f"remove-{device_id}", StatusReason, act
    )


class _ManualPayment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    plan_code: str = Field(min_length=1, max_length=64)
    # In the currency's units, as every amount on the panel.
    amount: Decimal = Field(gt=0, le=100_000_000, decimal_places=2)
    reference: str = Field(min_length=1, max_length=200)


@router.post("/accounts/{account_id}/payment")
async def record_payment(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    account_id: AccountIdPath,
) -> Response:
    async def act(body: _ManualPayment) -> str:
        plan = next(
            (p for p in await plan_service.list_all(session) if p.code == body.plan_code), None
        )
        currency = plan.currency if plan is not None else ""
        recorded = await billing_service.record_manual_payment(
            session,
            runtime,
            admin,
            account_id,
            body.plan_code,
            int(body.amount * 100),
            currency,
            PaymentMethod.manual,
            body.reference,
        )
        return recorded.message

    return await _account_action(
        request,
        session,
        runtime,
        admin,
        account_id,
        "payment",
        _ManualPayment,
        act,
        fields=("plan_code", "reference"),
    )
