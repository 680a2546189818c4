"""The admin panel's affiliate program: applications and affiliates with their refund rate
and balance, the decisions (approve, deny, suspend, terminate, each with a reason),
commissions held for review, and payout batches with their items (pay out now, send again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.affiliates.schemas import AffiliateDecision, CommissionReview
from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.errors import BurrowError
from burrow.control.models import Account
from burrow.control.params import id_path
from burrow.control.runtime import Runtime
from burrow.control.web.admin_pages.common import PanelAdmin
from burrow.control.web.forms import Form, M, attempt
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()

IdPath = Annotated[int, id_path("The id.")]
PAGE = "/admin/affiliates"


async def _page(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    forms: dict[str, Form] | None = None,
    status_code: int = 200,
) -> Response:
    program = runtime.policy.affiliates
    context: dict[str, object] = {"program": program, "forms": forms or {}}
    if program is not None and program.enabled:
        batches = await affiliate_service.batches(session)
        context.update(
            rows=await affiliate_service.admin_rows(session, runtime),
            held=await affiliate_service.held(session),
            batches=[(b, await affiliate_service.items(session, b.id)) for b in batches],
        )
    return render(request, "admin/affiliates.html", context, status_code=status_code)


@router.get("/affiliates")
async def affiliates(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: PanelAdmin
) -> Response:
    return await _page(request, session, runtime)


async def _act(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    admin: Account,
    key: str,
    model: type[M],
    act: Callable[[M], Awaitable[str]],
) -> Response:
    form = await Form.read(request)
    body = form.validate(model)
    if body is None:
        return await _page(request, session, runtime, {key: form}, 422)
    try:
        done = await attempt(session, lambda: act(body))
    except BurrowError as exc:
        form.fail(exc)
        return await _page(request, session, runtime, {key: form}, exc.status)
    return redirect(request, PAGE, flash=done)


@router.post("/affiliates/{affiliate_id}/decision")
async def decide(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    affiliate_id: IdPath,
) -> Response:
    async def act(body: AffiliateDecision) -> str:
        found = await affiliate_service.decide(
            session, runtime, admin, affiliate_id, body.decision, body.reason
        )
        return f"Affiliate {affiliate_id} is {found.status}."

    key = f"decide-{affiliate_id}"
    return await _act(request, session, runtime, admin, key, AffiliateDecision, act)


@router.post("/affiliates/commissions/{commission_id}/review")
async def review(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    commission_id: IdPath,
) -> Response:
    async def act(body: CommissionReview) -> str:
        found = await affiliate_service.review(
            session, admin, commission_id, body.decision, body.reason
        )
        return f"Commission {commission_id} is {found.status}."

    key = f"review-{commission_id}"
    return await _act(request, session, runtime, admin, key, CommissionReview, act)


@router.post("/affiliates/payouts")
async def pay_out(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: PanelAdmin
) -> Response:
    await Form.read(request)  # the CSRF check
    try:
        batch = await attempt(
            session, lambda: affiliate_service.start_payout(session, runtime, admin)
        )
    except BurrowError as exc:
        return redirect(request, PAGE, flash=exc.message, kind="error")
    return redirect(
        request,
        PAGE,
        flash=f"Payout batch {batch.id} is stored and sent to PayPal; its items show below.",
    )


@router.post("/affiliates/payouts/{batch_id}/send")
async def send(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    batch_id: IdPath,
) -> Response:
    await Form.read(request)  # the CSRF check
    try:
        await attempt(session, lambda: affiliate_service.resend(session, runtime, admin, batch_id))
    except BurrowError as exc:
        return redirect(request, PAGE, flash=exc.message, kind="error")
    return redirect(request, PAGE, flash=f"Payout batch {batch_id} was checked with PayPal.")
