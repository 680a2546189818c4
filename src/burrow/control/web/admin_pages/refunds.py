"""The admin panel's refund queue: ordered by deadline with the time left, each request's
rule-by-rule evaluation with its evidence, and the decisions. Also the payment events that
failed: parked after their last attempt, with their error and a retry.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from fastapi import BackgroundTasks, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.schemas import Reason, StatusReason
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.models import Account, WebhookEvent, utcnow
from burrow.control.params import id_path
from burrow.control.refunds.service import refund as refund_service
from burrow.control.web.admin_pages.common import PanelAdmin, RefundIdPath, time_left
from burrow.control.web.forms import Form, M, press, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()


@dataclass
class _RefundRow:
    view: Any
    seconds_left: int | None
    time_left: str
    overdue: bool
    outcomes: list[dict[str, Any]]


async def _refunds_page(
    request: Request,
    session: AsyncSession,
    forms: dict[str, Form] | None = None,
    status_code: int = 200,
) -> Response:
    now = utcnow()
    rows = []
    for view in await refund_service.queue(session):
        left = view.seconds_left(now)
        rows.append(
            _RefundRow(
                view=view,
                seconds_left=left,
                time_left=time_left(left),
                overdue=left is not None and left < 0,
                outcomes=[
                    {
                        "rule": o.rule,
                        "passed": o.passed,
                        "needs_judgement": o.needs_judgement,
                        "message": o.message,
                        "evidence": json.dumps(json.loads(o.evidence), indent=1, sort_keys=True),
                    }
                    for o in view.outcomes
                ],
            )
        )
    return render(
        request,
        "admin/refunds.html",
        {"rows": rows, "forms": forms or {}},
        status_code=status_code,
    )


@router.get("/refunds")
async def refunds(request: Request, session: SessionDep, admin: PanelAdmin) -> Response:
    return await _refunds_page(request, session)


class _Decision(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: Reason
    # In the currency's units ("12.50"), as the queue shows every amount.
    amount: Decimal | None = Field(None, gt=0, le=100_000_000, decimal_places=2)

    @property
    def amount_minor(self) -> int | None:
        return None if self.amount is None else int(self.amount * 100)


async def _decide(
    request: Request,
    session: AsyncSession,
    admin: Account,
    request_id: int,
    verb: str,
    done: str,
    model: type[M],
    act: Callable[[M], Awaitable[None]],
) -> Response:
    """The queue's ``verb`` form of one request: valid, ``act`` decides and records it in the
    audit trail; refused, the queue shows the form again with why, and what ``act`` did is
    undone (its savepoint)."""
    key = f"{verb}-{request_id}"
    return await submit(
        request,
        session,
        model,
        act,
        page=lambda form, status: _refunds_page(request, session, {key: form}, status),
        done=lambda _body, _: redirect(
            request, "/admin/refunds", flash=f"Refund request {request_id} is {done}."
        ),
    )


@router.post("/refunds/{request_id}/approve")
async def approve_refund(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    request_id: RefundIdPath,
) -> Response:
    async def act(body: _Decision) -> None:
        await refund_service.approve(
            session, runtime, admin, request_id, body.amount_minor, body.reason
        )

    return await _decide(request, session, admin, request_id, "approve", "approved", _Decision, act)


@router.post("/refunds/{request_id}/refuse")
async def refuse_refund(
    request: Request,
    session: SessionDep,
    admin: PanelAdmin,
    request_id: RefundIdPath,
) -> Response:
    async def act(body: StatusReason) -> None:
        await refund_service.refuse(session, admin, request_id, body.reason)

    return await _decide(
        request, session, admin, request_id, "refuse", "refused", StatusReason, act
    )


@router.post("/refunds/{request_id}/finding")
async def refund_finding(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    request_id: RefundIdPath,
) -> Response:
    form = await Form.read(request)
    unsupported = form.raw("unsupported_device") == "yes"
    return await press(
        request,
        session,
        lambda: refund_service.record_finding(
            session, runtime, admin, request_id, unsupported_device=unsupported
        ),
        back="/admin/refunds",
        done=lambda view: redirect(
            request,
            "/admin/refunds",
            flash=f"The finding is recorded; request {request_id} is now {view.request.status}.",
        ),
    )


# --- payment events that failed ---------------------------------------------------------------


@router.get("/payment-events")
async def payment_events(request: Request, session: SessionDep, admin: PanelAdmin) -> Response:
    """Provider events parked after their last attempt, with their error and a retry."""
    failed = await webhook_service.failed(session)
    return render(request, "admin/payment_events.html", {"events": failed})


@router.post("/payment-events/{event_row_id}/retry")
async def retry_payment_event(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    event_row_id: Annotated[int, id_path("The stored event's id.")],
    background: BackgroundTasks,
) -> Response:
    await Form.read(request)  # the CSRF check

    def tried(retried: WebhookEvent) -> Response:
        background.add_task(webhook_service.process_one, runtime, retried.id)
        return redirect(
            request, "/admin/payment-events", flash=f"Event {retried.event_id} is tried again."
        )

    return await press(
        request,
        session,
        lambda: webhook_service.retry(session, admin, event_row_id),
        back="/admin/payment-events",
        done=tried,
    )
