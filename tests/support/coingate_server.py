"""A stand-in for CoinGate's API v2 on loopback: answers as CoinGate does, records every call.

``POST /v2/orders`` (a form) makes an order in state ``new`` with a ``payment_url``;
``GET /v2/orders/{id}`` answers it as it stands. Tests move an order along with ``set_status``,
as a shopper paying would, then post the callback CoinGate would send.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.support.fake_http import JsonHandler, running_http


@dataclass
class Call:
    method: str
    path: str
    authorization: str
    form: dict[str, str]


@dataclass
class FakeCoinGate:
    url: str = ""
    api_key: str = ""
    calls: list[Call] = field(default_factory=list)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    failures: int = 0  # answer this many calls with a 500 first
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_status(self, coingate_id: int, status: str, **changes: Any) -> None:
        with self.lock:
            self.orders[coingate_id].update(status=status, **changes)

    def created(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path == "/v2/orders"]

    def callback_form(self, coingate_id: int, **overrides: str) -> dict[str, str]:
        """The form CoinGate posts to the callback URL for this order, as it stands."""
        with self.lock:
            order = dict(self.orders[coingate_id])
        form = {
            "id": str(order["id"]),
            "order_id": order["order_id"],
            "status": order["status"],
            "price_amount": order["price_amount"],
            "price_currency": order["price_currency"],
            "receive_currency": order["receive_currency"],
            "receive_amount": order["receive_amount"],
            "pay_amount": "0.000123",
            "pay_currency": "BTC",
            "underpaid_amount": "0",
            "overpaid_amount": "0",
            "is_refundable": "false",
            "created_at": order["created_at"],
            "token": order["token"],
        }
        form.update(overrides)
        return form

    # --- the API ------------------------------------------------------------------------------

    def answer(self, call: Call) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append(call)
            if call.authorization != f"Token {self.api_key}":
                return 401, {"message": "Unauthorized", "reason": "BadAuthToken"}
            if self.failures:
                self.failures -= 1
                return 500, {"message": "Internal error", "reason": "InternalServerError"}
            if call.method == "POST" and call.path == "/v2/orders":
                return self._create(call.form)
            prefix = "/v2/orders/"
            if call.method == "GET" and call.path.startswith(prefix):
                tail = call.path[len(prefix) :]
                order = self.orders.get(int(tail)) if tail.isdigit() else None
                if order is None:
                    return 404, {"message": "Order not found", "reason": "OrderNotFound"}
                return 200, dict(order)
            return 404, {"message": "Not found", "reason": "NotFound"}

    def _create(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        missing = [k for k in ("price_amount", "price_currency", "title") if not form.get(k)]
        if missing:
            return 422, {"message": "Order is not valid", "reason": "OrderIsNotValid"}
        coingate_id = 1000 + len(self.orders) + 1
        order = {
            "id": coingate_id,
            "status": "new",
            "do_not_convert": form.get("receive_currency") == "DO_NOT_CONVERT",
            "price_currency": form["price_currency"],
            # CoinGate echoes the price as a decimal string of its own making.
            "price_amount": form["price_amount"],
            "receive_currency": form.get("receive_currency", ""),
            "receive_amount": "",
            "created_at": "2026-11-22T04:00:00+00:00",
            "order_id": form.get("order_id", ""),
            "payment_url": f"{self.url}/invoice/{coingate_id}",
            "underpaid_amount": "0",
            "overpaid_amount": "0",
            "is_refundable": False,
            "token": form.get("token", ""),
        }
        self.orders[coingate_id] = order
        return 200, dict(order)


@contextmanager
def running_coingate(api_key: str) -> Iterator[FakeCoinGate]:
    state = FakeCoinGate(api_key=api_key)

    class Handler(JsonHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode() if length else ""
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            call = Call(self.command, self.path, self.headers.get("Authorization", ""), form)
            self.send_json(*state.answer(call))

        do_GET = _handle
        do_POST = _handle

    with running_http(Handler, "fake-coingate") as url:
        state.url = url
        yield state
