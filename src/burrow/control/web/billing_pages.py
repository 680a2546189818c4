"""Billing: the plans to buy or renew through the configured provider, orders and their
payments, and refund requests with the policy's decision rule by rule."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from burrow.control.billing.schemas import CheckoutIn
from burrow.control.billing.service import billing as billing_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.errors import BurrowError
from burrow.control.models import Account, OrderStatus, SupportTopic, SupportVia
from burrow.control.params import MAX_ID
from burrow.control.plans.service import plan as plan_service
from burrow.control.refunds.schemas import RefundRequestIn
from burrow.control.refunds.service import RefundView
from burrow.control.refunds.service import refund as refund_service
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import NoSubscription
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.support.schemas import SupportMessageIn
from burrow.control.support.service import support as support_service
from burrow.control.web.auth import WebAccount
from burrow.control.web.forms import Form, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()

OrderId = Annotated[int, Path(ge=1, le=MAX_ID)]

METHOD_NAMES = {
    "card": "Card",
    "paypal": "PayPal",
    "crypto": "Cryptocurrency",
    "paymentwall": "Paymentwall",
    "app_store": "App Store",
    "google_play": "Google Play",
    "manual": "Bank transfer or other arrangement",
}
# Requests still open or settled in the customer's favour block another request.
STANDING = {"evaluating", "queued", "approved", "executed"}


async def _billing_page(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    plans = await plan_service.list_active(session)
    orders = await billing_service.orders(session, account.id)
    refunds = await refund_service.list_own(session, account.id)
    asked = {v.request.order_id for v in refunds if v.request.status.value in STANDING}
    methods = runtime.policy.payment_methods
    try:
        own_plan: str | None = (await subscription_service.overview(session, account.id)).plan.code
    except NoSubscription:
        own_plan = None
    codes = [p.code for p in plans]
    return render(
        request,
        "billing/billing.html",
        {
            "plans": plans,
            # The plan preselected: the customer's own, else the first one offered.
            "preselected": own_plan if own_plan in codes else (codes[0] if codes else None),
            "own_plan": own_plan,
            "orders": orders,
            "refunds": refunds,
            "refundable": {
                v.order.id
                for v in orders
                if v.order.status == OrderStatus.paid and v.order.id not in asked
            },
            "methods": [
                (str(m), METHOD_NAMES.get(str(m), str(m)))
                for m in billing_service.checkout_methods(runtime)
            ],
            "recurring": {str(m) for m in methods.recurring},
            "refund_policy": runtime.policy.refunds,
            "form": form or Form.empty(),
        },
        status_code=status_code,
    )


@router.get("/billing")
async def billing_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    # Back from the provider's page (?checkout=done&order=N, and the provider's own token):
    # the provider may settle the order now instead of waiting for its webhook.
    params = request.query_params
    order_text, token = params.get("order", ""), params.get("token", "")
    returned = params.get("checkout") == "done" and order_text.isascii() and order_text.isdigit()
    if returned and len(order_text) <= 18 and int(order_text) <= MAX_ID:
        await billing_service.checkout_returned(
            session, runtime, account.id, int(order_text), token[:200]
        )
    return await _billing_page(request, session, runtime, account)


@router.post("/billing/checkout")
async def checkout(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    # The provider's own page takes the payment; its event pays the order.
    return await submit(
        request,
        session,
        CheckoutIn,
        lambda body: billing_service.start_checkout(
            session, runtime, account, body.plan_code, body.method, referral_code=body.referral_code
        ),
        page=lambda form, status: _billing_page(request, session, runtime, account, form, status),
        done=lambda _body, started: redirect(request, started.checkout_url),
        fields=("plan_code", "method"),
    )


def _support_id(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) < 19 else None


async def _refund_page(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    order_id: int,
    form: Form,
    status_code: int = 200,
    support_form: Form | None = None,
) -> Response:
    order = await billing_service.order_of(session, account.id, order_id)
    view = await billing_service.order_view(session, order)
    # refunds.support_first: the support conversation is offered before the refund form; a
    # conversation already opened for this refund is linked to the request when it is made.
    conversation = None
    support_id = _support_id(request.query_params.get("support") or form.raw("support"))
    if support_id is not None:
        try:
            conversation = await support_service.own_one(session, account, support_id)
        except BurrowError:
            conversation = None
    policy = runtime.policy.refunds
    return render(
        request,
        "billing/refund.html",
        {
            "view": view,
            "form": form,
            "refund_policy": policy,
            "support_first": policy is not None and policy.support_first,
            "conversation": conversation,
            "support_form": support_form or Form.empty(),
        },
        status_code=status_code,
    )


@router.post("/billing/orders/{order_id}/refund/support")
async def refund_support_first(
    request: Request,
    order_id: OrderId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    """The support conversation offered before a refund: opened about this order, then the
    refund page again, which links a refund request to it if the customer still asks."""
    form = await Form.read(request)
    body = form.validate(SupportMessageIn)
    order = await billing_service.order_of(session, account.id, order_id)
    if body is None:
        return await _refund_page(
            request, session, runtime, account, order.id, Form.empty(), 422, support_form=form
        )
    opened = await support_service.open(
        session,
        runtime,
        account=account,
        email=None,
        topic=SupportTopic.refund,
        subject=f"Before a refund of order #{order.id}",
        body=body.message,
        via=SupportVia.web,
    )
    return redirect(
        request,
        f"/billing/orders/{order.id}/refund?support={opened.request.id}",
        flash=f"Support has your message (request {opened.request.id}) and answers by email.",
    )


@router.get("/billing/orders/{order_id}/refund")
async def refund_form(
    request: Request,
    order_id: OrderId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await _refund_page(request, session, runtime, account, order_id, Form.empty())


@router.post("/billing/orders/{order_id}/refund")
async def request_refund(
    request: Request,
    order_id: OrderId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    def asked(_body: RefundRequestIn, view: RefundView) -> Response:
        message = view.message or f"Your refund request is {view.request.status.value}."
        return redirect(request, f"/billing/refunds/{view.request.id}", flash=message)

    async def ask(body: RefundRequestIn) -> RefundView:
        view = await refund_service.request(session, runtime, account, order_id, body.reason)
        # A support conversation opened first (refunds.support_first) is linked to it.
        posted = (await request.form()).get("support")
        support_id = _support_id(posted if isinstance(posted, str) else None)
        if support_id is not None:
            await support_service.link_refund(session, account, support_id, view.request.id)
        return view

    return await submit(
        request,
        session,
        RefundRequestIn,
        ask,
        page=lambda form, status: _refund_page(
            request, session, runtime, account, order_id, form, status
        ),
        done=asked,
        fields=("reason",),
    )


@router.get("/billing/refunds/{request_id}")
async def refund_status(
    request: Request,
    request_id: OrderId,
    session: SessionDep,
    account: WebAccount,
) -> Response:
    views = await refund_service.list_own(session, account.id)
    view = next((v for v in views if v.request.id == request_id), None)
    if view is None:
        return render(
            request,
            "error.html",
            {"title": "Not found", "message": "You have no refund request with this number."},
            status_code=404,
        )
    return render(request, "billing/refund_status.html", {"view": view})
