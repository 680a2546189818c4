"""The admin panel's support desk: the queue by deadline (overdue first), each conversation
with its answer form, taking a request, changing its state, and carrying out a cancellation
asked for by email in one click. Decisions are the support service's compare-and-set writes,
so two administrators clicking at once cannot both make one."""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.models import SupportStatus, SupportVia, utcnow
from burrow.control.params import id_path
from burrow.control.support.schemas import SupportAnswerIn, SupportOwnerIn, SupportStatusIn
from burrow.control.support.service import (
    STATUS_NAMES,
    TOPIC_NAMES,
    NotAnAdministratorToOwn,
    SupportView,
)
from burrow.control.support.service import support as support_service
from burrow.control.web.admin_pages.common import PanelAdmin, time_left
from burrow.control.web.forms import Form, press, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()

SupportIdPath = Annotated[int, id_path("The support request's number.")]


@router.get("/support")
async def queue(request: Request, session: SessionDep, admin: PanelAdmin) -> Response:
    now = utcnow()
    rows = [
        {
            "view": view,
            "overdue": view.overdue(now),
            "time_left": (
                time_left(view.seconds_left(now))
                if view.request.status == SupportStatus.open
                else "waiting on the customer"
            ),
        }
        for view in await support_service.queue(session)
    ]
    return render(
        request,
        "admin/support.html",
        {
            "rows": rows,
            "resolved": await support_service.resolved(session, 20),
            "topics": TOPIC_NAMES,
            "statuses": STATUS_NAMES,
        },
    )


async def _request_page(
    request: Request,
    session: AsyncSession,
    request_id: int,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    view = await support_service.get(session, request_id)
    now = utcnow()
    return render(
        request,
        "admin/support_request.html",
        {
            "view": view,
            "topic_name": TOPIC_NAMES[view.request.topic],
            "status_name": STATUS_NAMES[view.request.status],
            "statuses": [(s.value, STATUS_NAMES[s]) for s in SupportStatus],
            "overdue": view.overdue(now),
            "time_left": time_left(view.seconds_left(now)),
            "form": form or Form.empty(status=SupportStatus.waiting_on_customer.value),
            "administrators": await support_service.administrators(session),
        },
        status_code=status_code,
    )


@router.get("/support/{request_id}")
async def one(
    request: Request, session: SessionDep, admin: PanelAdmin, request_id: SupportIdPath
) -> Response:
    return await _request_page(request, session, request_id)


@router.post("/support/{request_id}/answer")
async def answer(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    request_id: SupportIdPath,
) -> Response:
    return await submit(
        request,
        session,
        SupportAnswerIn,
        lambda body: support_service.answer(
            session,
            runtime,
            admin,
            request_id,
            body.message,
            status=body.status,
            via=SupportVia.web,
        ),
        page=lambda form, status: _request_page(request, session, request_id, form, status),
        done=lambda _body, _: redirect(
            request, f"/admin/support/{request_id}", flash="The answer is sent to the customer."
        ),
    )


@router.post("/support/{request_id}/take")
async def take(
    request: Request, session: SessionDep, admin: PanelAdmin, request_id: SupportIdPath
) -> Response:
    await Form.read(request)  # the CSRF check
    return await press(
        request,
        session,
        lambda: support_service.take(session, admin, request_id),
        back=f"/admin/support/{request_id}",
        done=lambda _: redirect(
            request, f"/admin/support/{request_id}", flash="The request is yours."
        ),
    )


@router.post("/support/{request_id}/owner")
async def hand_over(
    request: Request, session: SessionDep, admin: PanelAdmin, request_id: SupportIdPath
) -> Response:
    form = await Form.read(request)
    body = form.validate(SupportOwnerIn)

    async def assign() -> SupportView:
        if body is None:
            raise NotAnAdministratorToOwn(0)
        return await support_service.assign_to(session, admin, request_id, body.owner_id)

    return await press(
        request,
        session,
        assign,
        back=f"/admin/support/{request_id}",
        done=lambda view: redirect(
            request,
            f"/admin/support/{request_id}",
            flash=f"The request is {view.owner_email}'s now.",
        ),
    )


@router.post("/support/{request_id}/status")
async def set_status(
    request: Request, session: SessionDep, admin: PanelAdmin, request_id: SupportIdPath
) -> Response:
    form = await Form.read(request)
    body = form.validate(SupportStatusIn)
    if body is None:
        return redirect(
            request, f"/admin/support/{request_id}", flash="Choose a state.", kind="error"
        )
    return await press(
        request,
        session,
        lambda: support_service.set_status(
            session, admin, request_id, body.status, expected=body.expected
        ),
        back=f"/admin/support/{request_id}",
        done=lambda view: redirect(
            request,
            f"/admin/support/{request_id}",
            flash=f"The request is {STATUS_NAMES[view.request.status]}.",
        ),
    )


@router.post("/support/{request_id}/cancel-subscription")
async def cancel_subscription(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    request_id: SupportIdPath,
) -> Response:
    await Form.read(request)  # the CSRF check
    return await press(
        request,
        session,
        lambda: support_service.carry_out_cancellation(session, runtime, admin, request_id),
        back=f"/admin/support/{request_id}",
        done=lambda view: redirect(
            request,
            f"/admin/support/{request_id}",
            flash=f"The subscription of {view.cancel_account_email} is cancelled; the "
            "customer is told and the request is resolved.",
        ),
    )
