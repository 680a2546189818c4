"""Every admin action of the API leaves exactly one row in the audit trail (who, what, why);
customers' own activity leaves none. Read back through ``GET /api/v1/admin/audit``."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import func, select

from burrow.control.db import unit_of_work
from burrow.control.models import AdminAction
from burrow.control.runtime import Runtime
from tests.support.factories import DEFAULT_PASSWORD, create_account, create_session_token

AMS = {"name": "ams-1", "country": "NL", "city": "Amsterdam", "endpoint_host": "vpn.example.net"}


async def _caller(runtime: Runtime, *, admin: bool = False) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        token = await create_session_token(session, account)
        return account.id, {"Authorization": f"Bearer {token}"}


async def _rows(runtime: Runtime) -> list[AdminAction]:
    async with unit_of_work(runtime.sessionmaker) as session:
        result = await session.execute(select(AdminAction).order_by(AdminAction.id))
        return list(result.scalars().all())


class Trail:
    """Counts the rows before an action and checks the one row it added."""

    def __init__(self, runtime: Runtime, admin_id: int) -> None:
        self.runtime = runtime
        self.admin_id = admin_id
        self.seen = 0

    async def one(
        self, response: httpx.Response, action: str, target: tuple[str, object], reason: str = ""
    ) -> dict[str, Any]:
        assert response.status_code in (200, 201), response.text
        rows = await _rows(self.runtime)
        added = rows[self.seen :]
        assert len(added) == 1, [r.action for r in added]
        self.seen = len(rows)
        row = added[0]
        assert row.admin_id == self.admin_id
        assert row.action == action
        assert (row.target_type, row.target_id) == (target[0], str(target[1]))
        assert row.reason == reason
        assert row.at is not None
        detail: dict[str, Any] = json.loads(row.detail)
        return detail

    async def none(self) -> None:
        assert len(await _rows(self.runtime)) == self.seen


async def test_every_admin_operation_leaves_one_row(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin_id, admin = await _caller(runtime, admin=True)
    customer_id, customer = await _caller(runtime)
    trail = Trail(runtime, admin_id)
    account_url = f"/api/v1/admin/accounts/{customer_id}"

    # Accounts.
    response = await client.post(
        f"{account_url}/suspend", json={"reason": "Chargeback"}, headers=admin
    )
    await trail.one(response, "account.suspend", ("account", customer_id), "Chargeback")
    response = await client.post(
        f"{account_url}/unsuspend", json={"reason": "Settled"}, headers=admin
    )
    await trail.one(response, "account.unsuspend", ("account", customer_id), "Settled")
    # A refused change leaves no row: the row commits with the change or not at all.
    refused = await client.post(f"{account_url}/unsuspend", headers=admin)
    assert refused.status_code == 409
    await trail.none()

    # Time and money.
    response = await client.post(
        f"{account_url}/grant",
        json={"plan_code": "personal-monthly", "days": 7, "reason": "Outage in March"},
        headers=admin,
    )
    detail = await trail.one(
        response, "subscription.grant", ("account", customer_id), "Outage in March"
    )
    assert detail["plan_code"] == "personal-monthly"
    assert detail["days"] == 7
    response = await client.post(
        f"{account_url}/payments",
        json={
            "plan_code": "personal-monthly",
            "amount_minor": 699,
            "currency": "USD",
            "method": "manual",
            "reference": "bank 42",
        },
        headers=admin,
    )
    detail = await trail.one(response, "payment.record_manual", ("account", customer_id))
    order_id = response.json()["order"]["id"]
    assert detail["order_id"] == order_id
    assert (detail["amount_minor"], detail["currency"], detail["method"]) == (699, "USD", "manual")

    # Refunds: the strict policy queues a request with a reason for a person.
    refunds = []
    for n in range(3):
        if n:
            paid = await client.post(
                f"{account_url}/payments",
                json={
                    "plan_code": "personal-monthly",
                    "amount_minor": 699,
                    "currency": "USD",
                    "method": "card",
                    "reference": f"card {n}",
                },
                headers=admin,
            )
            await trail.one(paid, "payment.record_manual", ("account", customer_id))
            order_id = paid.json()["order"]["id"]
        requested = await client.post(
            f"/api/v1/billing/orders/{order_id}/refund",
            json={"reason": "It does not work with my TV"},
            headers=customer,
        )
        assert requested.status_code == 201, requested.text
        await trail.none()  # the customer's own request is not recorded
        assert requested.json()["status"] == "queued"
        refunds.append(requested.json()["id"])
    response = await client.post(
        f"/api/v1/admin/refunds/{refunds[0]}/approve",
        json={"amount_minor": 300, "reason": "Half, goodwill"},
        headers=admin,
    )
    detail = await trail.one(
        response, "refund.approve", ("refund_request", refunds[0]), "Half, goodwill"
    )
    assert detail == {"amount_minor": 300, "currency": "USD"}
    response = await client.post(
        f"/api/v1/admin/refunds/{refunds[1]}/findings",
        json={"unsupported_device": False},
        headers=admin,
    )
    detail = await trail.one(response, "refund.finding", ("refund_request", refunds[1]))
    assert detail == {"unsupported_device": False, "status": "queued"}
    response = await client.post(
        f"/api/v1/admin/refunds/{refunds[1]}/refuse",
        json={"reason": "Works as advertised"},
        headers=admin,
    )
    await trail.one(
        response, "refund.refuse", ("refund_request", refunds[1]), "Works as advertised"
    )

    # Nodes.
    response = await client.post("/api/v1/admin/nodes", json=AMS, headers=admin)
    node_id = response.json()["node"]["id"]
    detail = await trail.one(response, "node.create", ("node", node_id))
    assert detail["name"] == "ams-1"
    response = await client.patch(
        f"/api/v1/admin/nodes/{node_id}", json={"capacity": 50}, headers=admin
    )
    detail = await trail.one(response, "node.update", ("node", node_id))
    assert detail == {"before": {"capacity": 1000}, "capacity": 50}
    response = await client.post(f"/api/v1/admin/nodes/{node_id}/enrollment-token", headers=admin)
    detail = await trail.one(response, "node.enrollment_token", ("node", node_id))
    assert response.json()["token"] not in json.dumps(detail)
    response = await client.post(f"/api/v1/admin/nodes/{node_id}/retire", headers=admin)
    await trail.one(response, "node.retire", ("node", node_id))

    # Termination, with the clause.
    response = await client.post(
        f"{account_url}/terminate",
        json={"reason": "Spam from our addresses", "clause": "Prohibited activities"},
        headers=admin,
    )
    detail = await trail.one(
        response, "account.terminate", ("account", customer_id), "Spam from our addresses"
    )
    assert detail == {"clause": "Prohibited activities", "terms_version": "2026-11"}

    # Reading leaves nothing.
    await client.get("/api/v1/admin/accounts", headers=admin)
    await client.get(account_url, headers=admin)
    await client.get("/api/v1/admin/nodes", headers=admin)
    await client.get("/api/v1/admin/refunds", headers=admin)
    await client.get("/api/v1/admin/audit", headers=admin)
    await trail.none()


async def test_customer_activity_is_never_recorded(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    signup = await client.post(
        "/api/v1/accounts",
        json={
            "email": "dora@example.com",
            "password": DEFAULT_PASSWORD,
            "age_attestation": "adult",
            "accept_terms_version": runtime.policy.terms.version,
        },
    )
    assert signup.status_code == 202, signup.text
    login = await client.post(
        "/api/v1/sessions", json={"email": "dora@example.com", "password": DEFAULT_PASSWORD}
    )
    assert login.status_code == 201
    me = {"Authorization": f"Bearer {login.json()['token']}"}
    customer_id, other = await _caller(runtime)
    for method, path, body in [
        ("GET", "/api/v1/accounts/me", None),
        ("POST", "/api/v1/subscriptions/trial", None),
        ("POST", "/api/v1/subscriptions/current/cancel", None),
        ("POST", "/api/v1/subscriptions/current/resume", None),
        ("GET", "/api/v1/billing/orders", None),
        ("GET", "/api/v1/refunds", None),
        # A customer knocking on admin doors is refused and leaves nothing either.
        ("POST", f"/api/v1/admin/accounts/{customer_id}/suspend", {"reason": "x"}),
    ]:
        await client.request(method, path, json=body, headers=me)
        await client.request(method, path, json=body, headers=other)
    assert await _rows(runtime) == []


async def test_audit_listing_filters_and_pages(client: httpx.AsyncClient, runtime: Runtime) -> None:
    first_id, first = await _caller(runtime, admin=True)
    second_id, second = await _caller(runtime, admin=True)
    customer_id, customer = await _caller(runtime)
    url = f"/api/v1/admin/accounts/{customer_id}"
    assert (await client.post(f"{url}/suspend", json={"reason": "a"}, headers=first)).is_success
    assert (await client.post(f"{url}/unsuspend", headers=second)).is_success
    node = await client.post("/api/v1/admin/nodes", json=AMS, headers=second)
    node_id = node.json()["node"]["id"]

    listed = await client.get("/api/v1/admin/audit", headers=first)
    assert listed.status_code == 200
    page = listed.json()
    assert page["total"] == 3
    # Newest first, with who did it.
    assert [i["action"] for i in page["items"]] == [
        "node.create",
        "account.unsuspend",
        "account.suspend",
    ]
    assert page["items"][2]["admin_id"] == first_id
    assert page["items"][2]["admin_email"].endswith("@example.com")
    assert page["items"][2]["reason"] == "a"

    async def actions(**params: object) -> list[str]:
        response = await client.get("/api/v1/admin/audit", params=params, headers=first)
        assert response.status_code == 200, response.text
        return [i["action"] for i in response.json()["items"]]

    assert await actions(admin=second_id) == ["node.create", "account.unsuspend"]
    assert await actions(action="account") == ["account.unsuspend", "account.suspend"]
    assert await actions(action="account.suspend") == ["account.suspend"]
    assert await actions(action="acc") == []
    assert await actions(target_type="node", target_id=str(node_id)) == ["node.create"]
    assert await actions(target_type="account", target_id=str(customer_id)) == [
        "account.unsuspend",
        "account.suspend",
    ]
    assert await actions(limit=1, offset=1) == ["account.unsuspend"]
    for bad in [{"admin": 0}, {"limit": 0}, {"action": "a\x00"}, {"admin": 2**70}]:
        response = await client.get("/api/v1/admin/audit", params=bad, headers=first)
        assert response.status_code == 422, bad
    assert (await client.get("/api/v1/admin/audit", headers=customer)).status_code == 403
    async with unit_of_work(runtime.sessionmaker) as session:
        count = await session.scalar(select(func.count()).select_from(AdminAction))
    assert count == 3


async def test_terms_clauses_listed_for_the_admin(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, admin = await _caller(runtime, admin=True)
    response = await client.get("/api/v1/admin/terms-clauses", headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert body["terms_version"] == runtime.policy.terms.version
    assert "Prohibited activities" in body["clauses"]
    assert "Prohibited activities: distributing malware" in body["clauses"]
