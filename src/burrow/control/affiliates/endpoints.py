"""Affiliate program endpoints: a customer's application and dashboard; the administrators'
applications and decisions, held commissions and payout batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from burrow.control.affiliates.schemas import (
    AffiliateAdminRead,
    AffiliateApply,
    AffiliateDashboard,
    AffiliateDecision,
    AffiliateRead,
    CommissionRead,
    CommissionReview,
    PayoutBatchDetail,
    PayoutBatchRead,
    PayoutItemRead,
)
from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.deps import CurrentAccount, CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.params import id_path
from burrow.control.problems import problem_responses

customer_router = APIRouter(prefix="/api/v1/affiliates", tags=["affiliates"])
admin_router = APIRouter(prefix="/api/v1/admin/affiliates", tags=["admin"])

Id = Annotated[int, id_path("The id.")]


@customer_router.post(
    "",
    status_code=201,
    summary="Apply to the affiliate program",
    response_model=AffiliateRead,
    responses=problem_responses(401, 403, 409, 422),
)
async def apply(
    body: AffiliateApply, session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> AffiliateRead:
    """With your contact details, your promotional site and the PayPal account payouts go
    to; an administrator approves or denies the application."""
    found = await affiliate_service.apply(session, runtime, account, body)
    return AffiliateRead.model_validate(found)


@customer_router.get(
    "/me",
    summary="Your affiliate link, referrals, commissions and payouts",
    response_model=AffiliateDashboard,
    responses=problem_responses(401, 403),
)
async def dashboard(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> AffiliateDashboard:
    base = runtime.settings.public_url or str(request.base_url)
    found = await affiliate_service.dashboard(session, runtime, account.id, base)
    return AffiliateDashboard(
        affiliate=AffiliateRead.model_validate(found.affiliate),
        link=found.link,
        signups=found.signups,
        paid_orders=found.paid_orders,
        balance_minor=found.balance_minor,
        currency=found.currency,
        by_status=found.by_status,
        commissions=[CommissionRead.model_validate(c) for c in found.commissions],
        payouts=[PayoutItemRead.model_validate(i) for i in found.payouts],
    )


@admin_router.get(
    "",
    summary="Applications and affiliates, with refund rate and balance",
    response_model=list[AffiliateAdminRead],
    responses=problem_responses(401, 403),
)
async def list_affiliates(
    session: SessionDep, runtime: RuntimeDep, _admin: CurrentAdmin
) -> list[AffiliateAdminRead]:
    return [
        AffiliateAdminRead(
            **AffiliateRead.model_validate(row.affiliate).model_dump(),
            balance_minor=row.balance_minor,
            referred_orders=row.refund_rate.orders,
            refunded_orders=row.refund_rate.refunded,
            refund_rate_percent=float(row.refund_rate.percent),
        )
        for row in await affiliate_service.admin_rows(session, runtime)
    ]


@admin_router.post(
    "/{affiliate_id}/decision",
    summary="Approve, deny, suspend or terminate an affiliate, with the reason",
    response_model=AffiliateRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def decide(
    affiliate_id: Id,
    body: AffiliateDecision,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: CurrentAdmin,
) -> AffiliateRead:
    found = await affiliate_service.decide(
        session, runtime, admin, affiliate_id, body.decision, body.reason
    )
    return AffiliateRead.model_validate(found)


@admin_router.get(
    "/commissions/held",
    summary="Commissions held for review (self-referrals)",
    response_model=list[CommissionRead],
    responses=problem_responses(401, 403),
)
async def held(session: SessionDep, _admin: CurrentAdmin) -> list[CommissionRead]:
    return [CommissionRead.model_validate(c) for c in await affiliate_service.held(session)]


@admin_router.post(
    "/commissions/{commission_id}/review",
    summary="Clear or reject a held commission",
    response_model=CommissionRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def review(
    commission_id: Id, body: CommissionReview, session: SessionDep, admin: CurrentAdmin
) -> CommissionRead:
    found = await affiliate_service.review(
        session, admin, commission_id, body.decision, body.reason
    )
    return CommissionRead.model_validate(found)


@admin_router.post(
    "/payouts",
    status_code=202,
    summary="Pay every affiliate whose payable balance reaches the minimum",
    response_model=PayoutBatchRead,
    responses=problem_responses(401, 403, 409),
)
async def pay_out(session: SessionDep, runtime: RuntimeDep, admin: CurrentAdmin) -> PayoutBatchRead:
    """One PayPal batch; it is stored first and sent right after, under a sender_batch_id
    PayPal pays at most once. Two payouts started at once pay each commission once."""
    batch = await affiliate_service.start_payout(session, runtime, admin)
    return PayoutBatchRead.model_validate(batch)


@admin_router.get(
    "/payouts",
    summary="Payout batches, newest first",
    response_model=list[PayoutBatchRead],
    responses=problem_responses(401, 403),
)
async def batches(session: SessionDep, _admin: CurrentAdmin) -> list[PayoutBatchRead]:
    return [PayoutBatchRead.model_validate(b) for b in await affiliate_service.batches(session)]


@admin_router.get(
    "/payouts/{batch_id}",
    summary="A payout batch and its items",
    response_model=PayoutBatchDetail,
    responses=problem_responses(401, 403, 404),
)
async def batch(batch_id: Id, session: SessionDep, _admin: CurrentAdmin) -> PayoutBatchDetail:
    found = await affiliate_service.get_batch(session, batch_id)
    items = await affiliate_service.items(session, batch_id)
    return PayoutBatchDetail(
        **PayoutBatchRead.model_validate(found).model_dump(),
        items=[PayoutItemRead.model_validate(i) for i in items],
    )


@admin_router.post(
    "/payouts/{batch_id}/send",
    status_code=202,
    summary="Send a payout batch again, or read how its items ended",
    response_model=PayoutBatchRead,
    responses=problem_responses(401, 403, 404, 409, 502),
)
async def send_batch(
    batch_id: Id, session: SessionDep, runtime: RuntimeDep, admin: CurrentAdmin
) -> PayoutBatchRead:
    """A batch whose answer was lost is sent again under its own sender_batch_id, which PayPal
    pays at most once; a sent one is asked for its items' results (returned money goes back
    to the affiliate's balance)."""
    found = await affiliate_service.resend(session, runtime, admin, batch_id)
    return PayoutBatchRead.model_validate(found)


router = APIRouter()
router.include_router(customer_router)
router.include_router(admin_router)
