"""Billing: orders and payments, the customer's billing details, and provider webhooks.

A payment makes an order (the account's first paid order is ``first``, later ones are
renewals) and gives the plan's period through the subscriptions service, so access flows
through the desired state as for any other period. Webhooks are stored first and handled
second: ``webhook.store`` keeps each event once under (provider, event id), and
``webhook.process_pending`` (the scheduler's job) hands stored events to their provider's
handler, each in its own unit of work, so a crash between the two loses nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.audit.service import Actor, admin_audit
from burrow.control.billing.repository import BillingRepository
from burrow.control.billing.schemas import BillingDetailsIn
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.errors import BurrowError, Conflict, Forbidden, InvalidInput, NotFound
from burrow.control.models import (
    Account,
    AccountStatus,
    BillingDetails,
    Order,
    OrderKind,
    OrderStatus,
    Payment,
    PaymentMethod,
    Plan,
    ReferralHow,
    WebhookEvent,
    utcnow,
)
from burrow.control.payments.providers import ProviderNotConfigured, ProviderUnavailable
from burrow.control.plans.service import plan as plan_service
from burrow.control.policy.addresses import redact
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import gives_access
from burrow.control.subscriptions.service import subscription as subscription_service

log = logging.getLogger(__name__)


class AccountNotFound(NotFound):
    title = "Unknown account"
    type_slug = "unknown-account"

    def __init__(self, account_id: int) -> None:
        super().__init__(f"There is no account with the id {account_id}.")


class OrderNotFound(NotFound):
    title = "Unknown order"
    type_slug = "unknown-order"

    def __init__(self, order_id: int) -> None:
        super().__init__(
            f"You have no order with the id {order_id}; GET /api/v1/billing/orders lists yours."
        )


class DuplicatePayment(Conflict):
    title = "Payment already recorded"
    type_slug = "duplicate-payment"

    def __init__(self, provider: str, reference: str, order_id: int) -> None:
        super().__init__(
            f"The {provider} payment '{reference}' is already recorded, on order {order_id}; "
            "nothing was changed.",
            order_id=order_id,
        )


class AccountTerminated(Conflict):
    title = "Account terminated"
    type_slug = "account-terminated"

    def __init__(self, account_id: int, status: str = "terminated") -> None:
        super().__init__(
            f"Account {account_id} is {status}; a payment cannot give it a period. "
            "Refund the payer instead."
        )


# Accounts that no payment may give a period to: terminated by the operator, or erased at the
# customer's request (a late provider event must not bring an order back to an erased account).
_CLOSED = frozenset({AccountStatus.terminated, AccountStatus.erased})


class NoBillingDetails(NotFound):
    title = "No billing details"
    type_slug = "no-billing-details"

    def __init__(self) -> None:
        super().__init__(
            "You have not given billing details; send them with PUT /api/v1/billing/details."
        )


class BillingDetailsNotNeeded(Forbidden):
    title = "Billing details not needed"
    type_slug = "billing-details-not-needed"

    def __init__(self) -> None:
        super().__init__(
            "Billing details are kept only for paid accounts, and this account has no paid "
            "order yet; a trial needs only your email address."
        )


@dataclass(frozen=True)
class OrderView:
    """An order with its plan's code and its payments, for the customer and the admin."""

    order: Order
    plan_code: str
    payments: tuple[Payment, ...]


@dataclass(frozen=True)
class PaymentRecorded:
    order: Order
    payment: Payment
    plan_code: str
    message: str


def _check_money(amount_minor: int, currency: str, plan: Plan, *, zero_ok: bool = False) -> None:
    # ``zero_ok``: a provider's renewal paid in full by a coupon or a credit balance is a
    # payment of zero, and still gives the period.
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise InvalidInput("Give the amount as a whole number of minor units (cents).")
    if amount_minor < 0 or (amount_minor == 0 and not zero_ok):
        raise InvalidInput("A payment's amount must be above zero.", field="amount_minor")
    if currency != plan.currency:
        raise InvalidInput(
            f"The plan {plan.code} is priced in {plan.currency}; record the payment in "
            f"{plan.currency}, not {currency}.",
            field="currency",
        )


class OrderNotPayable(Conflict):
    title = "Order already settled"
    type_slug = "order-not-payable"

    def __init__(self, order_id: int, status: str) -> None:
        super().__init__(
            f"Order {order_id} is {status}; only a pending order can be paid. Nothing changed.",
            order_id=order_id,
        )


class MethodNotOffered(InvalidInput):
    title = "Payment method not offered"
    type_slug = "payment-method-not-offered"

    def __init__(self, method: str, offered: Sequence[str]) -> None:
        super().__init__(
            f"This provider does not take payment by {method}; choose one of: "
            f"{', '.join(offered)}.",
            field="method",
        )


_METHOD_NAMES = {
    "card": "Card",
    "paypal": "PayPal",
    "crypto": "Crypto",
    "paymentwall": "PaymentWall",
    "app_store": "App Store",
    "google_play": "Google Play",
}


_PROVIDER_NAMES = {"paypal": "PayPal", "coingate": "CoinGate"}


def provider_name(provider: str) -> str:
    """A provider as its customers know it ("paypal" -> "PayPal")."""
    return _PROVIDER_NAMES.get(provider, provider.title())


class MethodNotSetUp(Conflict):
    title = "Payment method not set up"
    type_slug = "payment-method-not-set-up"

    def __init__(self, method: str) -> None:
        what = _METHOD_NAMES.get(method, method.replace("_", " ").capitalize())
        super().__init__(
            f"{what} payments are not set up on this server; pay by another method or "
            "contact support."
        )


class ProviderUnreachable(BurrowError):
    status = 502
    title = "Payment provider unreachable"
    type_slug = "payment-provider-unreachable"

    def __init__(self, provider: str) -> None:
        super().__init__(
            f"We could not reach {provider_name(provider)} to start your payment. Nothing was "
            "charged and no order was kept; try again in a few minutes."
        )


class AlreadyRenewing(Conflict):
    title = "Already renewing"
    type_slug = "already-renewing"

    def __init__(self, provider: str, renews: datetime) -> None:
        super().__init__(
            f"Your subscription already renews through {provider_name(provider)} on "
            f"{renews.date().isoformat()}; a second one would charge you twice. To change "
            "plans, cancel it (POST /api/v1/subscriptions/current/cancel) and pay for the new "
            "plan after it ends."
        )


@dataclass(frozen=True)
class CheckoutStarted:
    order: Order
    checkout_url: str


class CheckoutProvider(Protocol):
    """Starts paying a pending order at a provider: returns the URL the customer pays at.

    Raises ``ProviderNotConfigured`` or ``ProviderUnavailable`` (from ``providers``).
    """

    name: str

    def configured(self, settings: Settings) -> bool: ...

    async def start(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        plan: Plan,
        order: Order,
        *,
        recurring: bool,
    ) -> str: ...


# Checkout providers by payment method class ("card" -> Stripe, "crypto" -> CoinGate); each
# provider's module registers itself on import.
CHECKOUT_PROVIDERS: dict[str, CheckoutProvider] = {}


# What a provider does when the customer comes back from its page to ours with the order's
# reference (PayPal: capture the approved order at once, before its webhook arrives).
ReturnHandler = Callable[[AsyncSession, Runtime, Order, str], Awaitable[None]]
RETURN_HANDLERS: dict[str, ReturnHandler] = {}


@dataclass(frozen=True)
class MethodWithoutProvider:
    """A payment method the policy offers that checkout cannot take (so does not show)."""

    method: str
    # The provider that would take it but is not set up; None: burrow has no provider for it.
    provider: str | None


class BillingService:
    # --- orders and payments -----------------------------------------------------------------

    async def open_order(
        self,
        session: AsyncSession,
        account: Account,
        plan: Plan,
        method: PaymentMethod,
        provider: str,
        *,
        provider_order_id: str | None = None,
    ) -> Order:
        """A pending order for one period of ``plan`` at its price, waiting for the provider.

        Whether it is the account's ``first`` order or a ``renewal`` is decided when it is paid
        (another order may be paid in between).
        """
        if account.status in _CLOSED:
            raise AccountTerminated(account.id, account.status.value)
        order = Order(
            account_id=account.id,
            plan_id=plan.id,
            kind=OrderKind.first,
            amount_minor=plan.price_minor,
            currency=plan.currency,
            payment_method=PaymentMethod(method),
            status=OrderStatus.pending,
            period_months=plan.period_months,
            provider=provider,
            provider_order_id=provider_order_id,
        )
        await BillingRepository(session).add(order)
        return order

    async def pay_order(
        self,
        session: AsyncSession,
        runtime: Runtime,
        order: Order,
        provider_payment_id: str,
        amount_minor: int,
        currency: str,
        fingerprint: str | None = None,
        *,
        provider_subscription_id: str | None = None,
        period_end: datetime | None = None,
        method: PaymentMethod | None = None,
        zero_ok: bool = False,
    ) -> PaymentRecorded:
        """Money came for a pending (or failed, then paid after all) order: record the payment
        and give the plan's period through the subscriptions service.

        The order's amount becomes what was actually received (a coupon or tax may change it),
        since that is what a refund can send back. A provider payment id seen before raises
        ``DuplicatePayment`` and changes nothing. ``provider_subscription_id`` links the
        provider's recurring subscription; ``period_end`` is the end the provider bills up to.
        ``method`` is the class of what really paid, as the provider reports it (a card order
        paid through Stripe's PayPal is a PayPal order for the refund rules).
        """
        repository = BillingRepository(session)
        await repository.lock_order(order)
        known = await repository.payment_by_provider_id(order.provider, provider_payment_id)
        if known is not None:
            raise DuplicatePayment(order.provider, provider_payment_id, known.order_id)
        if order.status not in (OrderStatus.pending, OrderStatus.failed):
            raise OrderNotPayable(order.id, order.status)
        plan = await plan_service.get(session, order.plan_id)
        assert plan is not None  # a foreign key; plans are never deleted
        _check_money(amount_minor, currency, plan, zero_ok=zero_ok)
        account = await repository.get_account(order.account_id)
        if account is None:
            raise AccountNotFound(order.account_id)
        if account.status in _CLOSED:
            raise AccountTerminated(account.id, account.status.value)
        earlier = await repository.paid_order_count(account.id)
        order.kind = OrderKind.renewal if earlier else OrderKind.first
        order.amount_minor = amount_minor
        if method is not None:
            order.payment_method = method
        order.status = OrderStatus.paid
        order.paid_at = utcnow()
        if provider_subscription_id:
            order.provider_subscription_id = provider_subscription_id
        payment = Payment(
            order_id=order.id,
            provider=order.provider,
            provider_payment_id=provider_payment_id,
            amount_minor=amount_minor,
            currency=currency,
            fingerprint=fingerprint,
        )
        await repository.add(payment)
        granted = await subscription_service.grant(
            session,
            runtime,
            account.id,
            plan.code,
            months=order.period_months,
            provider=order.provider if provider_subscription_id else None,
            provider_subscription_id=provider_subscription_id,
            until=period_end,
        )
        # A referred customer's order earns its affiliate a commission (pending or held).
        await affiliate_service.order_paid(session, runtime, order, payment)
        log.info("order %s paid through %s for account %s", order.id, order.provider, account.id)
        message = f"Recorded the payment as order {order.id} ({order.kind}). {granted.message}"
        return PaymentRecorded(order, payment, plan.code, message)

    async def fail_order(self, session: AsyncSession, order: Order, reason: str) -> Order:
        """The provider gave up on a pending order (expired, declined): it is ``failed``.

        Anything but a pending order is left alone: a late failure never undoes a payment.
        """
        if order.status == OrderStatus.pending:
            order.status = OrderStatus.failed
            await session.flush()
            log.info("order %s failed: %s", order.id, reason[:200])
        return order

    async def record_payment(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        plan: Plan,
        amount_minor: int,
        currency: str,
        method: PaymentMethod,
        provider: str,
        provider_payment_id: str,
        fingerprint: str | None = None,
        *,
        provider_order_id: str | None = None,
        provider_subscription_id: str | None = None,
        period_end: datetime | None = None,
        zero_ok: bool = False,
    ) -> PaymentRecorded:
        """Record money received for ``plan`` that no pending order was waiting for (a manual
        payment, a provider's renewal) and give its period to the account: an order is opened
        and paid at once.

        The account's first paid order is ``first``, every later one a ``renewal``. The
        subscription is extended (same plan, still active) or replaced, as an admin grant is.
        """
        _check_money(amount_minor, currency, plan, zero_ok=zero_ok)
        if account.status in _CLOSED:
            raise AccountTerminated(account.id, account.status.value)
        known = await BillingRepository(session).payment_by_provider_id(
            provider, provider_payment_id
        )
        if known is not None:
            raise DuplicatePayment(provider, provider_payment_id, known.order_id)
        order = await self.open_order(
            session, account, plan, method, provider, provider_order_id=provider_order_id
        )
        return await self.pay_order(
            session,
            runtime,
            order,
            provider_payment_id,
            amount_minor,
            currency,
            fingerprint,
            provider_subscription_id=provider_subscription_id,
            period_end=period_end,
            zero_ok=zero_ok,
        )

    # --- checkout -----------------------------------------------------------------------------

    async def checkout_returned(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account_id: int,
        order_id: int,
        token: str,
    ) -> None:
        """The customer came back from the provider's page for one of their own pending orders
        (``token``: the provider's reference in the return address). The provider settles it
        now if it can; if it cannot be reached, its webhook settles the order later."""
        order = await BillingRepository(session).order_of(account_id, order_id)
        if order is None or order.status != OrderStatus.pending or not token:
            return
        handler = RETURN_HANDLERS.get(order.provider)
        if handler is None:
            return
        try:
            await handler(session, runtime, order, token)
        except (ProviderNotConfigured, ProviderUnavailable, EventNeedsPerson) as exc:
            log.warning("order %s: not settled on return (%s); its webhook will", order.id, exc)

    def checkout_methods(self, runtime: Runtime) -> list[PaymentMethod]:
        """The policy's offered methods that a set-up provider can take now (the checkout
        page offers only these)."""
        found = []
        for method in runtime.policy.payment_methods.offered:
            provider = CHECKOUT_PROVIDERS.get(str(method))
            if provider is not None and provider.configured(runtime.settings):
                found.append(PaymentMethod(method))
        return found

    def methods_without_provider(self, runtime: Runtime) -> list[MethodWithoutProvider]:
        """The policy's offered methods that checkout cannot take, and why: burrow has no
        provider for the method, or its provider is not set up (for the operator to fix)."""
        missing = []
        for method in runtime.policy.payment_methods.offered:
            provider = CHECKOUT_PROVIDERS.get(str(method))
            if provider is None:
                missing.append(MethodWithoutProvider(str(method), None))
            elif not provider.configured(runtime.settings):
                missing.append(MethodWithoutProvider(str(method), provider.name))
        return missing

    async def start_checkout(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        plan_code: str,
        method: PaymentMethod,
        *,
        referral_code: str | None = None,
    ) -> CheckoutStarted:
        """Open a pending order for ``plan_code`` and start paying it with ``method``'s
        provider (registered in ``CHECKOUT_PROVIDERS``); returns where the customer pays.

        The order is paid when the provider's event says so. If the provider cannot be
        reached the error rolls the order back: nothing was charged, nothing is kept.
        """
        methods = runtime.policy.payment_methods
        offered = [str(m) for m in methods.offered]
        if str(method) not in offered:
            raise MethodNotOffered(str(method), offered)
        provider = CHECKOUT_PROVIDERS.get(str(method))
        if provider is None or not provider.configured(runtime.settings):
            raise MethodNotSetUp(str(method))
        plan = await plan_service.get_offered(session, plan_code)
        recurring = str(method) in [str(m) for m in methods.recurring]
        current = await subscription_service.current(session, account.id)
        if (
            recurring
            and current is not None
            and current.provider_subscription_id
            and not current.cancel_at_period_end
            and gives_access(current)
        ):
            raise AlreadyRenewing(current.provider or provider.name, current.current_period_end)
        if referral_code:
            # A code typed at checkout refers the account (unless someone referred it first).
            await affiliate_service.attach(
                session, runtime, account.id, referral_code, ReferralHow.code
            )
        order = await self.open_order(session, account, plan, PaymentMethod(method), provider.name)
        try:
            url = await provider.start(session, runtime, account, plan, order, recurring=recurring)
        except ProviderNotConfigured as exc:
            raise MethodNotSetUp(str(method)) from exc
        except ProviderUnavailable as exc:
            log.warning("checkout of order %s through %s failed: %s", order.id, provider.name, exc)
            raise ProviderUnreachable(provider.name) from exc
        log.info("order %s opened for checkout through %s", order.id, provider.name)
        return CheckoutStarted(order, url)

    async def order_by_payment(
        self, session: AsyncSession, provider: str, provider_payment_ids: Sequence[str]
    ) -> Order | None:
        """The order a provider's payment (by any of its ids) was recorded on."""
        repository = BillingRepository(session)
        for payment_id in provider_payment_ids:
            payment = await repository.payment_by_provider_id(provider, payment_id)
            if payment is not None:
                return await repository.get_order(payment.order_id)
        return None

    async def provider_refunded(
        self, session: AsyncSession, runtime: Runtime, order: Order, refunded_total: int
    ) -> int:
        """The provider reports ``refunded_total`` sent back on ``order`` so far (its own
        cumulative figure, which includes the refunds burrow executed itself); records only
        what is not recorded yet and returns it. A full refund ends the subscription."""
        target = min(max(refunded_total, 0), order.amount_minor)
        missing = target - order.refunded_minor
        if missing <= 0:
            return 0
        await self.mark_refunded(session, order, missing)
        await affiliate_service.order_refunded(session, runtime, order)
        if order.status == OrderStatus.refunded:
            await subscription_service.end_now(session, runtime, order.account_id)
        log.info("order %s: %s refunded at the provider", order.id, missing)
        return missing

    async def record_manual_payment(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        account_id: int,
        plan_code: str,
        amount_minor: int,
        currency: str,
        method: PaymentMethod,
        reference: str,
    ) -> PaymentRecorded:
        """An operator records money received by other means (a transfer, a store), and the
        audit trail records the operator, in the same unit of work."""
        account = await BillingRepository(session).get_account(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        plan = await plan_service.get_offered(session, plan_code)
        recorded = await self.record_payment(
            session,
            runtime,
            account,
            plan,
            amount_minor,
            currency,
            method,
            "manual",
            reference.strip(),
        )
        await admin_audit.record(
            session,
            actor,
            "payment.record_manual",
            "account",
            account_id,
            None,
            {
                "order_id": recorded.order.id,
                "payment_id": recorded.payment.id,
                "plan_code": plan_code,
                "amount_minor": amount_minor,
                "currency": currency,
                "method": method,
                "reference": reference,
            },
        )
        return recorded

    # --- reading orders ----------------------------------------------------------------------

    async def orders(self, session: AsyncSession, account_id: int) -> list[OrderView]:
        repository = BillingRepository(session)
        orders = await repository.orders_of(account_id)
        return await self._views(session, orders)

    async def order_view(self, session: AsyncSession, order: Order) -> OrderView:
        return (await self._views(session, [order]))[0]

    async def order_of(self, session: AsyncSession, account_id: int, order_id: int) -> Order:
        """One of the account's own orders; someone else's is as unknown as a missing one."""
        order = await BillingRepository(session).order_of(account_id, order_id)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    async def get_order(self, session: AsyncSession, order_id: int) -> Order | None:
        return await BillingRepository(session).get_order(order_id)

    async def first_paid_order_id(self, session: AsyncSession, account_id: int) -> int | None:
        return await BillingRepository(session).first_paid_order_id(account_id)

    async def fingerprints_of(self, session: AsyncSession, order_id: int) -> list[str]:
        payments = await BillingRepository(session).payments_of([order_id])
        return sorted({p.fingerprint for p in payments if p.fingerprint})

    async def payment_ids_of(self, session: AsyncSession, order_id: int) -> list[str]:
        """The provider's ids of the order's payments, oldest first."""
        payments = await BillingRepository(session).payments_of([order_id])
        return [p.provider_payment_id for p in payments]

    async def mark_refunded(self, session: AsyncSession, order: Order, amount_minor: int) -> None:
        """Record money sent back on ``order`` (the refunds domain calls this once executed)."""
        order.refunded_minor += amount_minor
        order.status = (
            OrderStatus.refunded
            if order.refunded_minor >= order.amount_minor
            else OrderStatus.partially_refunded
        )
        await session.flush()

    async def _views(self, session: AsyncSession, orders: Sequence[Order]) -> list[OrderView]:
        payments = await BillingRepository(session).payments_of([o.id for o in orders])
        codes = {p.id: p.code for p in await plan_service.list_all(session)}
        return [
            OrderView(
                order,
                codes.get(order.plan_id, ""),
                tuple(p for p in payments if p.order_id == order.id),
            )
            for order in orders
        ]

    # --- billing details ---------------------------------------------------------------------

    async def details(self, session: AsyncSession, account_id: int) -> BillingDetails:
        found = await BillingRepository(session).details_of(account_id)
        if found is None:
            raise NoBillingDetails()
        return found

    async def set_details(
        self, session: AsyncSession, account_id: int, data: BillingDetailsIn
    ) -> BillingDetails:
        """Kept only for paid accounts: a trial needs only the email address."""
        repository = BillingRepository(session)
        if not await repository.paid_order_count(account_id):
            raise BillingDetailsNotNeeded()
        fields = data.model_dump()
        fields["country"] = data.country.upper()
        found = await repository.details_of(account_id)
        if found is None:
            found = BillingDetails(account_id=account_id, **fields)
            await repository.add(found)
        else:
            for name, value in fields.items():
                setattr(found, name, value)
            found.updated_at = utcnow()
            await session.flush()
        return found


class EventNeedsPerson(Exception):
    """An event that no retry can handle (a currency burrow does not price in, no handler for
    its provider): it is parked at once, with this message, for an administrator."""


class EventAlreadyHandled(Exception):
    """Another handler finished the event first; this one's work is rolled back."""

    def __init__(self, event_row_id: int) -> None:
        super().__init__(f"webhook event {event_row_id} was handled by another handler")


# A provider's handler: what one stored event means, applied inside its own unit of work.
WebhookHandler = Callable[[AsyncSession, Runtime, WebhookEvent, dict[str, Any]], Awaitable[None]]
WEBHOOK_HANDLERS: dict[str, WebhookHandler] = {}


def webhook_handler(provider: str) -> Callable[[WebhookHandler], WebhookHandler]:
    """Register the handler of ``provider``'s events (one per provider)."""

    def register(handler: WebhookHandler) -> WebhookHandler:
        WEBHOOK_HANDLERS[provider] = handler
        return handler

    return register


# What is left of a handled event's payload after its retention.
REDUCED_PAYLOAD = "{}"
# Stored events: a handler holds its claim this long, then another may take the event over.
EVENT_CLAIM = timedelta(minutes=5)
# A failing event is tried again after 30 s, 1 min, 2 min, ... (at most 6 h apart), and after
# this many attempts it is parked for an administrator.
EVENT_MAX_ATTEMPTS = 8
EVENT_FIRST_BACKOFF = timedelta(seconds=30)
EVENT_MAX_BACKOFF = timedelta(hours=6)


def event_backoff(attempts: int) -> timedelta:
    """How long an event that failed its ``attempts``-th attempt waits before the next."""
    doubled: timedelta = EVENT_FIRST_BACKOFF * (2 ** max(attempts - 1, 0))
    return min(doubled, EVENT_MAX_BACKOFF)


class EventNotFound(NotFound):
    title = "Unknown webhook event"
    type_slug = "unknown-webhook-event"

    def __init__(self, event_id: int) -> None:
        super().__init__(f"There is no stored webhook event with the id {event_id}.")


class EventNotFailed(Conflict):
    title = "Event not failed"
    type_slug = "event-not-failed"

    def __init__(self, event_id: int) -> None:
        super().__init__(
            f"Webhook event {event_id} is not parked as failed; only a failed event is retried "
            "by hand."
        )


class WebhookService:
    async def store(
        self,
        session: AsyncSession,
        provider: str,
        event_id: str,
        type_: str,
        payload: dict[str, Any],
    ) -> int | None:
        """Keep the event for handling; its row id, or None (and nothing changed) if it was
        stored before."""
        if not provider or not event_id:
            raise InvalidInput("A webhook event needs its provider and its event id.")
        # A customer's address (a Radar review's, a dispute's evidence) is never needed to
        # handle an event, and never stored.
        text = redact(json.dumps(payload, sort_keys=True))
        return await BillingRepository(session).add_event(provider, event_id, type_, text, utcnow())

    async def reduce_handled(self, runtime: Runtime, *, now: datetime | None = None) -> int:
        """Reduce handled events past the policy's retention to their id and type; returns
        how many were reduced."""
        days = runtime.policy.privacy.provider_event_retention_days
        cutoff = (now or utcnow()) - timedelta(days=days)
        async with unit_of_work(runtime.sessionmaker) as session:
            return await BillingRepository(session).reduce_events(cutoff, REDUCED_PAYLOAD)

    async def process_pending(
        self, runtime: Runtime, *, limit: int = 500, budget_seconds: float = 20.0
    ) -> int:
        """Claim and handle due events one at a time, never-tried ones first; returns how many
        were handled. Bounded by ``limit`` events and ``budget_seconds``, so one run never
        holds the scheduler; what is left waits for the next run.

        An event is claimed before it is handled, so the scheduler of several replicas and the
        webhook's own after-answer handling never handle one event twice at once.
        """
        deadline = time.monotonic() + budget_seconds
        handled = 0
        for _ in range(limit):
            if time.monotonic() > deadline:
                break
            claimed = await self._claim(runtime, None)
            if claimed is None:
                break
            handled += await self._run(runtime, claimed)
        return handled

    async def process_one(self, runtime: Runtime, event_row_id: int) -> bool:
        """Handle one stored event now, if nobody holds or has handled it (the webhook
        endpoint's after-answer task)."""
        claimed = await self._claim(runtime, event_row_id)
        return claimed is not None and await self._run(runtime, claimed)

    async def failed(self, session: AsyncSession, *, limit: int = 200) -> list[WebhookEvent]:
        """Events parked after their last attempt, for the administrator."""
        return list(await BillingRepository(session).failed_events(limit))

    async def retry(self, session: AsyncSession, actor: Actor, event_row_id: int) -> WebhookEvent:
        """An operator's retry of a parked event: due again, with its attempts counted afresh
        (the scheduler or the caller's after-commit handling picks it up), and recorded in the
        audit trail."""
        event = await BillingRepository(session).get_event(event_row_id)
        if event is None:
            raise EventNotFound(event_row_id)
        if event.failed_at is None or event.processed_at is not None:
            raise EventNotFailed(event_row_id)
        event.failed_at = None
        event.next_attempt_at = None
        event.claimed_until = None
        event.attempts = 0
        await session.flush()
        await admin_audit.record(
            session,
            actor,
            "webhook_event.retry",
            "webhook_event",
            event.id,
            None,
            {"provider": event.provider, "type": event.type},
        )
        return event

    async def _claim(self, runtime: Runtime, event_row_id: int | None) -> int | None:
        now = utcnow()
        async with unit_of_work(runtime.sessionmaker) as session:
            return await BillingRepository(session).claim_event(
                now, now + EVENT_CLAIM, event_row_id
            )

    async def _run(self, runtime: Runtime, event_row_id: int) -> bool:
        try:
            async with unit_of_work(runtime.sessionmaker) as session:
                return await self._handle(session, runtime, event_row_id)
        except Exception as exc:
            await self._failed(runtime, event_row_id, exc)
            return False

    async def _failed(self, runtime: Runtime, event_row_id: int, exc: Exception) -> None:
        async with unit_of_work(runtime.sessionmaker) as session:
            event = await BillingRepository(session).get_event(event_row_id)
            if event is None or event.processed_at is not None:
                return
            now = utcnow()
            event.error = f"{type(exc).__name__}: {exc}"[:2000]
            event.claimed_until = None
            if event.attempts >= EVENT_MAX_ATTEMPTS or isinstance(exc, EventNeedsPerson):
                event.failed_at = now
                log.error(
                    "webhook event %s (%s %s) parked after %d attempts: %s",
                    event.id,
                    event.provider,
                    event.type,
                    event.attempts,
                    event.error,
                )
            else:
                event.next_attempt_at = now + event_backoff(event.attempts)
                log.warning(
                    "webhook event %s failed (attempt %d); tried again after %s",
                    event.id,
                    event.attempts,
                    event.next_attempt_at,
                )

    async def _handle(self, session: AsyncSession, runtime: Runtime, event_row_id: int) -> bool:
        repository = BillingRepository(session)
        event = await repository.get_event(event_row_id)
        if event is None or event.processed_at is not None:
            return False  # another handler finished it
        handler = WEBHOOK_HANDLERS.get(event.provider)
        if handler is None:
            raise EventNeedsPerson(f"No handler for provider '{event.provider}'.")
        await handler(session, runtime, event, json.loads(event.payload))
        if runtime.policy.privacy.provider_event_retention_days == 0:
            event.payload = REDUCED_PAYLOAD
        await session.flush()
        if not await repository.finish_event(event.id, utcnow()):
            # Handled meanwhile by a handler that took over an expired claim: undo ours.
            raise EventAlreadyHandled(event.id)
        return True


billing = BillingService()
webhook = WebhookService()
