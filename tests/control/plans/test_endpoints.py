"""The public plan list and the administrators' full list."""

from __future__ import annotations

import httpx

from burrow.control.db import unit_of_work
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
from tests.support.factories import create_account, create_session_token


async def _retire(runtime: Runtime, code: str) -> None:
    policy = runtime.policy
    plans = {k: v for k, v in policy.plans.items() if k != code}
    async with unit_of_work(runtime.sessionmaker) as session:
        await plan_service.sync_from_policy(session, policy.model_copy(update={"plans": plans}))


async def _token(runtime: Runtime, *, admin: bool) -> str:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        return await create_session_token(session, account)


async def test_public_plans_need_no_sign_in(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.get("/api/v1/plans")
    assert response.status_code == 200
    plans = {p["code"]: p for p in response.json()}
    assert set(plans) == set(runtime.policy.plans)
    assert plans["business-monthly"] == {
        "code": "business-monthly",
        "name": "Business, 1 month",
        "kind": "business",
        "price_minor": 999,
        "currency": "USD",
        "period_months": 1,
        "device_limit": 1,
        "connection_limit": 1,
    }
    assert plans["personal-monthly"]["device_limit"] is None
    assert plans["personal-monthly"]["connection_limit"] is None


async def test_public_plans_leave_out_retired(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await _retire(runtime, "personal-yearly")
    codes = {p["code"] for p in (await client.get("/api/v1/plans")).json()}
    assert codes == set(runtime.policy.plans) - {"personal-yearly"}


async def test_admin_sees_retired_plans(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await _retire(runtime, "personal-yearly")
    token = await _token(runtime, admin=True)
    response = await client.get("/api/v1/admin/plans", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    plans = {p["code"]: p for p in response.json()}
    assert set(plans) == set(runtime.policy.plans)
    assert plans["personal-yearly"]["retired_at"] is not None
    assert plans["personal-monthly"]["retired_at"] is None
    assert isinstance(plans["personal-monthly"]["id"], int)


async def test_admin_plans_refuse_customers_and_strangers(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    anonymous = await client.get("/api/v1/admin/plans")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    token = await _token(runtime, admin=False)
    customer = await client.get("/api/v1/admin/plans", headers={"Authorization": f"Bearer {token}"})
    assert customer.status_code == 403
    assert customer.json()["detail"]
