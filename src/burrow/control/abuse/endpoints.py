"""The admin API of the abuse desk: record complaints (one, or many from a CSV), trace them as
far as the policy allows, and act on the traced account.

Every route needs an administrator's session; every change is a service method that takes the
admin as its ``actor`` and writes the audit trail in the same unit of work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from burrow.control.abuse.schemas import (
    ComplaintAct,
    ComplaintImportIn,
    ComplaintIn,
    ComplaintPage,
    ComplaintRead,
    ImportRead,
    TraceRead,
)
from burrow.control.abuse.service import abuse as abuse_service
from burrow.control.deps import CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.models import ComplaintStatus
from burrow.control.params import MAX_ID
from burrow.control.problems import problem_responses

router = APIRouter(prefix="/api/v1/admin/abuse", tags=["abuse"])

ComplaintId = Annotated[int, Path(ge=1, le=MAX_ID, description="The complaint's id.")]


@router.get(
    "/complaints",
    summary="Abuse complaints, newest first",
    response_model=ComplaintPage,
    responses=problem_responses(401, 403, 422),
)
async def list_complaints(
    _admin: CurrentAdmin,
    session: SessionDep,
    status: Annotated[ComplaintStatus | None, Query(description="Only this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> ComplaintPage:
    items, total = await abuse_service.page(session, status, limit, offset)
    return ComplaintPage(items=[ComplaintRead.model_validate(c) for c in items], total=total)


@router.post(
    "/complaints",
    summary="Record an abuse complaint",
    status_code=201,
    response_model=ComplaintRead,
    responses=problem_responses(401, 403, 422),
)
async def record_complaint(
    body: ComplaintIn, admin: CurrentAdmin, session: SessionDep, runtime: RuntimeDep
) -> ComplaintRead:
    """``clause`` is one of ``GET /api/v1/admin/terms-clauses``."""
    complaint = await abuse_service.record(session, runtime, admin, body)
    return ComplaintRead.model_validate(complaint)


@router.post(
    "/complaints/import",
    summary="Record many complaints from a CSV of address,port,time lines",
    status_code=201,
    response_model=ImportRead,
    responses=problem_responses(401, 403, 422),
)
async def import_complaints(
    body: ComplaintImportIn, admin: CurrentAdmin, session: SessionDep, runtime: RuntimeDep
) -> ImportRead:
    """All lines or, when one is bad, none; the problem names every bad line."""
    complaints = await abuse_service.import_csv(session, runtime, admin, body)
    return ImportRead(
        recorded=len(complaints),
        complaints=[ComplaintRead.model_validate(c) for c in complaints],
    )


@router.get(
    "/complaints/{complaint_id}",
    summary="One abuse complaint",
    response_model=ComplaintRead,
    responses=problem_responses(401, 403, 404, 422),
)
async def get_complaint(
    complaint_id: ComplaintId, _admin: CurrentAdmin, session: SessionDep
) -> ComplaintRead:
    return ComplaintRead.model_validate(await abuse_service.get(session, complaint_id))


@router.post(
    "/complaints/{complaint_id}/trace",
    summary="Trace a complaint to a device and account, as far as the policy allows",
    response_model=TraceRead,
    responses=problem_responses(401, 403, 404, 422),
)
async def trace_complaint(
    complaint_id: ComplaintId, admin: CurrentAdmin, session: SessionDep, runtime: RuntimeDep
) -> TraceRead:
    """``outcome`` is ``traced`` (the account and device are named), ``not_found`` or
    ``untraceable`` (the policy makes a trace impossible); ``reason`` says why, in words the
    operator can send on."""
    trace = await abuse_service.trace(session, runtime, admin, complaint_id)
    return TraceRead(
        complaint=ComplaintRead.model_validate(trace.complaint),
        outcome=trace.outcome,
        reason=trace.reason,
        account_id=trace.account_id,
        account_email=trace.account_email,
        device_id=trace.device_id,
        device_name=trace.device_name,
        tunnel_ipv4=trace.tunnel_ipv4,
        port_block=trace.port_block,
    )


@router.post(
    "/complaints/{complaint_id}/act",
    summary="Warn, suspend or terminate the traced account for the complaint's clause",
    response_model=ComplaintRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def act_on_complaint(
    complaint_id: ComplaintId,
    body: ComplaintAct,
    admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> ComplaintRead:
    """The account holder gets a notice by email naming the clause and the reason."""
    complaint = await abuse_service.act(session, runtime, admin, complaint_id, body)
    return ComplaintRead.model_validate(complaint)
