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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.billing.repository import BillingRepository
from burrow.control.billing.schemas import BillingDetailsIn
from burrow.control.db import unit_of_work
from burrow.control.errors import Conflict, Forbidden, InvalidInput, NotFound
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
    WebhookEvent,
    utcnow,
)
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
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

    def __init__(self, account_id: int) -> None:
        super().__init__(
            f"Account {account_id} is terminated; a payment cannot give it a period. "
            "Refund the payer instead."
        )


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


def _check_money(amount_minor: int, currency: str, plan: Plan) -> None:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise InvalidInput("Give the amount as a whole number of minor units (cents).")
    if amount_minor <= 0:
        raise InvalidInput("A payment's amount must be above zero.", field="amount_minor")
    if currency != plan.currency:
        raise InvalidInput(
            f"The plan {plan.code} is priced in {plan.currency}; record the payment in "
            f"{plan.currency}, not {currency}.",
            field="currency",
        )


class BillingService:
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
    ) -> PaymentRecorded:
        """Record money received for ``plan`` and give its period to the account.

        The account's first paid order is ``first``, every later one a ``renewal``. The
        subscription is extended (same plan, still active) or replaced, as an admin grant is.
        """
        _check_money(amount_minor, currency, plan)
        if account.status == AccountStatus.terminated:
            raise AccountTerminated(account.id)
        repository = BillingRepository(session)
        known = await repository.payment_by_provider_id(provider, provider_payment_id)
        if known is not None:
            raise DuplicatePayment(provider, provider_payment_id, known.order_id)
        earlier = await repository.paid_order_count(account.id)
        now = utcnow()
        order = Order(
            account_id=account.id,
            plan_id=plan.id,
            kind=OrderKind.renewal if earlier else OrderKind.first,
            amount_minor=amount_minor,
            currency=currency,
            payment_method=PaymentMethod(method),
            status=OrderStatus.paid,
            period_months=plan.period_months,
            paid_at=now,
            provider=provider,
            provider_order_id=provider_order_id,
        )
        await repository.add(order)
        payment = Payment(
            order_id=order.id,
            provider=provider,
            provider_payment_id=provider_payment_id,
            amount_minor=amount_minor,
            currency=currency,
            fingerprint=fingerprint,
        )
        await repository.add(payment)
        granted = await subscription_service.grant(
            session, runtime, account.id, plan.code, months=plan.period_months
        )
        log.info("order %s paid through %s for account %s", order.id, provider, account.id)
        message = f"Recorded the payment as order {order.id} ({order.kind}). {granted.message}"
        return PaymentRecorded(order, payment, plan.code, message)

    async def record_manual_payment(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account_id: int,
        plan_code: str,
        amount_minor: int,
        currency: str,
        method: PaymentMethod,
        reference: str,
    ) -> PaymentRecorded:
        """An administrator records money received by other means (a transfer, a store)."""
        account = await BillingRepository(session).get_account(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        plan = await plan_service.get_offered(session, plan_code)
        return await self.record_payment(
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


# A provider's handler: what one stored event means, applied inside its own unit of work.
WebhookHandler = Callable[[AsyncSession, Runtime, WebhookEvent, dict[str, Any]], Awaitable[None]]
WEBHOOK_HANDLERS: dict[str, WebhookHandler] = {}


def webhook_handler(provider: str) -> Callable[[WebhookHandler], WebhookHandler]:
    """Register the handler of ``provider``'s events (one per provider)."""

    def register(handler: WebhookHandler) -> WebhookHandler:
        WEBHOOK_HANDLERS[provider] = handler
        return handler

    return register


class WebhookService:
    async def store(
        self,
        session: AsyncSession,
        provider: str,
        event_id: str,
        type_: str,
        payload: dict[str, Any],
    ) -> bool:
        """Keep the event for handling; False (and nothing changed) if it was stored before."""
        if not provider or not event_id:
            raise InvalidInput("A webhook event needs its provider and its event id.")
        return await BillingRepository(session).add_event(
            provider, event_id, type_, json.dumps(payload, sort_keys=True), utcnow()
        )

    async def process_pending(self, runtime: Runtime, *, limit: int = 500) -> int:
        """Handle stored, unhandled events in the order they arrived; returns how many were.

        Each event gets its own unit of work: a failing handler rolls back only its event,
        which keeps its error and is tried again on the next run.
        """
        async with unit_of_work(runtime.sessionmaker) as session:
            pending = list(await BillingRepository(session).pending_event_ids(limit))
        handled = 0
        for event_id in pending:
            try:
                async with unit_of_work(runtime.sessionmaker) as session:
                    if await self._handle(session, runtime, event_id):
                        handled += 1
            except Exception as exc:
                log.exception("webhook event %s failed; it will be tried again", event_id)
                async with unit_of_work(runtime.sessionmaker) as session:
                    event = await BillingRepository(session).get_event(event_id)
                    if event is not None:
                        event.error = f"{type(exc).__name__}: {exc}"[:2000]
        return handled

    async def _handle(self, session: AsyncSession, runtime: Runtime, event_id: int) -> bool:
        event = await BillingRepository(session).get_event(event_id)
        if event is None or event.processed_at is not None:
            return False  # another replica handled it
        handler = WEBHOOK_HANDLERS.get(event.provider)
        if handler is None:
            event.error = f"No handler for provider '{event.provider}'; the event was skipped."
        else:
            await handler(session, runtime, event, json.loads(event.payload))
            event.error = None
        event.processed_at = utcnow()
        await session.flush()
        return handler is not None


billing = BillingService()
webhook = WebhookService()
