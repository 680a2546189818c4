"""Support desk endpoints: the customer's requests and messages (signed in, or signed out
with an email address), the administrators' queue, answers and decisions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from burrow.control.deps import CurrentAccount, CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.models import SupportVia, utcnow
from burrow.control.params import id_path
from burrow.control.problems import problem_responses
from burrow.control.support.schemas import (
    AdminSupportRequestOut,
    SignedOutSupportRequestIn,
    SupportAnswerIn,
    SupportMessageIn,
    SupportMessageOut,
    SupportOwnerIn,
    SupportRequestIn,
    SupportRequestOut,
    SupportStatusIn,
)
from burrow.control.support.service import SupportView
from burrow.control.support.service import support as support_service

router = APIRouter(prefix="/api/v1/support", tags=["support"])
admin_router = APIRouter(prefix="/api/v1/admin/support", tags=["admin"])

Id = Annotated[int, id_path("The support request's number.")]


def _fields(view: SupportView) -> dict[str, Any]:
    request = view.request
    return {
        "id": request.id,
        "topic": request.topic,
        "subject": request.subject,
        "status": request.status,
        "opened_at": request.opened_at,
        "due_at": request.due_at,
        "updated_at": request.updated_at,
        "resolved_at": request.resolved_at,
        "refund_request_id": request.refund_request_id,
        "messages": [
            SupportMessageOut(
                id=m.id, author=m.author, body=m.body, via=m.via, created_at=m.created_at
            )
            for m in view.messages
        ],
    }


def _out(view: SupportView) -> SupportRequestOut:
    return SupportRequestOut(**_fields(view))


def _admin_out(view: SupportView) -> AdminSupportRequestOut:
    now = utcnow()
    request = view.request
    return AdminSupportRequestOut(
        **_fields(view),
        account_id=request.account_id,
        requester_email=view.requester_email,
        owner_id=request.owner_id,
        owner_email=view.owner_email,
        overdue=view.overdue(now),
        seconds_left=view.seconds_left(now),
        cancel_account_id=request.cancel_account_id,
        cancel_account_email=view.cancel_account_email,
        cancelled_at=request.cancelled_at,
    )


# --- customers ---------------------------------------------------------------------------------


@router.post(
    "/requests",
    status_code=201,
    summary="Open a support request",
    response_model=SupportRequestOut,
    responses=problem_responses(401, 422),
)
async def open_request(
    body: SupportRequestIn, session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> SupportRequestOut:
    """Support answers by email and in the control panel, before ``due_at`` (the policy's
    time for the topic)."""
    view = await support_service.open(
        session,
        runtime,
        account=account,
        email=None,
        topic=body.topic,
        subject=body.subject,
        body=body.message,
        via=SupportVia.api,
    )
    return _out(view)


@router.post(
    "/requests/by-email",
    status_code=202,
    summary="Open a support request without an account",
    responses=problem_responses(422),
)
async def open_signed_out(
    body: SignedOutSupportRequestIn, session: SessionDep, runtime: RuntimeDep
) -> dict[str, str]:
    """The answer and a link to the conversation go to ``email``; nothing about the request
    is returned here."""
    await support_service.open(
        session,
        runtime,
        account=None,
        email=str(body.email),
        topic=body.topic,
        subject=body.subject,
        body=body.message,
        via=SupportVia.api,
    )
    return {"message": "Your request is with support; the link to it is on its way by email."}


@router.get(
    "/requests",
    summary="Your support requests",
    response_model=list[SupportRequestOut],
    responses=problem_responses(401),
)
async def own_requests(session: SessionDep, account: CurrentAccount) -> list[SupportRequestOut]:
    return [_out(view) for view in await support_service.own(session, account)]


@router.get(
    "/requests/{request_id}",
    summary="One of your support requests, with its conversation",
    response_model=SupportRequestOut,
    responses=problem_responses(401, 404),
)
async def own_request(
    request_id: Id, session: SessionDep, account: CurrentAccount
) -> SupportRequestOut:
    return _out(await support_service.own_one(session, account, request_id))


@router.post(
    "/requests/{request_id}/messages",
    status_code=201,
    summary="Write to support on one of your requests",
    response_model=SupportRequestOut,
    responses=problem_responses(401, 404, 422),
)
async def write(
    request_id: Id,
    body: SupportMessageIn,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
) -> SupportRequestOut:
    view = await support_service.own_one(session, account, request_id)
    view = await support_service.customer_reply(
        session, runtime, view.request, body.message, SupportVia.api
    )
    return _out(view)


# --- administrators ----------------------------------------------------------------------------


@admin_router.get(
    "",
    summary="Support requests not yet resolved",
    response_model=list[AdminSupportRequestOut],
    responses=problem_responses(401, 403),
)
async def queue(session: SessionDep, _admin: CurrentAdmin) -> list[AdminSupportRequestOut]:
    """Support's turn first, by deadline (overdue first); then those waiting on customers."""
    return [_admin_out(view) for view in await support_service.queue(session)]


@admin_router.get(
    "/{request_id}",
    summary="A support request with its conversation",
    response_model=AdminSupportRequestOut,
    responses=problem_responses(401, 403, 404),
)
async def one(request_id: Id, session: SessionDep, _admin: CurrentAdmin) -> AdminSupportRequestOut:
    return _admin_out(await support_service.get(session, request_id))


@admin_router.post(
    "/{request_id}/messages",
    status_code=201,
    summary="Answer the customer",
    response_model=AdminSupportRequestOut,
    responses=problem_responses(401, 403, 404, 422),
)
async def answer(
    request_id: Id,
    body: SupportAnswerIn,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: CurrentAdmin,
) -> AdminSupportRequestOut:
    view = await support_service.answer(
        session, runtime, admin, request_id, body.message, status=body.status, via=SupportVia.api
    )
    return _admin_out(view)


@admin_router.post(
    "/{request_id}/take",
    summary="Take a request nobody owns",
    response_model=AdminSupportRequestOut,
    responses=problem_responses(401, 403, 404, 409),
)
async def take(request_id: Id, session: SessionDep, admin: CurrentAdmin) -> AdminSupportRequestOut:
    return _admin_out(await support_service.take(session, admin, request_id))


@admin_router.post(
    "/{request_id}/owner",
    summary="Hand a request to an administrator",
    response_model=AdminSupportRequestOut,
    responses=problem_responses(401, 403, 404, 422),
)
async def hand_over(
    request_id: Id, body: SupportOwnerIn, session: SessionDep, admin: CurrentAdmin
) -> AdminSupportRequestOut:
    view = await support_service.assign_to(session, admin, request_id, body.owner_id)
    return _admin_out(view)


@admin_router.post(
    "/{request_id}/status",
    summary="Change a request's state",
    response_model=AdminSupportRequestOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def set_status(
    request_id: Id, body: SupportStatusIn, session: SessionDep, admin: CurrentAdmin
) -> AdminSupportRequestOut:
    view = await support_service.set_status(
        session, admin, request_id, body.status, expected=body.expected
    )
    return _admin_out(view)


@admin_router.post(
    "/{request_id}/cancel-subscription",
    summary="Carry out the cancellation a customer asked for by email",
    response_model=AdminSupportRequestOut,
    responses=problem_responses(401, 403, 404, 409),
)
async def cancel_subscription(
    request_id: Id,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: CurrentAdmin,
) -> AdminSupportRequestOut:
    """Cancels the named account's subscription at the period's end, answers the customer
    and resolves the request; a second click is refused with when it was done."""
    view = await support_service.carry_out_cancellation(session, runtime, admin, request_id)
    return _admin_out(view)
