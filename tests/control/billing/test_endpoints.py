"""Billing endpoints: orders, billing details and the admin's manual payment, over HTTP."""

from __future__ import annotations

import httpx

from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service
from tests.support.factories import create_account, create_session_token

PROBLEM = "application/problem+json"


async def _caller(runtime: Runtime, *, admin: bool = False) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        token = await create_session_token(session, account)
        return account.id, {"Authorization": f"Bearer {token}"}


def _payment(reference: str, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "plan_code": "personal-monthly",
        "amount_minor": 699,
        "currency": "USD",
        "reference": reference,
    }
    body.update(changes)
    return body


async def test_billing_needs_sign_in(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/v1/billing/orders"),
        ("GET", "/api/v1/billing/details"),
        ("PUT", "/api/v1/billing/details"),
        ("POST", "/api/v1/admin/accounts/1/payments"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == PROBLEM


async def test_manual_payment_activates_access_and_lists_orders(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, admin = await _caller(runtime, admin=True)
    customer_id, customer = await _caller(runtime)
    other_id, other = await _caller(runtime)

    url = f"/api/v1/admin/accounts/{customer_id}/payments"
    created = await client.post(url, json=_payment("bank-001"), headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["order"]["kind"] == "first"
    assert body["order"]["payment_method"] == "manual"
    assert body["order"]["payments"][0]["provider_payment_id"] == "bank-001"
    assert "Granted 1 month of" in body["message"]
    async with unit_of_work(runtime.sessionmaker) as session:
        plan = await subscription_service.access_plan(session, customer_id)
        assert plan is not None
        assert plan.code == "personal-monthly"

    renewal = await client.post(url, json=_payment("store-7", method="app_store"), headers=admin)
    assert renewal.status_code == 201, renewal.text
    assert renewal.json()["order"]["kind"] == "renewal"

    orders = await client.get("/api/v1/billing/orders", headers=customer)
    assert orders.status_code == 200
    listed = orders.json()
    assert [o["kind"] for o in listed] == ["renewal", "first"]
    assert listed[0]["payment_method"] == "app_store"
    assert listed[1]["amount_minor"] == 699
    assert listed[1]["currency"] == "USD"

    assert (await client.get("/api/v1/billing/orders", headers=other)).json() == []
    assert other_id != customer_id

    again = await client.post(url, json=_payment("bank-001"), headers=admin)
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM


async def test_manual_payment_bad_input(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, admin = await _caller(runtime, admin=True)
    customer_id, customer = await _caller(runtime)
    url = f"/api/v1/admin/accounts/{customer_id}/payments"
    for body in [
        _payment("r1", amount_minor=6.99),
        _payment("r2", amount_minor="699"),
        _payment("r3", amount_minor=0),
        _payment("r4", currency="usd"),
        _payment("r5", method="cheque"),
        _payment(""),
        {**_payment("r6"), "extra": 1},
    ]:
        response = await client.post(url, json=body, headers=admin)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == PROBLEM
    wrong = await client.post(url, json=_payment("r7", currency="EUR"), headers=admin)
    assert wrong.status_code == 422
    assert "priced in USD" in wrong.json()["detail"]
    unknown_plan = await client.post(url, json=_payment("r8", plan_code="nope"), headers=admin)
    assert unknown_plan.status_code in (404, 422)
    assert unknown_plan.headers["content-type"] == PROBLEM
    missing = await client.post(
        "/api/v1/admin/accounts/999999/payments", json=_payment("r9"), headers=admin
    )
    assert missing.status_code == 404
    forbidden = await client.post(url, json=_payment("r10"), headers=customer)
    assert forbidden.status_code == 403


async def test_billing_details(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, admin = await _caller(runtime, admin=True)
    customer_id, customer = await _caller(runtime)
    details = {"country": "nl", "city": "Utrecht", "postal_code": "3511 AB"}
    assert (await client.get("/api/v1/billing/details", headers=customer)).status_code == 404
    early = await client.put("/api/v1/billing/details", json=details, headers=customer)
    assert early.status_code == 403
    assert "only for paid accounts" in early.json()["detail"]

    url = f"/api/v1/admin/accounts/{customer_id}/payments"
    assert (await client.post(url, json=_payment("d-1"), headers=admin)).status_code == 201
    saved = await client.put(
        "/api/v1/billing/details",
        json={**details, "card_last4": "4242", "name_or_company": "Example B.V."},
        headers=customer,
    )
    assert saved.status_code == 200, saved.text
    got = (await client.get("/api/v1/billing/details", headers=customer)).json()
    assert got["country"] == "NL"
    assert got["card_last4"] == "4242"
    assert got["name_or_company"] == "Example B.V."
    for bad in [
        {**details, "country": "NLD"},
        {**details, "card_last4": "42a2"},
        {**details, "city": ""},
        {**details, "city": "a\x00b"},
    ]:
        response = await client.put("/api/v1/billing/details", json=bad, headers=customer)
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == PROBLEM
