"""The one registry of payment providers: what each one can do, looked up by its name.

Billing, subscriptions and refunds ask this registry ("can this provider refund? stop a
renewal?") instead of testing provider names. Every provider burrow knows is listed in
``_BUILT_IN`` below, explicitly; tests add their own with ``register`` (and remove them
with ``unregister``).

Imports the providers module and the settings only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from burrow.control.config import Settings
from burrow.control.payments import paypal
from burrow.control.payments.providers import (
    ManualProvider,
    RefundProvider,
    StripeGateway,
    StripeProvider,
)


class RenewalGateway(Protocol):
    """A provider that renews subscriptions by itself, and can be told to stop."""

    @property
    def configured(self) -> bool: ...

    async def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, idempotency_key: str
    ) -> None: ...

    async def cancel_now(self, subscription_id: str) -> None: ...


@dataclass(frozen=True)
class RegisteredProvider:
    name: str
    # What sends a refund back (None: this provider's refunds are made outside burrow).
    refunds: Callable[[Settings], RefundProvider] | None = None
    # What stops a renewal the provider charges by itself (None: it renews nothing).
    renewals: Callable[[Settings], RenewalGateway] | None = None


def _stripe_refunds(settings: Settings) -> RefundProvider:
    key = settings.stripe_api_key
    return StripeProvider(key.get_secret_value() if key else None, settings.stripe_api_base)


_BUILT_IN = (
    RegisteredProvider("manual", refunds=lambda _settings: ManualProvider()),
    RegisteredProvider("stripe", refunds=_stripe_refunds, renewals=StripeGateway.from_settings),
    RegisteredProvider("paypal", refunds=paypal.PayPalProvider, renewals=paypal.PayPalGateway),
    # CoinGate (crypto) has no refund here: both seeds exclude crypto from refunds.
    RegisteredProvider("coingate"),
)


class ProviderRegistry:
    def __init__(self, providers: tuple[RegisteredProvider, ...]) -> None:
        self._providers = {p.name: p for p in providers}

    def register(self, provider: RegisteredProvider) -> None:
        self._providers[provider.name] = provider

    def unregister(self, name: str) -> None:
        self._providers.pop(name, None)

    def get(self, name: str | None) -> RegisteredProvider | None:
        return self._providers.get(name) if name else None

    def refunds(self, name: str, settings: Settings) -> RefundProvider | None:
        """What refunds an order paid through ``name``; None when burrow cannot."""
        found = self.get(name)
        return found.refunds(settings) if found and found.refunds else None

    def renewals(self, name: str | None, settings: Settings) -> RenewalGateway | None:
        """What stops the renewals ``name`` charges by itself; None when it charges none."""
        found = self.get(name)
        return found.renewals(settings) if found and found.renewals else None


registry = ProviderRegistry(_BUILT_IN)
