"""Subscription endpoints: trial, current, cancel, resume and the admin grant, over HTTP."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import delete, select

from burrow.control.db import unit_of_work
from burrow.control.models import Account, Subscription, SubscriptionStatus, utcnow
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.tasks import expire_due_subscriptions
from tests.support.factories import create_account, create_session_token, create_subscription

PROBLEM = "application/problem+json"


async def _customer(
    runtime: Runtime, *, email: str | None = None, verified: bool = True, admin: bool = False
) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, email=email, verified=verified, admin=admin)
        token = await create_session_token(session, account)
        return account.id, {"Authorization": f"Bearer {token}"}


async def test_customer_endpoints_need_sign_in(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/v1/subscriptions/current"),
        ("POST", "/api/v1/subscriptions/trial"),
        ("POST", "/api/v1/subscriptions/current/cancel"),
        ("POST", "/api/v1/subscriptions/current/resume"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == PROBLEM


async def test_trial_then_current(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, headers = await _customer(runtime)
    none = await client.get("/api/v1/subscriptions/current", headers=headers)
    assert none.status_code == 404
    assert none.headers["content-type"] == PROBLEM
    assert "POST /api/v1/subscriptions/trial" in none.json()["detail"]

    started = await client.post("/api/v1/subscriptions/trial", headers=headers)
    assert started.status_code == 201, started.text
    body = started.json()
    assert body["subscription"]["status"] == "trialing"
    assert body["subscription"]["has_access"] is True
    assert body["subscription"]["plan"]["code"] == "personal-monthly"
    end = body["subscription"]["current_period_end"][:10]
    assert body["message"].startswith("Your free trial of Personal, 1 month has started")

    current = await client.get("/api/v1/subscriptions/current", headers=headers)
    assert current.status_code == 200
    data = current.json()
    assert data["next"] == f"Trial ends on {end}"
    assert data["cancel_at_period_end"] is False
    assert data["current_period_start"] < data["current_period_end"]

    twice = await client.post("/api/v1/subscriptions/trial", headers=headers)
    assert twice.status_code == 409
    assert twice.headers["content-type"] == PROBLEM
    assert f"until {end}" in twice.json()["detail"]


async def test_trial_needs_verified_email(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, headers = await _customer(runtime, verified=False)
    response = await client.post("/api/v1/subscriptions/trial", headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert "Verify your email address" in response.json()["detail"]


async def test_second_trial_refused_after_account_deleted(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first_id, first = await _customer(runtime, email="again@example.com")
    assert (await client.post("/api/v1/subscriptions/trial", headers=first)).status_code == 201
    async with unit_of_work(runtime.sessionmaker) as session:
        await session.execute(delete(Account).where(Account.id == first_id))

    _, second = await _customer(runtime, email="again@example.com")
    response = await client.post("/api/v1/subscriptions/trial", headers=second)
    assert response.status_code == 409
    assert response.json()["type"].endswith("/trial-already-used")
    assert "once per address" in response.json()["detail"]


async def test_cancel_and_resume_say_what_happens(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account_id, headers = await _customer(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, account_id)
        assert account is not None
        sub = await create_subscription(session, account)
        end = sub.current_period_end.date().isoformat()

    current = await client.get("/api/v1/subscriptions/current", headers=headers)
    assert current.json()["next"] == f"Ends on {end} (we will remind you before then)"

    cancelled = await client.post("/api/v1/subscriptions/current/cancel", headers=headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["message"] == (
        f"Cancelled. You keep access until {end}; then your subscription ends and is not "
        f"renewed. You can resume it until {end}."
    )
    assert cancelled.json()["subscription"]["cancel_at_period_end"] is True
    assert cancelled.json()["subscription"]["has_access"] is True
    current = await client.get("/api/v1/subscriptions/current", headers=headers)
    assert current.json()["next"] == f"Ends on {end} because you cancelled"

    resumed = await client.post("/api/v1/subscriptions/current/resume", headers=headers)
    assert resumed.status_code == 200
    assert resumed.json()["message"] == f"Resumed. Ends on {end} (we will remind you before then)."
    assert resumed.json()["subscription"]["cancel_at_period_end"] is False


async def test_expired_subscription_reads_and_refuses(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account_id, headers = await _customer(runtime)
    past = utcnow() - timedelta(days=2)
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, account_id)
        assert account is not None
        await create_subscription(session, account, period_end=past)
    assert await expire_due_subscriptions(runtime) == 1

    current = await client.get("/api/v1/subscriptions/current", headers=headers)
    assert current.status_code == 200
    assert current.json()["status"] == "expired"
    assert current.json()["has_access"] is False
    assert current.json()["next"] == f"Expired on {past.date().isoformat()}"
    for action in ("cancel", "resume"):
        response = await client.post(f"/api/v1/subscriptions/current/{action}", headers=headers)
        assert response.status_code == 409
        assert "ended on" in response.json()["detail"]


# --- admin grant ------------------------------------------------------------------------------


async def test_admin_grant_creates_then_extends(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, admin = await _customer(runtime, admin=True)
    account_id, customer = await _customer(runtime)
    path = f"/api/v1/admin/accounts/{account_id}/grant"

    created = await client.post(
        path, headers=admin, json={"plan_code": "personal-monthly", "months": 1}
    )
    assert created.status_code == 200, created.text
    first = created.json()["subscription"]
    assert first["status"] == "active"
    assert first["plan"]["code"] == "personal-monthly"
    assert created.json()["message"].startswith("Granted 1 month of Personal, 1 month")

    extended = await client.post(
        path, headers=admin, json={"plan_code": "personal-monthly", "days": 7}
    )
    assert extended.status_code == 200
    second = extended.json()["subscription"]
    assert second["id"] == first["id"]
    assert second["current_period_end"] > first["current_period_end"]
    assert extended.json()["message"].startswith("Extended Personal, 1 month by 7 days")

    mine = await client.get("/api/v1/subscriptions/current", headers=customer)
    assert mine.json()["id"] == first["id"]
    assert (
        mine.json()["next"]
        == f"Ends on {second['current_period_end'][:10]} (we will remind you before then)"
    )


async def test_admin_grant_ends_trial(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, admin = await _customer(runtime, admin=True)
    account_id, customer = await _customer(runtime)
    trial = await client.post("/api/v1/subscriptions/trial", headers=customer)
    trial_id = trial.json()["subscription"]["id"]

    granted = await client.post(
        f"/api/v1/admin/accounts/{account_id}/grant",
        headers=admin,
        json={"plan_code": "personal-yearly", "months": 12},
    )
    assert granted.status_code == 200
    assert granted.json()["subscription"]["id"] != trial_id
    async with unit_of_work(runtime.sessionmaker) as session:
        statuses = dict((await session.execute(select(Subscription.id, Subscription.status))).all())
    assert statuses[trial_id] == SubscriptionStatus.canceled
    assert statuses[granted.json()["subscription"]["id"]] == SubscriptionStatus.active


async def test_admin_grant_refusals(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, admin = await _customer(runtime, admin=True)
    account_id, customer = await _customer(runtime)
    path = f"/api/v1/admin/accounts/{account_id}/grant"

    unknown = await client.post(path, headers=admin, json={"plan_code": "gold", "months": 1})
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == PROBLEM
    assert unknown.json()["field"] == "plan_code"
    assert "'gold'" in unknown.json()["detail"]

    async with unit_of_work(runtime.sessionmaker) as session:
        plans = {k: v for k, v in runtime.policy.plans.items() if k != "business-monthly"}
        await plan_service.sync_from_policy(
            session, runtime.policy.model_copy(update={"plans": plans})
        )
    retired = await client.post(
        path, headers=admin, json={"plan_code": "business-monthly", "months": 1}
    )
    assert retired.status_code == 409
    assert "retired" in retired.json()["detail"]

    nobody = await client.post(
        "/api/v1/admin/accounts/999999999/grant",
        headers=admin,
        json={"plan_code": "personal-monthly", "months": 1},
    )
    assert nobody.status_code == 404
    assert "999999999" in nobody.json()["detail"]

    forbidden = await client.post(
        path, headers=customer, json={"plan_code": "personal-monthly", "months": 1}
    )
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == PROBLEM
    anonymous = await client.post(path, json={"plan_code": "personal-monthly", "months": 1})
    assert anonymous.status_code == 401

    mine = await client.get("/api/v1/subscriptions/current", headers=customer)
    assert mine.status_code == 404  # none of the refused grants left anything behind


async def test_admin_grant_rejects_malformed_bodies(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, admin = await _customer(runtime, admin=True)
    account_id, _ = await _customer(runtime)
    path = f"/api/v1/admin/accounts/{account_id}/grant"
    for body in [
        {"plan_code": "personal-monthly"},
        {"plan_code": "personal-monthly", "months": 1, "days": 1},
        {"plan_code": "personal-monthly", "months": 0},
        {"plan_code": "personal-monthly", "months": 121},
        {"plan_code": "personal-monthly", "months": 1, "price": 0},
        {"plan_code": "", "months": 1},
        {"plan_code": "x" * 65, "months": 1},
        {"plan_code": "personal\x00monthly", "months": 1},
        {"plan_code": "personal-monthly", "months": "many"},
    ]:
        response = await client.post(path, headers=admin, json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["detail"]
    for bad_id in ("0", "-1", "abc", str(2**64)):
        response = await client.post(
            f"/api/v1/admin/accounts/{bad_id}/grant",
            headers=admin,
            json={"plan_code": "personal-monthly", "months": 1},
        )
        assert response.status_code == 422, bad_id
