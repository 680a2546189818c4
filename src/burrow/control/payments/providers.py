"""Payment providers: how a refund goes back to the payer, and the calls burrow makes to
Stripe's API (checkout sessions, a subscription's cancellation). ``registry`` says which
provider does what.

Manual payments (bank transfers, a store's report) are refunded by a person outside burrow,
so executing one only records it. Stripe refunds go through the official ``stripe`` library
with the idempotency key, so a retried refund pays out once. CoinGate (crypto) has no refund
here: both seeds exclude crypto from refunds.

Imports the models and the settings only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import stripe

from burrow.control.config import Settings
from burrow.control.models import Order, PaymentMethod

log = logging.getLogger(__name__)


class RefundUnavailable(Exception):
    """The provider cannot refund now (not configured, unreachable); the refund is retried."""


class ProviderNotConfigured(Exception):
    """The operator has not set up this provider (no API key in the settings)."""


class ProviderUnavailable(Exception):
    """The provider could not be reached, or refused the call; nothing was changed there."""


def _stripe_client(api_key: str, api_base: str | None) -> stripe.StripeClient:
    # The library retries network failures and 5xx answers itself, with one idempotency key
    # per call, so a retried POST never acts twice at Stripe.
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else {},
        http_client=stripe.HTTPXClient(),
        max_network_retries=2,
    )


class StripeGateway:
    """Stripe's API for checkout and subscriptions, through the official library."""

    def __init__(self, api_key: str | None, api_base: str | None = None) -> None:
        self._api_key = api_key
        self._api_base = api_base

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        key = settings.stripe_api_key
        return cls(key.get_secret_value() if key else None, settings.stripe_api_base)

    @property
    def configured(self) -> bool:
        return bool(self._api_key)

    def _client(self) -> stripe.StripeClient:
        if not self._api_key:
            raise ProviderNotConfigured("BURROW_STRIPE_API_KEY is not set")
        return _stripe_client(self._api_key, self._api_base)

    async def create_checkout_session(
        self, params: dict[str, object], idempotency_key: str
    ) -> tuple[str, str]:
        """A Checkout Session; returns its id and the URL the customer pays at."""
        client = self._client()
        try:
            created = await client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise ProviderUnavailable(_describe(exc)) from exc
        if not created.url:
            raise ProviderUnavailable("Stripe answered a checkout session without a URL")
        return str(created.id), str(created.url)

    async def invoice_payment_intent(self, invoice_id: str) -> str | None:
        """The payment intent that paid an invoice (Stripe's invoices no longer name it, their
        invoice payments do), so the payment is recorded under the id refunds and
        ``charge.refunded`` use."""
        client = self._client()
        try:
            found = await client.v1.invoice_payments.list_async(
                {"invoice": invoice_id, "status": "paid", "limit": 10}
            )
        except stripe.StripeError as exc:
            raise ProviderUnavailable(_describe(exc)) from exc
        for item in found.data:
            payment = item.payment
            intent = payment.payment_intent if payment.type == "payment_intent" else None
            if intent:
                return intent if isinstance(intent, str) else str(intent.id)
        return None

    async def payment_fingerprint(self, payment_id: str) -> str | None:
        """The card fingerprint of a payment (see ``payment_details``)."""
        return (await self.payment_details(payment_id)).fingerprint

    async def payment_details(self, payment_id: str) -> PaymentDetails:
        """What really paid (a payment intent's latest charge, or a charge): the method class
        Stripe reports (Checkout takes Link, PayPal and SEPA debits as well as cards), and the
        card fingerprint, Stripe's one id of a card number across customers, which the refund
        rule "one per person" compares. The fingerprint is None when the payment was not made
        with a card; both are None when Stripe knows no such payment (a test-mode id under a
        live key): the payment is recorded all the same. Unreachable: ProviderUnavailable, so
        the caller can try again later."""
        client = self._client()
        try:
            if payment_id.startswith("ch_"):
                charge: stripe.Charge | str | None = await client.v1.charges.retrieve_async(
                    payment_id
                )
            else:
                intent = await client.v1.payment_intents.retrieve_async(
                    payment_id, {"expand": ["latest_charge"]}
                )
                charge = intent.latest_charge
                if isinstance(charge, str):
                    # Not expanded after all (an older API version): ask for the charge.
                    charge = await client.v1.charges.retrieve_async(charge)
        except stripe.InvalidRequestError as exc:
            # A request Stripe will refuse every time: retrying would hold the payment back
            # for good, so it is recorded without a fingerprint.
            log.warning("stripe names no card for payment %s: %s", payment_id, _describe(exc))
            return PaymentDetails(None, None)
        except stripe.StripeError as exc:
            raise ProviderUnavailable(_describe(exc)) from exc
        return PaymentDetails(_method_class(charge), _card_fingerprint(charge))

    async def cancel_now(self, subscription_id: str) -> None:
        """End the Stripe subscription at once: no further charge (a refunded order)."""
        client = self._client()
        try:
            await client.v1.subscriptions.cancel_async(subscription_id)
        except stripe.StripeError as exc:
            raise ProviderUnavailable(_describe(exc)) from exc

    async def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, idempotency_key: str
    ) -> None:
        """Tell Stripe to stop (or resume) renewing the subscription at its period end."""
        client = self._client()
        try:
            await client.v1.subscriptions.update_async(
                subscription_id,
                {"cancel_at_period_end": cancel},
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise ProviderUnavailable(_describe(exc)) from exc


@dataclass(frozen=True)
class PaymentDetails:
    method: PaymentMethod | None  # None: Stripe did not say (the order's own method stands)
    fingerprint: str | None


# Stripe's payment method types, by the class the policy's rules name. Card wallets (Apple
# Pay, Google Pay) are cards; what is not named here keeps the order's own method.
_METHOD_CLASSES = {
    "card": PaymentMethod.card,
    "card_present": PaymentMethod.card,
    "link": PaymentMethod.link,
    "paypal": PaymentMethod.paypal,
    "sepa_debit": PaymentMethod.bank_debit,
    "bacs_debit": PaymentMethod.bank_debit,
    "au_becs_debit": PaymentMethod.bank_debit,
    "acss_debit": PaymentMethod.bank_debit,
    "us_bank_account": PaymentMethod.bank_debit,
}


def _method_class(charge: stripe.Charge | str | None) -> PaymentMethod | None:
    if charge is None or isinstance(charge, str):
        return None
    details = getattr(charge, "payment_method_details", None)
    kind = getattr(details, "type", None) if details is not None else None
    return _METHOD_CLASSES.get(kind) if isinstance(kind, str) else None


def _card_fingerprint(charge: stripe.Charge | str | None) -> str | None:
    if charge is None or isinstance(charge, str):
        return None
    # Stripe leaves out what does not apply, and the library then has no attribute at all.
    details = getattr(charge, "payment_method_details", None)
    if details is None or getattr(details, "type", None) != "card":
        return None
    found = getattr(getattr(details, "card", None), "fingerprint", None)
    return found if isinstance(found, str) and found else None


def _describe(exc: stripe.StripeError) -> str:
    # The library's own message, without the request's details (keys never appear there).
    return f"{type(exc).__name__}: {exc.user_message or exc}"[:500]


class RefundRefused(Exception):
    """The provider refused the refund for good (already refunded, a disputed payment): no
    retry changes that, and a person looks at it."""


class RefundProvider(Protocol):
    name: str

    async def execute_refund(
        self,
        order: Order,
        payment_id: str,
        amount_minor: int,
        idempotency_key: str,
        reference: str,
    ) -> str:
        """Send ``amount_minor`` of ``order`` (paid by the provider's ``payment_id``) back to
        the payer, keeping ``reference`` with the refund at the provider; returns the
        provider's id of the refund. Called again with the same key, it must not pay twice.
        Raises ``RefundRefused`` when the provider says no for good."""
        ...

    async def find_refund(self, order: Order, payment_id: str, reference: str) -> str | None:
        """The provider's id of the refund made under ``reference``, if one exists (asked
        before any retry: an attempt that failed with an unclear answer may have paid)."""
        ...


class ManualProvider:
    """Money that came by other means goes back by other means: burrow records it."""

    name = "manual"

    async def execute_refund(
        self,
        order: Order,
        payment_id: str,
        amount_minor: int,
        idempotency_key: str,
        reference: str,
    ) -> str:
        return f"manual:{reference}"

    async def find_refund(self, order: Order, payment_id: str, reference: str) -> str | None:
        return None


class StripeProvider:
    name = "stripe"

    def __init__(self, api_key: str | None, api_base: str | None = None) -> None:
        self._api_key = api_key
        self._api_base = api_base

    def _client(self) -> stripe.StripeClient:
        if not self._api_key:
            raise RefundUnavailable("BURROW_STRIPE_API_KEY is not set")
        return _stripe_client(self._api_key, self._api_base)

    async def _payment(self, payment_id: str) -> dict[str, object]:
        """The refund's payment parameter: a payment intent (checkout and invoices pay through
        one), or a charge id for older charges."""
        if payment_id.startswith("in_"):
            # Recorded under its invoice (no API key when it was paid): refund what paid it.
            try:
                gateway = StripeGateway(self._api_key, self._api_base)
                intent = await gateway.invoice_payment_intent(payment_id)
            except ProviderUnavailable as exc:
                raise RefundUnavailable(str(exc)) from exc
            if intent is None:
                raise RefundUnavailable(f"Stripe names no payment of invoice {payment_id}")
            payment_id = intent
        return {("charge" if payment_id.startswith("ch_") else "payment_intent"): payment_id}

    async def execute_refund(
        self,
        order: Order,
        payment_id: str,
        amount_minor: int,
        idempotency_key: str,
        reference: str,
    ) -> str:
        client = self._client()
        params: dict[str, object] = {
            "amount": amount_minor,
            "metadata": {"order_id": order.id, "burrow_refund": reference},
            **await self._payment(payment_id),
        }
        try:
            refund = await client.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except (stripe.InvalidRequestError, stripe.CardError) as exc:
            raise RefundRefused(_describe(exc)) from exc
        return str(refund.id)

    async def find_refund(self, order: Order, payment_id: str, reference: str) -> str | None:
        client = self._client()
        try:
            params: dict[str, object] = {**await self._payment(payment_id), "limit": 100}
            found = await client.v1.refunds.list_async(params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            raise RefundUnavailable(_describe(exc)) from exc
        for refund in found.data:
            metadata = refund.metadata
            mine = (
                metadata is not None
                and "burrow_refund" in metadata
                and metadata["burrow_refund"] == reference
            )
            if mine and refund.status != "failed":
                return str(refund.id)
        return None
