"""Payment providers behind one interface: how a refund goes back to the payer.

Manual payments (bank transfers, a store's report) are refunded by a person outside burrow,
so executing one only records it. Stripe refunds go through the official ``stripe`` library
with the idempotency key, so a retried refund pays out once. CoinGate (crypto) has no refund
here: both seeds exclude crypto from refunds.

Imports the models and the settings only.
"""

from __future__ import annotations

from typing import Protocol

import stripe

from burrow.control.config import Settings
from burrow.control.models import Order


class RefundUnavailable(Exception):
    """The provider cannot refund now (not configured, unreachable); the refund is retried."""


class RefundProvider(Protocol):
    name: str

    async def execute_refund(
        self, order: Order, payment_id: str, amount_minor: int, idempotency_key: str
    ) -> str:
        """Send ``amount_minor`` of ``order`` (paid by the provider's ``payment_id``) back to
        the payer; returns the provider's id of the refund. Called again with the same key, it
        must not pay twice."""
        ...


class ManualProvider:
    """Money that came by other means goes back by other means: burrow records it."""

    name = "manual"

    async def execute_refund(
        self, order: Order, payment_id: str, amount_minor: int, idempotency_key: str
    ) -> str:
        return f"manual:{idempotency_key}"


class StripeProvider:
    name = "stripe"

    def __init__(self, api_key: str | None, api_base: str | None = None) -> None:
        self._api_key = api_key
        self._api_base = api_base

    async def execute_refund(
        self, order: Order, payment_id: str, amount_minor: int, idempotency_key: str
    ) -> str:
        if not self._api_key:
            raise RefundUnavailable("BURROW_STRIPE_API_KEY is not set")
        client = stripe.StripeClient(
            self._api_key,
            base_addresses={"api": self._api_base} if self._api_base else {},
            http_client=stripe.HTTPXClient(),
            max_network_retries=2,
        )
        params: dict[str, object] = {"amount": amount_minor, "metadata": {"order_id": order.id}}
        # Checkout and invoices pay through a payment intent; older charges have a charge id.
        params["charge" if payment_id.startswith("ch_") else "payment_intent"] = payment_id
        refund = await client.v1.refunds.create_async(
            params,  # type: ignore[arg-type]
            {"idempotency_key": idempotency_key},
        )
        return str(refund.id)


# Extra providers by name (tests, later integrations); they win over the built-in ones.
PROVIDERS: dict[str, RefundProvider] = {}


def provider_for(name: str, settings: Settings) -> RefundProvider | None:
    if name in PROVIDERS:
        return PROVIDERS[name]
    if name == "manual":
        return ManualProvider()
    if name == "stripe":
        key = settings.stripe_api_key
        return StripeProvider(key.get_secret_value() if key else None, settings.stripe_api_base)
    return None
