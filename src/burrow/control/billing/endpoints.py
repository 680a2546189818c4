"""Billing endpoints: the customer's orders and billing details, the admin's manual payment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Header, Request

from burrow.control.billing import coingate, paypal, stripe_events
from burrow.control.billing.schemas import (
    BillingDetailsIn,
    BillingDetailsOut,
    CheckoutIn,
    CheckoutOut,
    CoinGateCallbackIn,
    EventRetriedOut,
    FailedEventOut,
    ManualPaymentIn,
    OrderOut,
    PaymentOut,
    PaymentRecordedOut,
    WebhookReceivedOut,
)
from burrow.control.billing.service import OrderView
from burrow.control.billing.service import billing as billing_service
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.deps import CurrentAccount, CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.params import AccountId, id_path
from burrow.control.problems import problem_responses

customer_router = APIRouter(prefix="/api/v1/billing", tags=["billing"])
admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


def order_out(view: OrderView) -> OrderOut:
    order = view.order
    return OrderOut(
        id=order.id,
        plan_code=view.plan_code,
        kind=order.kind,
        amount_minor=order.amount_minor,
        currency=order.currency,
        payment_method=order.payment_method,
        status=order.status,
        period_months=order.period_months,
        created_at=order.created_at,
        paid_at=order.paid_at,
        refunded_minor=order.refunded_minor,
        payments=[PaymentOut.model_validate(p) for p in view.payments],
    )


@customer_router.get(
    "/orders",
    summary="Your orders and their payments",
    response_model=list[OrderOut],
    responses=problem_responses(401),
)
async def list_orders(session: SessionDep, account: CurrentAccount) -> list[OrderOut]:
    """Newest first. Amounts are integers in minor units (cents) of their currency."""
    return [order_out(view) for view in await billing_service.orders(session, account.id)]


@customer_router.post(
    "/checkout",
    status_code=201,
    summary="Pay for a plan",
    response_model=CheckoutOut,
    responses=problem_responses(401, 404, 409, 422, 502),
)
async def checkout(
    body: CheckoutIn, session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> CheckoutOut:
    """Opens a pending order and a payment at the method's provider (card: Stripe Checkout,
    a subscription that renews when the policy makes the method recurring). Send the customer
    to ``checkout_url``; the order is paid, and the period given, when the provider reports
    the payment. 409: the method is not set up here; 502: the provider could not be reached
    and nothing was kept."""
    started = await billing_service.start_checkout(
        session, runtime, account, body.plan_code, body.method, referral_code=body.referral_code
    )
    return CheckoutOut(order_id=started.order.id, checkout_url=started.checkout_url)


@customer_router.get(
    "/details",
    summary="Your billing details",
    response_model=BillingDetailsOut,
    responses=problem_responses(401, 404),
)
async def get_details(session: SessionDep, account: CurrentAccount) -> BillingDetailsOut:
    return BillingDetailsOut.model_validate(await billing_service.details(session, account.id))


@customer_router.put(
    "/details",
    summary="Set your billing details",
    response_model=BillingDetailsOut,
    responses=problem_responses(401, 403, 422),
)
async def put_details(
    body: BillingDetailsIn, session: SessionDep, account: CurrentAccount
) -> BillingDetailsOut:
    """Kept only for paid accounts: country, city, postal code, optionally the card's last
    four digits and a name or company."""
    details = await billing_service.set_details(session, account.id, body)
    return BillingDetailsOut.model_validate(details)


@admin_router.post(
    "/accounts/{account_id}/payments",
    status_code=201,
    summary="Record a payment received by other means",
    response_model=PaymentRecordedOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def record_payment(
    account_id: AccountId,
    body: ManualPaymentIn,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: CurrentAdmin,
) -> PaymentRecordedOut:
    """A bank transfer or a store's report: makes the order and gives the plan's period."""
    recorded = await billing_service.record_manual_payment(
        session,
        runtime,
        admin,
        account_id,
        body.plan_code,
        body.amount_minor,
        body.currency,
        body.method,
        body.reference,
    )
    view = await billing_service.order_view(session, recorded.order)
    return PaymentRecordedOut(message=recorded.message, order=order_out(view))


@customer_router.post(
    "/webhooks/stripe",
    summary="Stripe webhook deliveries",
    response_model=WebhookReceivedOut,
    responses=problem_responses(400, 404),
)
async def stripe_webhook(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
    stripe_signature: Annotated[str | None, Header(max_length=2000)] = None,
) -> WebhookReceivedOut:
    """Signed by Stripe with the endpoint secret. The event is stored and answered at once;
    it is handled after the answer (and by the scheduler, should this process stop first)."""
    stored = await stripe_events.receive(session, runtime, await request.body(), stripe_signature)
    if stored is not None:
        # Background tasks run after the answer is sent, and so after the session commits.
        background.add_task(webhook_service.process_one, runtime, stored)
    return WebhookReceivedOut(received=True, duplicate=stored is None)


@customer_router.post(
    "/webhooks/paypal",
    summary="PayPal webhook deliveries",
    response_model=WebhookReceivedOut,
    responses=problem_responses(400, 404, 503),
)
async def paypal_webhook(
    request: Request, session: SessionDep, runtime: RuntimeDep, background: BackgroundTasks
) -> WebhookReceivedOut:
    """Verified by PayPal itself (its verify-webhook-signature API, with the transmission
    headers and this server's webhook id). The event is stored and answered at once, and
    handled after the answer. 503: PayPal could not be asked; it sends the event again."""
    headers = {name: request.headers.get(name, "")[:2000] for name in paypal.TRANSMISSION_HEADERS}
    stored = await paypal.receive(session, runtime, await request.body(), headers)
    if stored is not None:
        background.add_task(webhook_service.process_one, runtime, stored)
    return WebhookReceivedOut(received=True, duplicate=stored is None)


@customer_router.post(
    "/webhooks/coingate",
    summary="CoinGate order callbacks",
    response_model=WebhookReceivedOut,
    responses=problem_responses(400, 404, 422, 503),
)
async def coingate_callback(
    body: Annotated[CoinGateCallbackIn, Form()],
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
) -> WebhookReceivedOut:
    """Posted by CoinGate when an order's status changes. Believed only with the token made for
    that order, and then only as far as CoinGate's API confirms it (the status and amounts are
    fetched from CoinGate). 503: CoinGate could not be asked; it sends the callback again."""
    stored, _status = await coingate.receive(session, runtime, body.model_dump())
    if stored is not None:
        background.add_task(webhook_service.process_one, runtime, stored)
    return WebhookReceivedOut(received=True, duplicate=stored is None)


@admin_router.get(
    "/webhook-events/failed",
    summary="Provider events parked after their last attempt",
    response_model=list[FailedEventOut],
    responses=problem_responses(401, 403),
)
async def failed_events(session: SessionDep, _admin: CurrentAdmin) -> list[FailedEventOut]:
    """An event that kept failing is tried with a growing backoff, then parked here with its
    error, so it never holds up newer events. The latest first."""
    return [FailedEventOut.model_validate(e) for e in await webhook_service.failed(session)]


@admin_router.post(
    "/webhook-events/{event_row_id}/retry",
    summary="Try a parked provider event again",
    response_model=EventRetriedOut,
    responses=problem_responses(401, 403, 404, 409),
)
async def retry_event(
    event_row_id: Annotated[int, id_path("The stored event's id.")],
    session: SessionDep,
    runtime: RuntimeDep,
    admin: CurrentAdmin,
    background: BackgroundTasks,
) -> EventRetriedOut:
    """The event is due again with a fresh count of attempts, and handled right after."""
    retried = await webhook_service.retry(session, admin, event_row_id)
    background.add_task(webhook_service.process_one, runtime, retried.id)
    return EventRetriedOut(id=retried.id, message="The event is handled again.")


router = APIRouter()
router.include_router(customer_router)
router.include_router(admin_router)
