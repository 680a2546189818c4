"""Refund endpoints: the customer's request and history, the admin queue and decisions."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import update

from burrow.control.db import unit_of_work
from burrow.control.models import RefundRequest, UsageCounter, utcnow
from burrow.control.runtime import Runtime
from tests.support.factories import create_account, create_session_token

PROBLEM = "application/problem+json"


async def _caller(runtime: Runtime, *, admin: bool = False) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        token = await create_session_token(session, account)
        return account.id, {"Authorization": f"Bearer {token}"}


async def _order(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    account_id: int,
    reference: str,
    *,
    plan_code: str = "personal-monthly",
    amount: int = 1199,
) -> int:
    response = await client.post(
        f"/api/v1/admin/accounts/{account_id}/payments",
        json={
            "plan_code": plan_code,
            "amount_minor": amount,
            "currency": "USD",
            "method": "card",
            "reference": reference,
        },
        headers=admin,
    )
    assert response.status_code == 201, response.text
    order_id: int = response.json()["order"]["id"]
    return order_id


async def test_refund_endpoints_need_sign_in(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/api/v1/billing/orders/1/refund"),
        ("GET", "/api/v1/refunds"),
        ("GET", "/api/v1/admin/refunds"),
        ("POST", "/api/v1/admin/refunds/1/approve"),
        ("POST", "/api/v1/admin/refunds/1/refuse"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == PROBLEM


async def test_metered_request_approved_with_its_rules(
    metered_client: httpx.AsyncClient, metered: Runtime
) -> None:
    _, admin = await _caller(metered, admin=True)
    customer_id, customer = await _caller(metered)
    _, stranger = await _caller(metered)
    order_id = await _order(metered_client, admin, customer_id, "e-1")

    url = f"/api/v1/billing/orders/{order_id}/refund"
    assert (await metered_client.post(url, json={"reason": "x"}, headers=stranger)).status_code == (
        404
    )
    missing = await metered_client.post(
        "/api/v1/billing/orders/999999/refund", json={"reason": "x"}, headers=customer
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM

    response = await metered_client.post(url, json={"reason": "Too slow."}, headers=customer)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "executed"
    assert body["amount_minor"] == 1199
    assert body["currency"] == "USD"
    window = next(o for o in body["outcomes"] if o["rule"] == "window_days")
    assert window["passed"] is True
    # Seconds after the order is the first day after it.
    assert window["message"] == (
        "Requested 1 day after the order; refunds are possible within 7 days."
    )

    listed = await metered_client.get("/api/v1/refunds", headers=customer)
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()] == [body["id"]]
    assert (await metered_client.get("/api/v1/refunds", headers=stranger)).json() == []

    twice = await metered_client.post(url, json={"reason": "again"}, headers=customer)
    assert twice.status_code == 409
    orders = (await metered_client.get("/api/v1/billing/orders", headers=customer)).json()
    assert orders[0]["status"] == "refunded"


async def test_metered_refusal_names_the_rules(
    metered_client: httpx.AsyncClient, metered: Runtime
) -> None:
    _, admin = await _caller(metered, admin=True)
    customer_id, customer = await _caller(metered)
    order_id = await _order(metered_client, admin, customer_id, "e-2")
    response = await metered_client.post(
        f"/api/v1/billing/orders/{order_id}/refund", json={}, headers=customer
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "refused"
    assert "reason_required" in body["decision_reason"]
    failed = [o["rule"] for o in body["outcomes"] if not o["passed"]]
    assert failed == ["reason_required"]


async def test_admin_queue_overdue_first_then_decisions(
    metered_client: httpx.AsyncClient, metered: Runtime
) -> None:
    _, admin = await _caller(metered, admin=True)
    ids = []
    for n in range(2):
        customer_id, customer = await _caller(metered)
        order_id = await _order(
            metered_client, admin, customer_id, f"q-{n}", plan_code="personal-yearly", amount=7199
        )
        # Past 1 GB on a yearly order: a partial refund, decided by a person.
        async with unit_of_work(metered.sessionmaker) as session:
            session.add(UsageCounter(account_id=customer_id, bytes_total=2_000_000_000))
        response = await metered_client.post(
            f"/api/v1/billing/orders/{order_id}/refund",
            json={"reason": "Used it a bit."},
            headers=customer,
        )
        assert response.status_code == 201
        assert response.json()["status"] == "queued"
        assert 0 < response.json()["amount_minor"] < 7199
        ids.append(response.json()["id"])
    # The second request is made overdue.
    async with unit_of_work(metered.sessionmaker) as session:
        await session.execute(
            update(RefundRequest)
            .where(RefundRequest.id == ids[1])
            .values(due_at=utcnow() - timedelta(hours=1))
        )

    summary = await metered_client.get("/api/v1/admin/refunds/summary", headers=admin)
    assert summary.status_code == 200
    assert summary.json() == {"queued": 2, "overdue": 1}
    queue = await metered_client.get("/api/v1/admin/refunds", headers=admin)
    assert queue.status_code == 200
    rows = queue.json()
    assert [r["id"] for r in rows] == [ids[1], ids[0]]
    assert rows[0]["overdue"] is True
    assert rows[0]["seconds_left"] < 0
    assert rows[1]["overdue"] is False
    assert 0 < rows[1]["seconds_left"] <= 24 * 3600

    forbidden = await metered_client.get(
        "/api/v1/admin/refunds", headers=(await _caller(metered))[1]
    )
    assert forbidden.status_code == 403

    too_much = await metered_client.post(
        f"/api/v1/admin/refunds/{ids[0]}/approve",
        json={"amount_minor": 999_999, "reason": "x"},
        headers=admin,
    )
    assert too_much.status_code == 422
    assert "At most 71.99 USD (7199 in minor units)" in too_much.json()["detail"]
    for bad in [{"amount_minor": 1.5, "reason": "x"}, {"reason": ""}, {"amount_minor": 5}]:
        response = await metered_client.post(
            f"/api/v1/admin/refunds/{ids[0]}/approve", json=bad, headers=admin
        )
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == PROBLEM

    approved = await metered_client.post(
        f"/api/v1/admin/refunds/{ids[0]}/approve",
        json={"amount_minor": 5000, "reason": "Pro rata, usage charged."},
        headers=admin,
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    assert approved.json()["amount_minor"] == 5000
    refused = await metered_client.post(
        f"/api/v1/admin/refunds/{ids[1]}/refuse", json={"reason": "Used too much."}, headers=admin
    )
    assert refused.status_code == 200
    assert refused.json()["status"] == "refused"
    again = await metered_client.post(
        f"/api/v1/admin/refunds/{ids[1]}/refuse", json={"reason": "again"}, headers=admin
    )
    assert again.status_code == 409
    unknown = await metered_client.post(
        "/api/v1/admin/refunds/999999/refuse", json={"reason": "x"}, headers=admin
    )
    assert unknown.status_code == 404
    assert (await metered_client.get("/api/v1/admin/refunds", headers=admin)).json() == []


async def test_strict_finding_endpoint(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, admin = await _caller(runtime, admin=True)
    customer_id, customer = await _caller(runtime)
    order_id = await _order(client, admin, customer_id, "f-1", amount=699)
    created = await client.post(
        f"/api/v1/billing/orders/{order_id}/refund", json={"reason": "Netflix"}, headers=customer
    )
    assert created.json()["status"] == "queued"
    found = await client.post(
        f"/api/v1/admin/refunds/{created.json()['id']}/findings",
        json={"unsupported_device": True},
        headers=admin,
    )
    assert found.status_code == 200, found.text
    assert found.json()["status"] == "refused"
    mine = (await client.get("/api/v1/refunds", headers=customer)).json()[0]
    device = next(o for o in mine["outcomes"] if o["rule"] == "unsupported_device_excludes")
    assert device["passed"] is False
    assert "unsupported device" in device["message"]
