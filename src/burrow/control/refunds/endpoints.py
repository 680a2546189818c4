"""Refund endpoints: the customer's request and history, the administrators' queue and
decisions."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter

from burrow.control.deps import CurrentAccount, CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.models import utcnow
from burrow.control.params import id_path
from burrow.control.problems import problem_responses
from burrow.control.refunds.schemas import (
    AdminRefundOut,
    ApproveIn,
    FindingIn,
    RefundOut,
    RefundQueueSummaryOut,
    RefundRequestIn,
    RefuseIn,
    RuleOutcomeOut,
)
from burrow.control.refunds.service import RefundView
from burrow.control.refunds.service import refund as refund_service
from burrow.control.support.service import support as support_service

customer_router = APIRouter(tags=["refunds"])
admin_router = APIRouter(prefix="/api/v1/admin/refunds", tags=["admin"])

Id = Annotated[int, id_path("The id.")]


def _fields(view: RefundView) -> dict[str, Any]:
    request = view.request
    return {
        "id": request.id,
        "order_id": request.order_id,
        "status": request.status,
        "reason": request.reason,
        "requested_at": request.requested_at,
        "due_at": request.due_at,
        "decided_at": request.decided_at,
        "amount_minor": request.amount_minor,
        "currency": view.order.currency,
        "decision_reason": request.decision_reason,
        "terms_version": request.terms_version,
        "executed_at": request.executed_at,
        "outcomes": [
            RuleOutcomeOut(
                rule=o.rule,
                passed=o.passed,
                needs_judgement=o.needs_judgement,
                message=o.message,
                evidence=json.loads(o.evidence),
            )
            for o in view.outcomes
        ],
    }


def _out(view: RefundView) -> RefundOut:
    return RefundOut(**_fields(view))


def _admin_out(view: RefundView) -> AdminRefundOut:
    left = view.seconds_left(utcnow())
    return AdminRefundOut(
        **_fields(view),
        account_id=view.request.account_id,
        order_amount_minor=view.order.amount_minor,
        unsupported_device=view.request.unsupported_device,
        seconds_left=left,
        overdue=left is not None and left < 0,
    )


@customer_router.post(
    "/api/v1/billing/orders/{order_id}/refund",
    status_code=201,
    summary="Ask for a refund of one of your orders",
    response_model=RefundOut,
    responses=problem_responses(401, 404, 409, 422),
)
async def request_refund(
    order_id: Id,
    body: RefundRequestIn,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
) -> RefundOut:
    """Every rule of the provider's refund policy is checked and shown with what it found:
    the request is approved at once, refused (naming the rules it fails), or queued for a
    person, who acts before ``due_at``."""
    if body.support_request_id is not None:
        # Checked before anything is decided: an unknown conversation changes nothing.
        await support_service.own_one(session, account, body.support_request_id)
    view = await refund_service.request(session, runtime, account, order_id, body.reason)
    if body.support_request_id is not None:
        await support_service.link_refund(
            session, account, body.support_request_id, view.request.id
        )
    return _out(view)


@customer_router.get(
    "/api/v1/refunds",
    summary="Your refund requests, rule by rule",
    response_model=list[RefundOut],
    responses=problem_responses(401),
)
async def list_refunds(session: SessionDep, account: CurrentAccount) -> list[RefundOut]:
    return [_out(view) for view in await refund_service.list_own(session, account.id)]


@admin_router.get(
    "",
    summary="Refund requests waiting for a decision",
    response_model=list[AdminRefundOut],
    responses=problem_responses(401, 403),
)
async def refund_queue(session: SessionDep, _admin: CurrentAdmin) -> list[AdminRefundOut]:
    """Ordered by deadline: overdue requests first, then the nearest deadline."""
    return [_admin_out(view) for view in await refund_service.queue(session)]


@admin_router.get(
    "/summary",
    summary="How many refund requests wait, and how many are overdue",
    response_model=RefundQueueSummaryOut,
    responses=problem_responses(401, 403),
)
async def refund_queue_summary(session: SessionDep, _admin: CurrentAdmin) -> RefundQueueSummaryOut:
    """For dashboards and alerts: overdue requests broke the policy's service level."""
    queued, overdue = await refund_service.queue_summary(session)
    return RefundQueueSummaryOut(queued=queued, overdue=overdue)


@admin_router.post(
    "/{request_id}/approve",
    summary="Approve a refund (in full, or a partial amount)",
    response_model=AdminRefundOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def approve_refund(
    request_id: Id,
    body: ApproveIn,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: CurrentAdmin,
) -> AdminRefundOut:
    """The money goes back through the order's provider, the subscription ends and access
    is removed."""
    view = await refund_service.approve(
        session, runtime, admin, request_id, body.amount_minor, body.reason
    )
    return _admin_out(view)


@admin_router.post(
    "/{request_id}/refuse",
    summary="Refuse a refund",
    response_model=AdminRefundOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def refuse_refund(
    request_id: Id, body: RefuseIn, session: SessionDep, admin: CurrentAdmin
) -> AdminRefundOut:
    view = await refund_service.refuse(session, admin, request_id, body.reason)
    return _admin_out(view)


@admin_router.post(
    "/{request_id}/findings",
    summary="Record support's finding on a queued request",
    response_model=AdminRefundOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def record_finding(
    request_id: Id,
    body: FindingIn,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: CurrentAdmin,
) -> AdminRefundOut:
    """An unsupported device, OS or site: the request is evaluated again with the finding."""
    view = await refund_service.record_finding(
        session, runtime, admin, request_id, unsupported_device=body.unsupported_device
    )
    return _admin_out(view)


router = APIRouter()
router.include_router(customer_router)
router.include_router(admin_router)
