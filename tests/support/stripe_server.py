"""A local HTTP server that answers the calls burrow makes to Stripe's API as Stripe does.

The real ``stripe`` library talks to it (``settings.stripe_api_base``), so tests see exactly
what the library sent: the path, the form-encoded parameters and the Idempotency-Key. Also
here: signing webhook deliveries with Stripe's scheme, and building Stripe-shaped events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from pydantic import SecretStr

from burrow.control.config import Settings
from tests.support.fake_http import JsonHandler, running_http

# The stripe library's httpx client uploads its form as ``data=bytes``, which httpx
# deprecates; tests that let the library call out filter this warning.
HTTPX_DATA_WARNING = "ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning"


@dataclass
class StripeCall:
    method: str
    path: str
    idempotency_key: str
    form: dict[str, list[str]]  # the form of a POST, the query of a GET

    def param(self, name: str) -> str | None:
        """One form parameter, by its Stripe name (``line_items[0][price_data][currency]``)."""
        values = self.form.get(name)
        return values[0] if values else None


@dataclass
class FakeStripe:
    """What the server was asked and what it answers; the same key, the same object."""

    url: str = ""
    calls: list[StripeCall] = field(default_factory=list)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The card fingerprint each payment intent was paid with (None: not by card, a PayPal
    # payment); one not named here was paid by a card of its own, "fp_card_of_<intent>".
    cards: dict[str, str | None] = field(default_factory=dict)
    # Payment intents paid by a method other than a card or PayPal, by Stripe's type name
    # ("link", "sepa_debit").
    methods: dict[str, str] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)  # payment intents Stripe has no record of
    failures: int = 0  # answer this many calls with a 500 first
    # Make this many refunds, then answer each with a 500 all the same (the money went out,
    # the caller cannot know it).
    lost_answers: int = 0
    delay: float = 0.0  # seconds to wait before each answer (a slow Stripe)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_subscription(self, sub_id: str) -> None:
        """An active subscription that renews at the end of its period, as Stripe holds one."""
        self.subscriptions[sub_id] = {
            "id": sub_id,
            "object": "subscription",
            "status": "active",
            "cancel_at_period_end": False,
        }

    def answer(self, call: StripeCall) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append(call)
            if self.failures:
                self.failures -= 1
                return 500, {"error": {"message": "try later", "type": "api_error"}}
            if call.method == "POST" and call.path == "/v1/refunds":
                status, body = self._refund(call)
                if status == 200 and self.lost_answers:
                    self.lost_answers -= 1
                    return 500, {"error": {"message": "try later", "type": "api_error"}}
                return status, body
            if call.method == "GET" and call.path == "/v1/refunds":
                return 200, self._refund_list(call)
            if call.method == "POST" and call.path == "/v1/checkout/sessions":
                return 200, self._session(call)
            if call.method in ("POST", "DELETE") and call.path.startswith("/v1/subscriptions/"):
                return self._subscription(call)
            if call.method == "GET" and call.path == "/v1/invoice_payments":
                return 200, self._invoice_payments(call)
            if call.method == "GET" and call.path.startswith("/v1/payment_intents/"):
                return self._payment_intent(call)
            if call.method == "GET" and call.path.startswith("/v1/charges/ch_of_"):
                return 200, self.charge(call.path.removeprefix("/v1/charges/ch_of_"))
            return 404, {"error": {"message": "no such route", "type": "invalid_request_error"}}

    def _refund(self, call: StripeCall) -> tuple[int, dict[str, Any]]:
        amount = int(call.param("amount") or 0)
        known = self.refunds.get(call.idempotency_key)
        if known is not None and known["amount"] != amount:
            # As Stripe does: a key reused with other parameters is refused, not replayed.
            return 400, {
                "error": {
                    "message": "Keys for idempotent requests can only be used with the same "
                    "parameters they were first used with.",
                    "type": "idempotency_error",
                }
            }
        return 200, self.refunds.setdefault(
            call.idempotency_key,
            {
                "id": f"re_{len(self.refunds) + 1}",
                "object": "refund",
                "amount": amount,
                "payment_intent": call.param("payment_intent"),
                "status": "succeeded",
                "metadata": {
                    key.removeprefix("metadata[").removesuffix("]"): values[0]
                    for key, values in call.form.items()
                    if key.startswith("metadata[")
                },
            },
        )

    def _refund_list(self, call: StripeCall) -> dict[str, Any]:
        intent = call.param("payment_intent")
        found = [r for r in self.refunds.values() if r["payment_intent"] == intent]
        return {"object": "list", "url": "/v1/refunds", "has_more": False, "data": found}

    def _session(self, call: StripeCall) -> dict[str, Any]:
        if call.idempotency_key in self.sessions:
            return self.sessions[call.idempotency_key]
        number = len(self.sessions) + 1
        created = {
            "id": f"cs_test_{number}",
            "object": "checkout.session",
            "mode": call.param("mode"),
            "status": "open",
            "payment_status": "unpaid",
            "url": f"https://checkout.stripe.test/c/pay/cs_test_{number}",
            "metadata": {
                key: call.param(f"metadata[{key}]")
                for key in ("account_id", "plan_code", "order_id")
            },
        }
        self.sessions[call.idempotency_key] = created
        return created

    def _invoice_payments(self, call: StripeCall) -> dict[str, Any]:
        # Every invoice was paid by the payment intent named after it.
        invoice = call.param("invoice") or ""
        paid = {
            "id": f"inpay_{invoice}",
            "object": "invoice_payment",
            "invoice": invoice,
            "status": "paid",
            "is_default": True,
            "payment": {"type": "payment_intent", "payment_intent": f"pi_of_{invoice}"},
        }
        return {"object": "list", "url": "/v1/invoice_payments", "has_more": False, "data": [paid]}

    def charge(self, intent: str) -> dict[str, Any]:
        """The charge that paid ``intent`` (``ch_of_<intent>``), with its method's details."""
        fingerprint = self.cards.get(intent, f"fp_card_of_{intent}")
        if intent in self.methods:
            kind = self.methods[intent]
            details: dict[str, Any] = {"type": kind, kind: {}}
        elif intent in self.cards and fingerprint is None:
            details = {"type": "paypal", "paypal": {"payer_id": "PAYER1"}}
        else:
            card = {"brand": "visa", "last4": "4242", "fingerprint": fingerprint, "wallet": None}
            details = {"type": "card", "card": card}
        return {
            "id": f"ch_of_{intent}",
            "object": "charge",
            "payment_intent": intent,
            "paid": True,
            "status": "succeeded",
            "payment_method_details": details,
        }

    def _payment_intent(self, call: StripeCall) -> tuple[int, dict[str, Any]]:
        intent = call.path.removeprefix("/v1/payment_intents/")
        if intent in self.unknown:
            return 404, {
                "error": {
                    "message": f"No such payment_intent: '{intent}'",
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                }
            }
        expand = [v for k, values in call.form.items() if k.startswith("expand") for v in values]
        # As Stripe does: the charge's id, or the charge itself when it is expanded.
        latest = self.charge(intent) if "latest_charge" in expand else f"ch_of_{intent}"
        return 200, {
            "id": intent,
            "object": "payment_intent",
            "status": "succeeded",
            "latest_charge": latest,
        }

    def _subscription(self, call: StripeCall) -> tuple[int, dict[str, Any]]:
        sub_id = call.path.removeprefix("/v1/subscriptions/")
        found = self.subscriptions.get(sub_id)
        if found is None:
            return 404, {
                "error": {
                    "message": f"No such subscription: '{sub_id}'",
                    "type": "invalid_request_error",
                }
            }
        if found["status"] == "canceled":
            return 400, {
                "error": {
                    "message": "A canceled subscription can only update its metadata.",
                    "type": "invalid_request_error",
                }
            }
        if call.method == "DELETE":
            found["status"] = "canceled"
        flag = call.param("cancel_at_period_end")
        if flag is not None:
            found["cancel_at_period_end"] = flag == "true"
        return 200, found


@contextmanager
def stripe_server() -> Iterator[FakeStripe]:
    state = FakeStripe()

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            path, _, query = self.path.partition("?")
            # POST parameters come as a form, GET ones in the query string.
            raw = self.rfile.read(length).decode() if method == "POST" else query
            form = parse_qs(raw, keep_blank_values=True)
            call = StripeCall(method, path, self.headers.get("Idempotency-Key", ""), form)
            if state.delay:
                time.sleep(state.delay)
            self.send_json(*state.answer(call))

    with running_http(Handler, "fake-stripe") as url:
        state.url = url
        yield state


def with_stripe(settings: Settings, fake: FakeStripe, **more: object) -> Settings:
    """``settings`` with the stripe library pointed at ``fake`` (and any ``more`` changes)."""
    return settings.model_copy(
        update={"stripe_api_key": SecretStr("sk_test_burrow"), "stripe_api_base": fake.url, **more}
    )


# --- webhook deliveries -------------------------------------------------------------------------


def sign(payload: bytes, secret: str, *, at: int | None = None) -> str:
    """The header Stripe sends: t=<unix time>,v1=<HMAC-SHA256 of "t.payload">."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def event(event_id: str, type_: str, obj: dict[str, Any], *, created: int | None = None) -> bytes:
    """A Stripe event delivery carrying ``obj``, made at ``created`` (unix seconds)."""
    body = {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()) if created is None else created,
        "type": type_,
        "data": {"object": obj},
    }
    return json.dumps(body).encode()
