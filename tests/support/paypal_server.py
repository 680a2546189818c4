"""A stand-in for PayPal's REST API on loopback: answers as PayPal does, records every call.

PayPal's own server SDK and burrow's httpx calls talk to it (``settings.paypal_api_base``):
the OAuth token (client credentials, Basic auth), Orders v2 (create, get, capture), refunds
of captures (``PayPal-Request-Id`` idempotent: the same id, the same refund), Subscriptions
(create, get, suspend, activate, cancel) and ``verify-webhook-signature``, which says
``SUCCESS`` only for a transmission signature this server made with ``sign``.

Tests move things along as a payer would (``approve``, ``pay_subscription``) and build the
events PayPal would deliver (``event``).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from burrow.control.config import Settings
from tests.support.fake_http import JsonHandler, running_http

CLIENT_ID = "paypal-test-client"
CLIENT_SECRET = "paypal-test-secret"
WEBHOOK_ID = "WH-TEST-0001"
PAYER_ID = "PAYERTEST01"


@dataclass
class PayPalCall:
    method: str
    path: str
    request_id: str
    body: dict[str, Any]


@dataclass
class FakePayPal:
    url: str = ""
    calls: list[PayPalCall] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)  # by request id
    captures: dict[str, str] = field(default_factory=dict)  # capture id -> order id
    sales: dict[str, str] = field(default_factory=dict)  # a subscription's payments -> its id
    answered: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # captures
    signatures: set[str] = field(default_factory=set)  # transmission signatures made here
    failures: int = 0  # answer this many calls (not the token) with a 500 first
    # Make this many refunds, then answer each with a 500 all the same.
    lost_answers: int = 0
    # Payout batches by payout_batch_id; sender_batch_id -> payout_batch_id.
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    sender_batches: dict[str, str] = field(default_factory=dict)
    # Make this many payout batches, then answer each with a 500 all the same.
    lost_payout_answers: int = 0
    # What each subscription's payment takes (the plan personal-monthly's price).
    subscription_price: tuple[str, str] = ("6.99", "USD")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settings(self, base: Settings) -> Settings:
        return base.model_copy(
            update={
                "paypal_client_id": CLIENT_ID,
                "paypal_client_secret": SecretStr(CLIENT_SECRET),
                "paypal_webhook_id": WEBHOOK_ID,
                "paypal_api_base": self.url,
            }
        )

    # --- what a payer does ---------------------------------------------------------------------

    def approve(self, order_id: str, payer_id: str = PAYER_ID) -> None:
        with self.lock:
            order = self.orders[order_id]
            order["status"] = "APPROVED"
            order["payer"] = {"payer_id": payer_id, "email_address": "payer@example.com"}

    def activate(self, subscription_id: str, payer_id: str = PAYER_ID) -> dict[str, Any]:
        """The payer approved the subscription and PayPal took its first payment: the sale."""
        with self.lock:
            sub = self.subscriptions[subscription_id]
            sub["status"] = "ACTIVE"
            sub["subscriber"] = {"payer_id": payer_id}
            return self._sale(sub)

    def renew(self, subscription_id: str) -> dict[str, Any]:
        with self.lock:
            return self._sale(self.subscriptions[subscription_id])

    def _sale(self, sub: dict[str, Any]) -> dict[str, Any]:
        sale_id = f"SALE{uuid.uuid4().hex[:13].upper()}"
        self.sales[sale_id] = sub["id"]
        return {
            "id": sale_id,
            "state": "completed",
            "amount": {"total": sub["_price"], "currency": sub["_currency"]},
            "billing_agreement_id": sub["id"],
            "custom": sub.get("custom_id", ""),
            "create_time": "2026-12-07T03:00:00Z",
        }

    # --- deliveries ----------------------------------------------------------------------------

    def event(self, event_type: str, resource: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"WH-{uuid.uuid4().hex[:16].upper()}",
            "event_version": "1.0",
            "create_time": "2026-12-07T03:00:00Z",
            "resource_type": event_type.split(".")[0].lower(),
            "event_type": event_type,
            "summary": event_type,
            "resource": resource,
        }

    def sign(self, event: dict[str, Any], *, genuine: bool = True) -> dict[str, str]:
        """The transmission headers PayPal sends; only a genuine signature verifies here."""
        signature = base64.b64encode(uuid.uuid4().bytes).decode()
        if genuine:
            with self.lock:
                self.signatures.add(signature)
        return {
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "PAYPAL-CERT-URL": "https://api.paypal.com/v1/notifications/certs/CERT-TEST",
            "PAYPAL-TRANSMISSION-ID": str(uuid.uuid4()),
            "PAYPAL-TRANSMISSION-SIG": signature,
            "PAYPAL-TRANSMISSION-TIME": "2026-12-07T03:00:01Z",
            "Content-Type": "application/json",
        }

    def refund_in_dashboard(self, capture_id: str, value: str) -> dict[str, Any]:
        """The merchant refunds part of a capture in PayPal's own dashboard."""
        call = PayPalCall("POST", "", f"dashboard-{uuid.uuid4().hex}", {})
        call.body = {"amount": {"value": value, "currency_code": "USD"}}
        with self.lock:
            return self._refund(capture_id, call)[1]

    def order_of(self, custom_id: str) -> dict[str, Any]:
        for order in self.orders.values():
            if order["purchase_units"][0].get("custom_id") == custom_id:
                return order
        raise KeyError(custom_id)

    def settle_payouts(self, outcomes: dict[str, str] | None = None) -> None:
        """PayPal pays every pending payout item: SUCCESS, or the outcome named for its
        receiver (UNCLAIMED, RETURNED, FAILED)."""
        outcomes = outcomes or {}
        with self.lock:
            for batch in self.payouts.values():
                for item in batch["items"]:
                    if item["transaction_status"] == "PENDING":
                        receiver = item["payout_item"]["receiver"]
                        item["transaction_status"] = outcomes.get(receiver, "SUCCESS")
                batch["batch_header"]["batch_status"] = "SUCCESS"

    def paid_to(self, receiver: str) -> int:
        """Cents PayPal paid ``receiver`` over all batches (successful items only)."""
        total = 0
        for batch in self.payouts.values():
            for item in batch["items"]:
                if item["payout_item"]["receiver"] == receiver and item["transaction_status"] in (
                    "SUCCESS",
                    "PENDING",
                ):
                    total += int(Decimal(item["payout_item"]["amount"]["value"]) * 100)
        return total

    def made(self, method: str, prefix: str) -> list[PayPalCall]:
        return [c for c in self.calls if c.method == method and c.path.startswith(prefix)]

    # --- the API -------------------------------------------------------------------------------

    def answer(self, call: PayPalCall, authorization: str) -> tuple[int, dict[str, Any] | None]:
        with self.lock:
            self.calls.append(call)
            if call.path == "/v1/oauth2/token":
                return self._token(authorization)
            if authorization.removeprefix("Bearer ") not in self.tokens:
                return 401, {"error": "invalid_token", "error_description": "Token invalid"}
            if self.failures:
                self.failures -= 1
                return 500, _error("INTERNAL_SERVER_ERROR", "An internal server error occurred")
            return self._route(call)

    def _token(self, authorization: str) -> tuple[int, dict[str, Any]]:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if authorization != f"Basic {expected}":
            return 401, {
                "error": "invalid_client",
                "error_description": "Client Authentication failed",
            }
        token = f"A21AA{uuid.uuid4().hex}"
        self.tokens.add(token)
        return 200, {
            "scope": "https://uri.paypal.com/services/payments/refund",
            "access_token": token,
            "token_type": "Bearer",
            "app_id": "APP-TEST",
            "expires_in": 32400,
            "nonce": uuid.uuid4().hex,
        }

    def _route(self, call: PayPalCall) -> tuple[int, dict[str, Any] | None]:
        parts = call.path.strip("/").split("/")
        method = call.method
        if parts == ["v1", "notifications", "verify-webhook-signature"] and method == "POST":
            ok = (
                call.body.get("webhook_id") == WEBHOOK_ID
                and call.body.get("transmission_sig") in self.signatures
                and isinstance(call.body.get("webhook_event"), dict)
            )
            return 200, {"verification_status": "SUCCESS" if ok else "FAILURE"}
        if parts[:3] == ["v2", "checkout", "orders"]:
            if len(parts) == 3 and method == "POST":
                return self._create_order(call)
            order = self.orders.get(parts[3]) if len(parts) > 3 else None
            if order is None:
                return 404, _error("RESOURCE_NOT_FOUND", "The specified resource does not exist.")
            if len(parts) == 4 and method == "GET":
                return 200, _public(order)
            if parts[4:] == ["capture"] and method == "POST":
                # The same PayPal-Request-Id, the same answer (no second capture attempt).
                if call.request_id and call.request_id in self.answered:
                    return self.answered[call.request_id]
                answer = self._capture(order)
                if call.request_id and answer[0] < 300:
                    self.answered[call.request_id] = answer
                return answer
        if parts[:3] == ["v2", "payments", "captures"] and parts[4:] == ["refund"]:
            return self._refund(parts[3], call)
        if parts[:3] == ["v1", "payments", "payouts"]:
            if len(parts) == 3 and method == "POST":
                return self._create_payout(call)
            batch = self.payouts.get(parts[3]) if len(parts) == 4 else None
            if batch is None or method != "GET":
                return 404, _error("RESOURCE_NOT_FOUND", "The specified resource does not exist.")
            return 200, _public(batch)
        if parts[:3] == ["v1", "billing", "subscriptions"]:
            if len(parts) == 3 and method == "POST":
                return self._create_subscription(call)
            sub = self.subscriptions.get(parts[3]) if len(parts) > 3 else None
            if sub is None:
                return 404, _error("RESOURCE_NOT_FOUND", "The specified resource does not exist.")
            if len(parts) == 4 and method == "GET":
                return 200, _public(sub)
            states = {"suspend": "SUSPENDED", "activate": "ACTIVE", "cancel": "CANCELLED"}
            if len(parts) == 5 and parts[4] in states and method == "POST":
                sub["status"] = states[parts[4]]
                return 204, None
        return 404, _error("NOT_FOUND", "Not found")

    def _create_order(self, call: PayPalCall) -> tuple[int, dict[str, Any]]:
        body = call.body
        units = body.get("purchase_units") or []
        if body.get("intent") != "CAPTURE" or not units or "amount" not in units[0]:
            return 400, _error("INVALID_REQUEST", "Request is not well-formed")
        order_id = uuid.uuid4().hex[:17].upper()
        order = {
            "id": order_id,
            "intent": "CAPTURE",
            "status": "PAYER_ACTION_REQUIRED",
            "purchase_units": [dict(u, reference_id="default") for u in units],
            "links": [
                _link(f"{self.url}/v2/checkout/orders/{order_id}", "self"),
                _link(f"{self.url}/checkoutnow?token={order_id}", "payer-action"),
            ],
        }
        self.orders[order_id] = order
        return 200, _public(order)

    def _capture(self, order: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if order["status"] == "COMPLETED":
            return 422, _error("UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED")
        if order["status"] != "APPROVED":
            return 422, _error("UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED")
        unit = order["purchase_units"][0]
        capture_id = f"CAP{uuid.uuid4().hex[:14].upper()}"
        unit["payments"] = {
            "captures": [
                {
                    "id": capture_id,
                    "status": "COMPLETED",
                    "amount": dict(unit["amount"]),
                    "custom_id": unit.get("custom_id"),
                    "invoice_id": unit.get("invoice_id"),
                    "final_capture": True,
                    "supplementary_data": {"related_ids": {"order_id": order["id"]}},
                }
            ],
            "refunds": [],
        }
        order["status"] = "COMPLETED"
        self.captures[capture_id] = order["id"]
        return 201, _public(order)

    def _refund(self, capture_id: str, call: PayPalCall) -> tuple[int, dict[str, Any]]:
        if capture_id in self.sales:
            # A subscription's payment (its transaction id) is refunded as a capture is.
            if call.request_id in self.refunds:
                return 200, dict(self.refunds[call.request_id])
            refund = {
                "id": f"REF{uuid.uuid4().hex[:14].upper()}",
                "status": "COMPLETED",
                "amount": call.body.get("amount"),
                "custom_id": call.body.get("custom_id"),
            }
            self.refunds[call.request_id] = refund
            if self.lost_answers:
                self.lost_answers -= 1
                return 500, _error("INTERNAL_SERVER_ERROR", "An internal server error occurred")
            return 201, dict(refund)
        order = self.orders.get(self.captures.get(capture_id, ""))
        if order is None:
            return 404, _error("RESOURCE_NOT_FOUND", "The specified resource does not exist.")
        if call.request_id in self.refunds:
            return 200, dict(self.refunds[call.request_id])
        unit = order["purchase_units"][0]
        amount = call.body.get("amount") or unit["amount"]
        refund = {
            "id": f"REF{uuid.uuid4().hex[:14].upper()}",
            "status": "COMPLETED",
            "amount": amount,
            "custom_id": call.body.get("custom_id"),
            "invoice_id": call.body.get("invoice_id"),
            "links": [_link(f"{self.url}/v2/payments/captures/{capture_id}", "up")],
        }
        self.refunds[call.request_id] = refund
        unit["payments"]["refunds"].append(refund)
        if self.lost_answers:
            self.lost_answers -= 1
            return 500, _error("INTERNAL_SERVER_ERROR", "An internal server error occurred")
        return 201, dict(refund)

    def _create_payout(self, call: PayPalCall) -> tuple[int, dict[str, Any]]:
        header = call.body.get("sender_batch_header") or {}
        sender_batch_id = header.get("sender_batch_id")
        items = call.body.get("items") or []
        if not sender_batch_id or not items:
            return 400, _error("VALIDATION_ERROR", "Invalid request - see details")
        known = self.sender_batches.get(sender_batch_id)
        if known is not None:
            # PayPal pays one sender_batch_id once, and links the original batch.
            answer = _error(
                "USER_BUSINESS_ERROR",
                f"Batch with given sender_batch_id already exists: {sender_batch_id}",
            )
            answer["links"] = [_link(f"{self.url}/v1/payments/payouts/{known}", "self")]
            return 400, answer
        batch_id = uuid.uuid4().hex[:13].upper()
        batch = {
            "batch_header": {
                "payout_batch_id": batch_id,
                "batch_status": "PENDING",
                "sender_batch_header": dict(header),
            },
            "items": [
                {
                    "payout_item_id": uuid.uuid4().hex[:13].upper(),
                    "transaction_status": "PENDING",
                    "payout_batch_id": batch_id,
                    "payout_item": {
                        "recipient_type": item.get("recipient_type", "EMAIL"),
                        "amount": dict(item["amount"]),
                        "receiver": item["receiver"],
                        "sender_item_id": item.get("sender_item_id"),
                    },
                }
                for item in items
            ],
            "links": [_link(f"{self.url}/v1/payments/payouts/{batch_id}", "self")],
        }
        self.payouts[batch_id] = batch
        self.sender_batches[sender_batch_id] = batch_id
        if self.lost_payout_answers:
            self.lost_payout_answers -= 1
            return 500, _error("INTERNAL_SERVER_ERROR", "An internal server error occurred")
        answer = {"batch_header": batch["batch_header"], "links": batch["links"]}
        return 201, _public(answer)

    def _create_subscription(self, call: PayPalCall) -> tuple[int, dict[str, Any]]:
        plan_id = call.body.get("plan_id")
        if not isinstance(plan_id, str) or not plan_id.startswith("P-"):
            return 422, _error("UNPROCESSABLE_ENTITY", "INVALID_PLAN")
        sub_id = f"I-{uuid.uuid4().hex[:12].upper()}"
        sub = {
            "id": sub_id,
            "plan_id": plan_id,
            "status": "APPROVAL_PENDING",
            "custom_id": call.body.get("custom_id"),
            "billing_info": {"next_billing_time": "2027-01-07T03:00:00Z"},
            "links": [
                _link(f"{self.url}/webapps/billing/subscriptions?ba_token=BA-{sub_id}", "approve"),
                _link(f"{self.url}/v1/billing/subscriptions/{sub_id}", "self"),
            ],
            "_price": self.subscription_price[0],
            "_currency": self.subscription_price[1],
        }
        self.subscriptions[sub_id] = sub
        return 201, _public(sub)


def _link(href: str, rel: str) -> dict[str, str]:
    return {"href": href, "rel": rel, "method": "GET"}


def _public(found: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in found.items() if not k.startswith("_")}))


def _error(name: str, message: str) -> dict[str, Any]:
    return {"name": name, "message": message, "debug_id": uuid.uuid4().hex[:13]}


@contextmanager
def running_paypal() -> Iterator[FakePayPal]:
    state = FakePayPal()

    class Handler(JsonHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode() if length else ""
            try:
                body = json.loads(raw) if raw and raw.lstrip().startswith("{") else {}
            except ValueError:
                body = {}
            call = PayPalCall(
                self.command,
                urlsplit(self.path).path,
                self.headers.get("PayPal-Request-Id", ""),
                body,
            )
            status, answer = state.answer(call, self.headers.get("Authorization", ""))
            if answer is None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_json(status, answer)

        do_GET = _handle
        do_POST = _handle

    with running_http(Handler, "fake-paypal") as url:
        state.url = url
        yield state
