"""The admin account API: search, show, suspend, unsuspend, terminate; who may call it."""

from __future__ import annotations

import httpx
import pytest

from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state
from burrow.control.models import Account, AccountStatus
from burrow.control.runtime import Runtime
from tests.support.factories import DEFAULT_PASSWORD, create_account, create_session_token

PROBLEM = "application/problem+json"


async def _account(runtime: Runtime, **kwargs: object) -> Account:
    async with unit_of_work(runtime.sessionmaker) as s:
        return await create_account(s, **kwargs)  # type: ignore[arg-type]


async def _auth(runtime: Runtime, account: Account) -> dict[str, str]:
    async with unit_of_work(runtime.sessionmaker) as s:
        return {"Authorization": f"Bearer {await create_session_token(s, account)}"}


@pytest.fixture
async def admin(runtime: Runtime) -> dict[str, str]:
    return await _auth(runtime, await _account(runtime, admin=True, email="root@example.com"))


@pytest.fixture
def refreshed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    async def record(_session: object, _runtime: object, account_id: int) -> None:
        calls.append(account_id)

    monkeypatch.setattr(desired_state, "refresh_account", record)
    return calls


async def test_search_by_query_and_status(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    carol = await _account(runtime, email="carol@example.com")
    await _account(runtime, email="caroline@example.com", status=AccountStatus.suspended)
    await _account(runtime, email="dave@example.com")

    found = await client.get("/api/v1/admin/accounts", params={"q": "CAROL"}, headers=admin)
    assert found.status_code == 200, found.text
    page = found.json()
    assert page["total"] == 2
    assert [a["email"] for a in page["items"]] == ["carol@example.com", "caroline@example.com"]
    assert "password_hash" not in found.text

    suspended = await client.get(
        "/api/v1/admin/accounts", params={"status": "suspended"}, headers=admin
    )
    assert [a["email"] for a in suspended.json()["items"]] == ["caroline@example.com"]

    everyone = await client.get("/api/v1/admin/accounts", params={"limit": 2}, headers=admin)
    assert everyone.json()["total"] == 4  # the admin too
    assert len(everyone.json()["items"]) == 2

    one = await client.get(f"/api/v1/admin/accounts/{carol.id}", headers=admin)
    assert one.json()["email"] == "carol@example.com"
    missing = await client.get("/api/v1/admin/accounts/999999", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    huge = await client.get(f"/api/v1/admin/accounts/{2**70}", headers=admin)
    assert huge.status_code == 422
    bad_status = await client.get(
        "/api/v1/admin/accounts", params={"status": "sleeping"}, headers=admin
    )
    assert bad_status.status_code == 422


async def test_suspend_then_unsuspend(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], refreshed: list[int]
) -> None:
    customer = await _account(runtime)
    customer_auth = await _auth(runtime, customer)

    no_reason = await client.post(
        f"/api/v1/admin/accounts/{customer.id}/suspend", json={}, headers=admin
    )
    assert no_reason.status_code == 422
    response = await client.post(
        f"/api/v1/admin/accounts/{customer.id}/suspend",
        json={"reason": "Payment disputed"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "suspended"
    assert refreshed == [customer.id]

    # The customer still signs in and reads why.
    me = await client.get("/api/v1/accounts/me", headers=customer_auth)
    assert me.json()["status"] == "suspended"
    assert me.json()["status_reason"] == "Payment disputed"
    login = await client.post(
        "/api/v1/sessions", json={"email": customer.email, "password": DEFAULT_PASSWORD}
    )
    assert login.status_code == 201

    back = await client.post(f"/api/v1/admin/accounts/{customer.id}/unsuspend", headers=admin)
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "active"
    again = await client.post(f"/api/v1/admin/accounts/{customer.id}/unsuspend", headers=admin)
    assert again.status_code == 409
    assert refreshed == [customer.id, customer.id]


async def test_terminate_ends_sessions(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], refreshed: list[int]
) -> None:
    customer = await _account(runtime)
    customer_auth = await _auth(runtime, customer)
    missing_reason = await client.post(
        f"/api/v1/admin/accounts/{customer.id}/terminate", json={"reason": ""}, headers=admin
    )
    assert missing_reason.status_code == 422
    no_clause = await client.post(
        f"/api/v1/admin/accounts/{customer.id}/terminate",
        json={"reason": "Abuse report"},
        headers=admin,
    )
    assert no_clause.status_code == 422
    unknown_clause = await client.post(
        f"/api/v1/admin/accounts/{customer.id}/terminate",
        json={"reason": "Abuse report", "clause": "Being rude"},
        headers=admin,
    )
    assert unknown_clause.status_code == 422
    assert unknown_clause.json()["field"] == "clause"
    assert (
        "Prohibited activities: spam or unsolicited bulk messaging"
        in (unknown_clause.json()["detail"])
    )
    done = await client.post(
        f"/api/v1/admin/accounts/{customer.id}/terminate",
        json={
            "reason": "Abuse report",
            "clause": "Prohibited activities: spam or unsolicited bulk messaging",
        },
        headers=admin,
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "terminated"
    assert done.json()["terminated_clause"] == (
        "Prohibited activities: spam or unsolicited bulk messaging"
    )
    assert done.json()["status_reason"] == (
        "Terminated for breaking the terms (Prohibited activities: spam or unsolicited bulk "
        "messaging): Abuse report"
    )
    assert refreshed == [customer.id]
    assert (await client.get("/api/v1/accounts/me", headers=customer_auth)).status_code == 401
    login = await client.post(
        "/api/v1/sessions", json={"email": customer.email, "password": DEFAULT_PASSWORD}
    )
    assert login.status_code == 403
    unsuspend = await client.post(f"/api/v1/admin/accounts/{customer.id}/unsuspend", headers=admin)
    assert unsuspend.status_code == 409


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/admin/accounts", None),
        ("GET", "/api/v1/admin/accounts/1", None),
        ("POST", "/api/v1/admin/accounts/1/suspend", {"reason": "x"}),
        ("POST", "/api/v1/admin/accounts/1/unsuspend", None),
        ("POST", "/api/v1/admin/accounts/1/terminate", {"reason": "x", "clause": "General"}),
        ("GET", "/api/v1/admin/audit", None),
        ("GET", "/api/v1/admin/terms-clauses", None),
    ],
)
async def test_customers_get_403_and_strangers_401(
    client: httpx.AsyncClient,
    runtime: Runtime,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    customer = await _account(runtime)
    as_customer = await client.request(
        method, path, json=body, headers=await _auth(runtime, customer)
    )
    assert as_customer.status_code == 403
    assert as_customer.headers["content-type"] == PROBLEM
    anonymous = await client.request(method, path, json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == PROBLEM
    # Nothing changed.
    async with unit_of_work(runtime.sessionmaker) as s:
        fresh = await s.get(Account, customer.id)
        assert fresh is not None
        assert fresh.status is AccountStatus.active


async def test_search_refuses_nul(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.get("/api/v1/admin/accounts", params={"q": "a\x00b"}, headers=admin)
    assert response.status_code == 422
