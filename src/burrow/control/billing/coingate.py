"""CoinGate (cryptocurrency): checkout through CoinGate's API v2 and its order callbacks.

``CoinGateCheckout`` is the ``crypto`` checkout provider: for the pending order the billing
service opened, it creates a CoinGate order (``POST /v2/orders``) with our order id, the price
as a decimal string, the callback URL and a per-order token: an HMAC of our order id under the
secret key. The customer pays at CoinGate's ``payment_url``.

CoinGate then posts a form to the callback URL at each status change. A callback is believed
only as far as CoinGate's documentation allows: its token must be the one made for that order
(compared in constant time), the order must be ours and CoinGate's, and the status and amounts
used are those of the order fetched back from CoinGate's API (``GET /v2/orders/{id}``), never
those of the form. A forged or mismatched callback is refused and stored nowhere. A believed
one is stored under (coingate, "<CoinGate id>:<status>"), so a repeated callback changes
nothing, and handled later by ``handle``: ``paid`` pays the order (amount and currency checked
against it), ``invalid``/``expired``/``canceled`` fail it; the others only wait.

CoinGate has no refund provider: both seeds exclude crypto from refunds, and
``payments.registry`` names no refund for "coingate", so an approved refund on such an order
fails loudly instead of being marked paid out.

Imports the billing service, the models, the settings and the runtime.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.billing.service import (
    CHECKOUT_PROVIDERS,
    AccountTerminated,
    DuplicatePayment,
    OrderNotPayable,
    webhook_handler,
)
from burrow.control.billing.service import billing as billing_service
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.config import Settings
from burrow.control.errors import BurrowError, NotFound
from burrow.control.models import Account, Order, PaymentMethod, Plan, WebhookEvent
from burrow.control.payments.providers import ProviderNotConfigured, ProviderUnavailable
from burrow.control.runtime import Runtime

log = logging.getLogger(__name__)

PROVIDER = "coingate"
CALLBACK_PATH = "/api/v1/billing/webhooks/coingate"
BILLING_PAGE = "/billing"
TIMEOUT_SECONDS = 15.0

PAID = "paid"
FAILED = frozenset({"invalid", "expired", "canceled"})
# Every status CoinGate documents for an order.
STATUSES = frozenset(
    {
        "new",
        "pending",
        "confirming",
        "paid",
        "invalid",
        "expired",
        "canceled",
        "refunded",
        "partially_refunded",
    }
)

# ISO 4217 currencies without minor units; every other price currency burrow sells in has two.
_ZERO_DECIMALS = frozenset({"JPY", "KRW", "ISK", "CLP", "VND", "XAF", "XOF", "UGX", "PYG"})


class CoinGateNotConfigured(NotFound):
    def __init__(self) -> None:
        super().__init__("There is no CoinGate callback endpoint here.")


class CallbackRefused(BurrowError):
    status = 400
    title = "Callback refused"
    type_slug = "callback-refused"


class CoinGateUnavailable(BurrowError):
    status = 503
    title = "Payment provider unavailable"
    type_slug = "payment-provider-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "CoinGate could not be asked to confirm this order; nothing was stored. Send the "
            "callback again later."
        )


# --- money ------------------------------------------------------------------------------------


def _digits(currency: str) -> int:
    return 0 if currency.upper() in _ZERO_DECIMALS else 2


def price_text(amount_minor: int, currency: str) -> str:
    """Minor units as the decimal string CoinGate takes (1199 USD -> "11.99"), no floats."""
    digits = _digits(currency)
    if digits == 0:
        return str(amount_minor)
    whole, cents = divmod(amount_minor, 10**digits)
    return f"{whole}.{cents:0{digits}d}"


def minor_units(text: object, currency: str) -> int | None:
    """CoinGate's decimal string ("11.99", "2000.0") in minor units; None if it is not one."""
    if not isinstance(text, str | int) or isinstance(text, bool):
        return None
    try:
        value = Decimal(str(text)).scaleb(_digits(currency))
    except InvalidOperation:
        return None
    if not value.is_finite() or value != value.to_integral_value():
        return None
    return int(value)


def callback_token(settings: Settings, order_id: int) -> str:
    """The token CoinGate sends back with every callback of our order ``order_id``."""
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"coingate-callback:{order_id}".encode(), hashlib.sha256).hexdigest()


# --- CoinGate's API ---------------------------------------------------------------------------


class CoinGateClient:
    """Calls to CoinGate's API v2, authenticated with ``Authorization: Token <key>``.

    Raises ``ProviderNotConfigured`` without an API key and ``ProviderUnavailable`` when
    CoinGate cannot be reached or refuses the call.
    """

    def __init__(self, settings: Settings) -> None:
        key = settings.coingate_api_key
        if key is None:
            raise ProviderNotConfigured("BURROW_COINGATE_API_KEY is not set")
        self._key = key.get_secret_value()
        self._base = settings.coingate_api_base.rstrip("/")

    async def _call(self, method: str, path: str, form: dict[str, str] | None = None) -> Any:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
                response = await client.request(
                    method,
                    f"{self._base}{path}",
                    data=form,
                    headers={"Authorization": f"Token {self._key}", "Accept": "application/json"},
                )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"CoinGate {method} {path}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            # CoinGate explains itself in {"message", "reason"}: for the operator's log.
            raise ProviderUnavailable(
                f"CoinGate {method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderUnavailable(f"CoinGate {method} {path}: not JSON") from exc

    async def create_order(self, form: dict[str, str]) -> dict[str, Any]:
        found = await self._call("POST", "/v2/orders", form)
        if not isinstance(found, dict) or not found.get("id") or not found.get("payment_url"):
            raise ProviderUnavailable("CoinGate answered an order without its payment page")
        return found

    async def get_order(self, coingate_id: str) -> dict[str, Any]:
        found = await self._call("GET", f"/v2/orders/{coingate_id}")
        if not isinstance(found, dict):
            raise ProviderUnavailable("CoinGate answered an order that is not an object")
        return found


# --- checkout ---------------------------------------------------------------------------------


class CoinGateCheckout:
    """The ``crypto`` checkout provider: a CoinGate order for our pending order."""

    name = PROVIDER

    def configured(self, settings: Settings) -> bool:
        return settings.coingate_api_key is not None

    async def start(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        plan: Plan,
        order: Order,
        *,
        recurring: bool,
    ) -> str:
        """Create the CoinGate order; returns CoinGate's payment page. Crypto never renews by
        itself (``recurring`` is ignored): the renewal reminder asks for the next payment."""
        settings = runtime.settings
        client = CoinGateClient(settings)
        form = {
            "order_id": str(order.id),
            "price_amount": price_text(order.amount_minor, order.currency),
            "price_currency": order.currency,
            "receive_currency": settings.coingate_receive_currency,
            "title": f"{runtime.policy.provider.name} order {order.id}"[:150],
            "description": f"{plan.name}: {plan.period_months} month(s) of VPN access"[:500],
            "callback_url": settings.public_link(CALLBACK_PATH),
            "success_url": settings.public_link(f"{BILLING_PAGE}?order={order.id}"),
            "cancel_url": settings.public_link(BILLING_PAGE),
            "token": callback_token(settings, order.id),
        }
        created = await client.create_order(form)
        order.provider_order_id = str(created["id"])[:200]
        await session.flush()
        log.info("order %s: CoinGate order %s created", order.id, order.provider_order_id)
        return str(created["payment_url"])


CHECKOUT_PROVIDERS[str(PaymentMethod.crypto)] = CoinGateCheckout()


# --- callbacks --------------------------------------------------------------------------------


def _mismatch(order: Order, remote: dict[str, Any], coingate_id: str) -> str | None:
    """Why CoinGate's order is not the one ``order`` was made for, or None if it is."""
    if str(remote.get("id")) != coingate_id or str(remote.get("order_id")) != str(order.id):
        return "CoinGate's order is not this order"
    currency = str(remote.get("price_currency", "")).upper()
    if currency != order.currency:
        return f"priced in {currency or 'nothing'}, the order in {order.currency}"
    if minor_units(remote.get("price_amount"), currency) != order.amount_minor:
        return "a different price than the order's"
    if remote.get("status") not in STATUSES:
        return "an unknown status"
    return None


async def receive(
    session: AsyncSession, runtime: Runtime, fields: dict[str, str]
) -> tuple[int | None, str]:
    """Verify one callback and store what CoinGate's API says; (the stored event's row id, or
    None for a duplicate; status).

    ``fields`` is the posted form: only ``id``, ``order_id`` and ``token`` are used from it.
    """
    settings = runtime.settings
    if settings.coingate_api_key is None:
        raise CoinGateNotConfigured()
    refused = CallbackRefused("This callback does not match any order of ours; it was refused.")
    coingate_id = fields.get("id", "").strip()
    order_text = fields.get("order_id", "").strip()
    token = fields.get("token", "")
    # ASCII digits only: str.isdigit() alone also takes other scripts' digits.
    if not (coingate_id.isascii() and coingate_id.isdigit()):
        raise refused
    if not (order_text.isascii() and order_text.isdigit()) or len(order_text) > 18:
        raise refused
    order_id = int(order_text)
    expected = callback_token(settings, order_id)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise refused
    order = await billing_service.get_order(session, order_id)
    if order is None or order.provider != PROVIDER or order.provider_order_id != coingate_id:
        raise refused
    # The form proves only that it knew the token; what happened comes from CoinGate itself.
    try:
        remote = await CoinGateClient(settings).get_order(coingate_id)
    except ProviderUnavailable as exc:
        log.warning("CoinGate callback for order %s not confirmed: %s", order.id, exc)
        raise CoinGateUnavailable() from exc
    why = _mismatch(order, remote, coingate_id)
    if why is not None:
        log.warning("CoinGate callback for order %s refused: %s", order.id, why)
        raise refused
    status = str(remote["status"])
    payload = {"order_id": order.id, "order": remote}
    stored = await webhook_service.store(
        session, PROVIDER, f"{coingate_id}:{status}", f"order.{status}", payload
    )
    return stored, status


@webhook_handler(PROVIDER)
async def handle(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, payload: dict[str, Any]
) -> None:
    order = await billing_service.get_order(session, int(payload.get("order_id", 0)))
    remote = payload.get("order")
    if order is None or not isinstance(remote, dict):
        log.warning("CoinGate event %s names no order of ours; skipped", event.event_id)
        return
    coingate_id = str(remote.get("id"))
    why = _mismatch(order, remote, coingate_id)
    if why is not None:
        log.warning("CoinGate event %s does not match order %s: %s", event.event_id, order.id, why)
        return
    status = str(remote["status"])
    if status == PAID:
        amount = minor_units(remote.get("price_amount"), order.currency)
        assert amount is not None  # checked by _mismatch
        try:
            await billing_service.pay_order(
                session, runtime, order, coingate_id, amount, order.currency
            )
        except (DuplicatePayment, OrderNotPayable):
            log.info("CoinGate event %s: order %s already settled", event.event_id, order.id)
        except AccountTerminated:
            # Paid after the account was terminated: no period is given; a person sends the
            # money back at CoinGate (burrow has no crypto refunds).
            log.warning(
                "CoinGate order %s paid for terminated account %s: refund it by hand",
                coingate_id,
                order.account_id,
            )
    elif status in FAILED:
        await billing_service.fail_order(session, order, f"CoinGate: {status}")
    else:
        # new, pending, confirming: the shopper is still paying. refunded: done at CoinGate by
        # hand (burrow never refunds crypto), recorded there, not here.
        log.info("CoinGate order %s is %s; nothing to do", coingate_id, status)
