"""The admin panel's abuse desk: record a complaint (or import a CSV of notices), trace it as far
as the policy allows, and warn, suspend or terminate the traced account for its clause.

Under a strict policy the trace answers with the reason no trace is possible, which the page
shows as the answer to send on to the complainant.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.abuse.schemas import ComplaintAct, ComplaintImportIn, ComplaintIn
from burrow.control.abuse.service import abuse as abuse_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.devices.service import keeps_address_history
from burrow.control.errors import BurrowError
from burrow.control.models import ComplaintStatus
from burrow.control.params import id_path
from burrow.control.policy.clauses import terms_clauses
from burrow.control.runtime import Runtime
from burrow.control.web.admin_pages.common import PAGE_SIZE, PanelAdmin
from burrow.control.web.forms import Form, attempt
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()

ComplaintIdPath = Annotated[int, id_path("The complaint's id.")]


async def _desk(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    forms: dict[str, Form] | None = None,
    status_code: int = 200,
) -> Response:
    items, total = await abuse_service.page(session, None, PAGE_SIZE, 0)
    return render(
        request,
        "admin/abuse.html",
        {
            "complaints": items,
            "total": total,
            "clauses": terms_clauses(runtime.policy),
            "traceable": keeps_address_history(runtime.policy),
            "forms": forms or {},
        },
        status_code=status_code,
    )


async def _complaint_page(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    complaint_id: int,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    complaint = await abuse_service.get(session, complaint_id)
    return render(
        request,
        "admin/abuse_complaint.html",
        {
            "c": complaint,
            "statuses": ComplaintStatus,
            "traceable": keeps_address_history(runtime.policy),
            "act_form": form or Form.empty(),
        },
        status_code=status_code,
    )


@router.get("/abuse")
async def desk(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: PanelAdmin
) -> Response:
    return await _desk(request, session, runtime)


@router.post("/abuse")
async def record(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: PanelAdmin
) -> Response:
    form = await Form.read(request)
    body = form.validate(ComplaintIn)
    if body is None:
        return await _desk(request, session, runtime, {"record": form}, 422)
    try:
        complaint = await attempt(
            session, lambda: abuse_service.record(session, runtime, admin, body)
        )
    except BurrowError as exc:
        form.fail(exc)
        return await _desk(request, session, runtime, {"record": form}, exc.status)
    return redirect(
        request, f"/admin/abuse/{complaint.id}", flash=f"Complaint {complaint.id} is recorded."
    )


@router.post("/abuse/import")
async def import_notices(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: PanelAdmin
) -> Response:
    form = await Form.read(request)
    body = form.validate(ComplaintImportIn)
    if body is None:
        return await _desk(request, session, runtime, {"import": form}, 422)
    try:
        complaints = await attempt(
            session, lambda: abuse_service.import_csv(session, runtime, admin, body)
        )
    except BurrowError as exc:
        form.fail(exc)
        return await _desk(request, session, runtime, {"import": form}, exc.status)
    return redirect(request, "/admin/abuse", flash=f"{len(complaints)} complaints are recorded.")


@router.get("/abuse/{complaint_id}")
async def complaint(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    complaint_id: ComplaintIdPath,
) -> Response:
    return await _complaint_page(request, session, runtime, complaint_id)


@router.post("/abuse/{complaint_id}/trace")
async def trace(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    complaint_id: ComplaintIdPath,
) -> Response:
    found = await abuse_service.trace(session, runtime, admin, complaint_id)
    words: dict[str, tuple[str, str]] = {
        "traced": ("The trace names an account.", "success"),
        "not_found": ("The trace found no one.", "warning"),
        "untraceable": ("No trace is possible under this policy.", "warning"),
    }
    text, kind = words[found.outcome]
    return redirect(request, f"/admin/abuse/{complaint_id}", flash=text, kind=kind)


@router.post("/abuse/{complaint_id}/act")
async def act(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    complaint_id: ComplaintIdPath,
) -> Response:
    form = await Form.read(request)
    body = form.validate(ComplaintAct)
    if body is None:
        return await _complaint_page(request, session, runtime, complaint_id, form, 422)
    try:
        done = await attempt(
            session, lambda: abuse_service.act(session, runtime, admin, complaint_id, body)
        )
    except BurrowError as exc:
        form.fail(exc, fields=("action",))
        return await _complaint_page(request, session, runtime, complaint_id, form, exc.status)
    verbs: dict[str, str] = {
        "warn": "warned",
        "suspend": "suspended",
        "terminate": "terminated",
    }
    message = f"Account {done.account_id} is {verbs[body.action]}; its holder gets a notice."
    return redirect(request, f"/admin/abuse/{complaint_id}", flash=message)
