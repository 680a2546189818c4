"""The privacy center's API: export, email change, erasure, consents, and requests.

Customers reach ``/api/v1/privacy/...`` with their session; administrators answer the
requests that need a person at ``/api/v1/admin/privacy-requests``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from burrow.control.deps import SESSION_COOKIE, CurrentAccount, CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.models import ConsentPurpose, PrivacyRequest, PrivacyRequestStatus, utcnow
from burrow.control.params import id_path
from burrow.control.privacy.schemas import (
    AdminPrivacyRequestOut,
    ConsentOut,
    ConsentsIn,
    ConsentsOut,
    EmailChangeIn,
    ErasureIn,
    ErasureOut,
    MessageOut,
    PrivacyExport,
    PrivacyRequestIn,
    PrivacyRequestOut,
    PrivacyResolveIn,
    RetentionOut,
)
from burrow.control.privacy.service import ConsentState, QueuedRequest, retention_statement
from burrow.control.privacy.service import privacy as privacy_service
from burrow.control.problems import problem_responses

router = APIRouter(prefix="/api/v1/privacy", tags=["privacy"])
admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

RequestId = Annotated[int, id_path("The privacy request's id.")]


def _consents(states: list[ConsentState]) -> ConsentsOut:
    return ConsentsOut(
        consents=[
            ConsentOut(
                purpose=s.purpose,
                granted=s.granted,
                changed_at=s.changed_at,
                description=s.description,
            )
            for s in states
        ]
    )


def _request_out(request: PrivacyRequest) -> PrivacyRequestOut:
    return PrivacyRequestOut.model_validate(request)


def _admin_out(queued: QueuedRequest) -> AdminPrivacyRequestOut:
    request = queued.request
    return AdminPrivacyRequestOut(
        **PrivacyRequestOut.model_validate(request).model_dump(),
        account_id=request.account_id,
        account_email=queued.account_email,
        handled_by=request.handled_by,
        seconds_left=queued.seconds_left(utcnow()),
    )


@router.get(
    "/export",
    summary="Download everything held about your account (JSON)",
    response_model=PrivacyExport,
    responses=problem_responses(401, 403),
)
async def export(account: CurrentAccount, session: SessionDep, runtime: RuntimeDep) -> Response:
    """One JSON document, one section per table: your account, billing details, subscriptions,
    orders, payments, refunds with their rule-by-rule outcomes, devices (public keys only),
    terms acceptances, consents, privacy requests, and the usage counters and connection
    records where the policy keeps them. Sent as a file to save."""
    document = await privacy_service.export(session, runtime, account)
    day = document.generated_at.date().isoformat()
    return Response(
        content=document.model_dump_json(indent=2),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="burrow-export-{account.id}-{day}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.post(
    "/email",
    summary="Change your email address (verified by a link sent to the new one)",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageOut,
    responses=problem_responses(401, 403, 409, 422, 429),
)
async def change_email(
    body: EmailChangeIn, account: CurrentAccount, session: SessionDep, runtime: RuntimeDep
) -> MessageOut:
    """Your address changes only when the link is opened; your current address is told."""
    email = await privacy_service.request_email_change(
        session, runtime, account, new_email=body.new_email, password=body.password
    )
    return MessageOut(
        detail=f"A link is on its way to {email}. Your address changes when you open it."
    )


@router.get(
    "/retention",
    summary="What is kept after an account is deleted, and for how long",
    response_model=RetentionOut,
    responses=problem_responses(401, 403),
)
async def retention(_account: CurrentAccount, runtime: RuntimeDep) -> RetentionOut:
    return RetentionOut(statements=retention_statement(runtime.policy))


@router.post(
    "/erase",
    summary="Delete your account and personal data",
    response_model=ErasureOut,
    responses=problem_responses(401, 403, 422, 429, 502),
)
async def erase(
    body: ErasureIn,
    account: CurrentAccount,
    session: SessionDep,
    runtime: RuntimeDep,
    request: Request,
    response: Response,
) -> ErasureOut:
    """Access ends at once: every session, the subscription, and every device on every
    server. What the law requires to be kept is listed in ``retention``."""
    erased = await privacy_service.erase(
        session, runtime, account, password=body.password, totp_code=body.totp_code
    )
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return ErasureOut(detail="Your account was deleted.", retention=erased.retention)


@router.get(
    "/consents",
    summary="Your consents",
    response_model=ConsentsOut,
    responses=problem_responses(401, 403),
)
async def get_consents(account: CurrentAccount, session: SessionDep) -> ConsentsOut:
    return _consents(await privacy_service.consents(session, account))


@router.put(
    "/consents",
    summary="Give or withdraw consents",
    response_model=ConsentsOut,
    responses=problem_responses(401, 403, 422),
)
async def put_consents(
    body: ConsentsIn, account: CurrentAccount, session: SessionDep, runtime: RuntimeDep
) -> ConsentsOut:
    """Only the purposes you name change; each change is recorded with its time."""
    changes = {
        ConsentPurpose(name): value for name, value in body.model_dump(exclude_none=True).items()
    }
    return _consents(await privacy_service.set_consents(session, runtime, account, changes))


@router.post(
    "/requests",
    summary="Ask for something a person must answer",
    status_code=status.HTTP_201_CREATED,
    response_model=PrivacyRequestOut,
    responses=problem_responses(401, 403, 409, 422),
)
async def open_request(
    body: PrivacyRequestIn, account: CurrentAccount, session: SessionDep, runtime: RuntimeDep
) -> PrivacyRequestOut:
    """Answered by the deadline in ``due_at`` (the policy's response days). The export,
    erasure, email change and consents are answered at once by their own endpoints."""
    return _request_out(
        await privacy_service.open_request(session, runtime, account, body.kind, body.details)
    )


@router.get(
    "/requests",
    summary="Your privacy requests",
    response_model=list[PrivacyRequestOut],
    responses=problem_responses(401, 403),
)
async def list_requests(account: CurrentAccount, session: SessionDep) -> list[PrivacyRequestOut]:
    return [_request_out(r) for r in await privacy_service.own_requests(session, account)]


@admin_router.get(
    "/privacy-requests",
    summary="Privacy requests: pending first, by deadline",
    response_model=list[AdminPrivacyRequestOut],
    responses=problem_responses(401, 403, 422),
)
async def admin_queue(
    _admin: CurrentAdmin,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AdminPrivacyRequestOut]:
    return [_admin_out(q) for q in await privacy_service.queue(session, limit)]


@admin_router.post(
    "/privacy-requests/{request_id}/resolve",
    summary="Answer a pending privacy request",
    response_model=AdminPrivacyRequestOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def admin_resolve(
    request_id: RequestId,
    body: PrivacyResolveIn,
    admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> AdminPrivacyRequestOut:
    """The customer is emailed the outcome; the action goes into the admin audit trail."""
    queued = await privacy_service.resolve(
        session, runtime, admin, request_id, PrivacyRequestStatus(body.status), body.outcome
    )
    return _admin_out(queued)
