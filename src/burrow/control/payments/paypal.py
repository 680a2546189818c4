"""PayPal's REST API: orders, captures, refunds and subscriptions through PayPal's own server
SDK (``paypal-server-sdk``), and the webhook signature check, which that SDK does not have,
through httpx with the same OAuth token.

The SDK is synchronous (``requests``): each call runs in a worker thread. Its configuration
knows only PayPal's live and sandbox hosts, so ``_Configuration`` answers the base address
from the settings (``paypal_api_base``: "live", "sandbox" or a test server's address).

``PayPalGateway`` raises ``ProviderNotConfigured`` without client credentials and
``ProviderUnavailable`` when PayPal cannot be reached or refuses the call. ``PayPalProvider``
is the refund side of the registry: a refund goes out with ``PayPal-Request-Id`` set to the
refund's idempotency key (PayPal keeps those for 45 days) and the refund's reference as its
``custom_id``, by which ``find_refund`` looks it up in the PayPal order's refunds.

Imports the models, the settings and the providers' shared exceptions only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import requests
from apimatic_core.exceptions.auth_validation_exception import AuthValidationException
from paypalserversdk.configuration import Configuration, Environment
from paypalserversdk.exceptions.api_exception import ApiException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from burrow.control.config import Settings
from burrow.control.models import Order
from burrow.control.payments.providers import (
    ProviderNotConfigured,
    ProviderUnavailable,
    RefundRefused,
    RefundUnavailable,
)

log = logging.getLogger(__name__)

PROVIDER = "paypal"
TIMEOUT_SECONDS = 30
_HOSTS = {
    "live": "https://api-m.paypal.com",
    "sandbox": "https://api-m.sandbox.paypal.com",
}
# Refund answers PayPal gives for good (already refunded, too much, a disputed capture): no
# retry changes them.
_REFUSALS = frozenset({400, 403, 404, 422})


def api_base(settings: Settings) -> str:
    configured = settings.paypal_api_base.strip()
    return _HOSTS.get(configured.lower(), configured).rstrip("/")


def configured(settings: Settings) -> bool:
    return bool(settings.paypal_client_id and settings.paypal_client_secret)


class _Configuration(Configuration):  # type: ignore[misc]
    """The SDK's configuration, with PayPal's address from the settings."""

    def __init__(self, base: str, **kwargs: Any) -> None:
        self._burrow_base = base
        super().__init__(**kwargs)

    def get_base_uri(self, server: Any = None) -> str:
        return self._burrow_base


def link(found: dict[str, Any], rel: str) -> str | None:
    """The address of ``found``'s HATEOAS link ``rel``."""
    for link in found.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == rel and isinstance(link.get("href"), str):
            return str(link["href"])
    return None


def approve_link(found: dict[str, Any]) -> str | None:
    """Where the payer approves an order ("payer-action" for orders made with a payment
    source, "approve" otherwise) or a subscription ("approve")."""
    return link(found, "payer-action") or link(found, "approve")


class PayPalGateway:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._base = api_base(settings)
        self._webhook_id = settings.paypal_webhook_id
        self._sdk: PaypalServersdkClient | None = None

    @property
    def configured(self) -> bool:
        return configured(self._settings)

    @property
    def _client(self) -> PaypalServersdkClient:
        secret = self._settings.paypal_client_secret
        if not self._settings.paypal_client_id or secret is None:
            raise ProviderNotConfigured("BURROW_PAYPAL_CLIENT_ID/SECRET are not set")
        if self._sdk is None:
            self._sdk = PaypalServersdkClient(
                config=_Configuration(
                    self._base,
                    timeout=TIMEOUT_SECONDS,
                    environment=Environment.PRODUCTION,
                    client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
                        o_auth_client_id=self._settings.paypal_client_id,
                        o_auth_client_secret=secret.get_secret_value(),
                    ),
                )
            )
        return self._sdk

    async def _call(self, what: str, call: Callable[[], Any]) -> dict[str, Any]:
        """One SDK call in a worker thread; PayPal's answer as a plain dict."""
        try:
            response = await asyncio.to_thread(call)
        except ApiException as exc:
            raise PayPalError(what, exc.response_code, _text(exc.response)) from exc
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"PayPal {what}: {type(exc).__name__}") from exc
        except AuthValidationException as exc:
            # No OAuth token: PayPal refused the client id and secret (or could not give one).
            raise ProviderUnavailable(f"PayPal {what}: no access token ({exc})") from exc
        try:
            found = json.loads(response.text or "{}")
        except ValueError as exc:
            raise ProviderUnavailable(f"PayPal {what}: not JSON") from exc
        if not isinstance(found, dict):
            raise ProviderUnavailable(f"PayPal {what}: not an object")
        return found

    # --- orders ------------------------------------------------------------------------------

    async def create_order(self, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        options = {"body": json.dumps(body), "paypal_request_id": request_id}
        return await self._call("create order", lambda: self._client.orders.create_order(options))

    async def get_order(self, order_id: str) -> dict[str, Any]:
        return await self._call(
            "get order", lambda: self._client.orders.get_order({"id": order_id})
        )

    async def capture_order(self, order_id: str, request_id: str) -> dict[str, Any]:
        """Capture an approved order. The same request id gives the same capture, so a
        capture asked twice (the return page and the webhook) takes the money once."""
        options = {
            "id": order_id,
            "paypal_request_id": request_id,
            "prefer": "return=representation",
        }
        return await self._call("capture order", lambda: self._client.orders.capture_order(options))

    # --- subscriptions -----------------------------------------------------------------------

    async def create_subscription(self, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        options = {"body": json.dumps(body), "paypal_request_id": request_id}
        return await self._call(
            "create subscription", lambda: self._client.subscriptions.create_subscription(options)
        )

    async def get_subscription(self, subscription_id: str) -> dict[str, Any]:
        return await self._call(
            "get subscription",
            lambda: self._client.subscriptions.get_subscription({"id": subscription_id}),
        )

    async def _subscription_action(self, action: str, subscription_id: str, reason: str) -> None:
        controller = self._client.subscriptions
        method = getattr(controller, f"{action}_subscription")
        options = {"id": subscription_id, "body": json.dumps({"reason": reason})}
        await self._call(f"{action} subscription", lambda: method(options))

    # --- the renewal side of the registry ----------------------------------------------------

    async def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, idempotency_key: str
    ) -> None:
        """PayPal has no "cancel at period end": a suspended subscription charges nothing and
        can be activated again, which is what stopping (or resuming) a renewal means here;
        the period already paid runs out in burrow."""
        action = "suspend" if cancel else "activate"
        await self._subscription_action(action, subscription_id, "Renewal changed by the customer")

    async def cancel_now(self, subscription_id: str) -> None:
        await self._subscription_action("cancel", subscription_id, "Refunded")

    # --- refunds -----------------------------------------------------------------------------

    async def refund_capture(
        self, capture_id: str, body: dict[str, Any], request_id: str
    ) -> dict[str, Any]:
        options = {
            "capture_id": capture_id,
            "body": json.dumps(body),
            "paypal_request_id": request_id,
            "prefer": "return=representation",
        }
        return await self._call(
            "refund", lambda: self._client.payments.refund_captured_payment(options)
        )

    # --- webhooks ----------------------------------------------------------------------------

    async def _token(self) -> str:
        """The SDK's OAuth client-credentials token (one per gateway)."""
        try:
            token = await asyncio.to_thread(self._client.oauth_2.fetch_token)
        except ApiException as exc:
            raise PayPalError("token", exc.response_code, _text(exc.response)) from exc
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"PayPal token: {type(exc).__name__}") from exc
        access = getattr(token, "access_token", None)
        if not isinstance(access, str) or not access:
            raise ProviderUnavailable("PayPal answered no access token")
        return access

    async def verify_webhook(self, headers: dict[str, str], event: dict[str, Any]) -> bool:
        """PayPal's own check of a delivery (``/v1/notifications/verify-webhook-signature``,
        not in the SDK): the transmission headers, our webhook id and the event as received.
        True only for ``SUCCESS``."""
        if not self._webhook_id:
            raise ProviderNotConfigured("BURROW_PAYPAL_WEBHOOK_ID is not set")
        body = {
            "auth_algo": headers.get("paypal-auth-algo", ""),
            "cert_url": headers.get("paypal-cert-url", ""),
            "transmission_id": headers.get("paypal-transmission-id", ""),
            "transmission_sig": headers.get("paypal-transmission-sig", ""),
            "transmission_time": headers.get("paypal-transmission-time", ""),
            "webhook_id": self._webhook_id,
            "webhook_event": event,
        }
        token = await self._token()
        url = f"{self._base}/v1/notifications/verify-webhook-signature"
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
                response = await client.post(
                    url, json=body, headers={"Authorization": f"Bearer {token}"}
                )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"PayPal verify webhook: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise ProviderUnavailable(f"PayPal verify webhook answered {response.status_code}")
        if response.status_code != 200:
            return False
        try:
            found = response.json()
        except ValueError:
            return False
        return isinstance(found, dict) and found.get("verification_status") == "SUCCESS"

    # --- payouts -----------------------------------------------------------------------------
    # Payouts (``/v1/payments/payouts``) are in neither PayPal's server SDK nor any kept SDK:
    # httpx with the same OAuth token.

    async def _payouts_call(
        self, method: str, url: str, body: dict[str, Any] | None, request_id: str | None
    ) -> httpx.Response:
        token = await self._token()
        headers = {"Authorization": f"Bearer {token}"}
        if request_id:
            headers["PayPal-Request-Id"] = request_id
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
                return await client.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"PayPal payouts: {type(exc).__name__}") from exc

    async def create_payout(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send a payout batch. Its ``sender_batch_id`` makes a retry safe: PayPal pays one id
        at most once in 30 days, and answers a repeat with a link to the original batch,
        which is then read and returned as if this call had made it."""
        header = body.get("sender_batch_header") or {}
        sender_batch_id = str(header.get("sender_batch_id") or "")
        url = f"{self._base}/v1/payments/payouts"
        response = await self._payouts_call("POST", url, body, sender_batch_id or None)
        found = _json_object(response)
        if response.status_code in (200, 201):
            return found
        original = link(found, "self") if response.status_code < 500 else None
        if original is not None and "/v1/payments/payouts/" in original:
            # Already sent under this sender_batch_id (an earlier answer was lost).
            batch_id = original.rstrip("/").rsplit("/", 1)[-1]
            return await self.get_payout(batch_id)
        raise PayPalError("payout", response.status_code, response.text)

    async def get_payout(self, payout_batch_id: str) -> dict[str, Any]:
        """A payout batch with its items' states."""
        url = f"{self._base}/v1/payments/payouts/{payout_batch_id}"
        response = await self._payouts_call("GET", url, None, None)
        if response.status_code != 200:
            raise PayPalError("get payout", response.status_code, response.text)
        return _json_object(response)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


class PayPalError(ProviderUnavailable):
    """PayPal answered an error status."""

    def __init__(self, what: str, status: int, text: str) -> None:
        super().__init__(f"PayPal {what} answered {status}: {text[:300]}")
        self.status = status


def _text(response: Any) -> str:
    text = getattr(response, "text", "")
    return text if isinstance(text, str) else ""


# PayPal's currencies without decimals; every other one it takes has two.
_ZERO_DECIMALS = frozenset({"JPY", "HUF", "TWD"})


def money_text(amount_minor: int, currency: str) -> str:
    """Minor units as PayPal's decimal string (1199 USD -> "11.99"), no floats."""
    if currency.upper() in _ZERO_DECIMALS:
        return str(amount_minor)
    whole, cents = divmod(amount_minor, 100)
    return f"{whole}.{cents:02d}"


def minor_units(value: object, currency: str) -> int | None:
    """PayPal's decimal string in minor units; None if it is not an exact amount."""
    if not isinstance(value, str):
        return None
    try:
        amount = Decimal(value).scaleb(0 if currency.upper() in _ZERO_DECIMALS else 2)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount != amount.to_integral_value() or amount < 0:
        return None
    return int(amount)


class PayPalProvider:
    """Refunds of PayPal captures."""

    name = PROVIDER

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _gateway(self) -> PayPalGateway:
        if not configured(self._settings):
            raise RefundUnavailable("BURROW_PAYPAL_CLIENT_ID/SECRET are not set")
        return PayPalGateway(self._settings)

    async def execute_refund(
        self,
        order: Order,
        payment_id: str,
        amount_minor: int,
        idempotency_key: str,
        reference: str,
    ) -> str:
        body = {
            "amount": {
                "value": money_text(amount_minor, order.currency),
                "currency_code": order.currency,
            },
            "custom_id": reference,
            "invoice_id": f"burrow-refund-{reference}",
            "note_to_payer": "Refund of your VPN order",
        }
        try:
            refund = await self._gateway().refund_capture(payment_id, body, idempotency_key)
        except PayPalError as exc:
            if exc.status in _REFUSALS:
                raise RefundRefused(str(exc)) from exc
            raise RefundUnavailable(str(exc)) from exc
        except ProviderUnavailable as exc:
            raise RefundUnavailable(str(exc)) from exc
        refund_id = refund.get("id")
        if not isinstance(refund_id, str) or not refund_id:
            raise RefundUnavailable("PayPal answered a refund without its id")
        return refund_id

    async def find_refund(self, order: Order, payment_id: str, reference: str) -> str | None:
        """A refund carrying ``reference`` as its ``custom_id`` among the PayPal order's
        refunds. A subscription's payment has no PayPal order to list them: then nothing can
        be found, and retrying blind could pay twice, so the refund waits for a person."""
        provider_order = order.provider_order_id or ""
        if not provider_order or provider_order.startswith("I-"):
            raise RefundUnavailable(
                f"PayPal lists no refunds of subscription payment {payment_id}: check PayPal "
                "by hand before this refund is tried again"
            )
        try:
            found = await self._gateway().get_order(provider_order)
        except ProviderUnavailable as exc:
            raise RefundUnavailable(str(exc)) from exc
        for unit in found.get("purchase_units") or []:
            payments = unit.get("payments") if isinstance(unit, dict) else None
            refunds = payments.get("refunds") if isinstance(payments, dict) else None
            for refund in refunds or []:
                if not isinstance(refund, dict) or refund.get("custom_id") != reference:
                    continue
                if refund.get("status") in ("CANCELLED", "FAILED"):
                    continue
                refund_id = refund.get("id")
                if isinstance(refund_id, str) and refund_id:
                    return refund_id
        return None
