"""Races: twenty real requests at once against a real server, on SQLite and PostgreSQL.

The app runs in uvicorn on a loopback port (``tests.support.server``) and twenty httpx
requests leave together (``asyncio.gather``). The server holds its own pool of database
connections, each working in its own thread (aiosqlite) or server process (PostgreSQL), so the
requests' transactions truly overlap: what is counted or decided must hold all the same.
Rows are made, and the outcome read back, through a runtime of the test's own.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import func, select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.devices.service import new_key_pair
from burrow.control.models import (
    Account,
    Device,
    PrivacyRequest,
    PrivacyRequestKind,
    PrivacyRequestStatus,
    RefundRequest,
    Subscription,
    utcnow,
)
from burrow.control.privacy.service import MAX_PENDING_REQUESTS
from burrow.control.runtime import Runtime
from tests.support.factories import (
    create_account,
    create_device,
    create_order,
    create_session_token,
    create_subscription,
)
from tests.support.server import RunningServer, serving

AT_ONCE = 20
PROBLEM = "application/problem+json"


@pytest.fixture
def server(settings: Settings) -> Iterator[RunningServer]:
    with serving(settings) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=AT_ONCE, max_keepalive_connections=AT_ONCE)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
        yield client


async def at_once(*calls: Any) -> list[httpx.Response]:
    """Send the requests together (each on a connection of its own) and wait for them all."""
    responses: list[httpx.Response] = await asyncio.gather(*calls)
    return responses


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def assert_no_server_errors(responses: list[httpx.Response]) -> None:
    failed = [r for r in responses if r.status_code >= 500]
    assert not failed, [(r.status_code, r.text) for r in failed]


def assert_problems(responses: list[httpx.Response], status: int) -> list[dict[str, Any]]:
    bodies = []
    for response in responses:
        if response.status_code == status:
            assert response.headers["content-type"].startswith(PROBLEM), response.text
            body: dict[str, Any] = response.json()
            assert body["status"] == status, body
            assert body["detail"], body
            bodies.append(body)
    return bodies


async def customer(
    runtime: Runtime, *, plan_code: str | None = None, admin: bool = False
) -> tuple[Account, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        if admin:
            account.totp_secret = pyotp.random_base32()
            account.totp_enabled = True
        token = await create_session_token(session, account)
        if plan_code is not None:
            await create_subscription(session, account, plan_code=plan_code)
    return account, {"Authorization": f"Bearer {token}"}


async def count(runtime: Runtime, *where: Any, of: type[Any]) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        query = select(func.count()).select_from(of).where(*where)
        return int((await session.execute(query)).scalar_one())


# --- limits: counted under a lock --------------------------------------------------------------


async def test_device_limit_holds_for_twenty_adds_at_once(
    runtime: Runtime, http: httpx.AsyncClient
) -> None:
    account, headers = await customer(runtime, plan_code="business-monthly")  # one device

    responses = await at_once(
        *(
            http.post(
                "/api/v1/devices",
                json={"name": f"Laptop {i}", "public_key": new_key_pair()[1]},
                headers=headers,
            )
            for i in range(AT_ONCE)
        )
    )

    assert_no_server_errors(responses)
    assert statuses(responses) == {201: 1, 409: AT_ONCE - 1}, statuses(responses)
    for body in assert_problems(responses, 409):
        assert body["title"] == "Device limit reached"
        assert body["limit"] == 1
    assert await count(runtime, Device.account_id == account.id, of=Device) == 1


async def test_a_limit_of_three_holds_for_twenty_adds_at_once(
    runtime: Runtime, settings: Settings
) -> None:
    """The account-wide cap under an unlimited plan, set to three for this server."""
    account, headers = await customer(runtime, plan_code="personal-monthly")
    capped = settings.model_copy(update={"max_devices_per_account": 3})
    with serving(capped) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
            responses = await at_once(
                *(
                    http.post("/api/v1/devices", json={"name": f"Phone {i}"}, headers=headers)
                    for i in range(AT_ONCE)
                )
            )

    assert_no_server_errors(responses)
    assert statuses(responses) == {201: 3, 409: AT_ONCE - 3}, statuses(responses)
    for body in assert_problems(responses, 409):
        assert body["limit"] == 3
    assert await count(runtime, Device.account_id == account.id, of=Device) == 3


async def test_one_trial_for_twenty_starts_at_once(
    runtime: Runtime, http: httpx.AsyncClient
) -> None:
    account, headers = await customer(runtime)

    responses = await at_once(
        *(http.post("/api/v1/subscriptions/trial", headers=headers) for _ in range(AT_ONCE))
    )

    assert_no_server_errors(responses)
    assert statuses(responses) == {201: 1, 409: AT_ONCE - 1}, statuses(responses)
    assert_problems(responses, 409)
    assert await count(runtime, Subscription.account_id == account.id, of=Subscription) == 1


async def test_pending_privacy_requests_stay_under_their_cap(
    runtime: Runtime, http: httpx.AsyncClient
) -> None:
    account, headers = await customer(runtime)

    responses = await at_once(
        *(
            http.post(
                "/api/v1/privacy/requests",
                json={"kind": "rectification", "details": f"My name is wrong ({i})."},
                headers=headers,
            )
            for i in range(AT_ONCE)
        )
    )

    assert_no_server_errors(responses)
    expected = {201: MAX_PENDING_REQUESTS, 409: AT_ONCE - MAX_PENDING_REQUESTS}
    assert statuses(responses) == expected, statuses(responses)
    stored = await count(runtime, PrivacyRequest.account_id == account.id, of=PrivacyRequest)
    assert stored == MAX_PENDING_REQUESTS


# --- one standing refund request per order (a constraint) --------------------------------------


async def test_one_standing_refund_request_for_twenty_at_once(
    runtime: Runtime, http: httpx.AsyncClient
) -> None:
    account, headers = await customer(runtime, plan_code="personal-monthly")
    async with unit_of_work(runtime.sessionmaker) as session:
        order = await create_order(session, account)

    responses = await at_once(
        *(
            http.post(
                f"/api/v1/billing/orders/{order.id}/refund",
                json={"reason": f"It does not work for me ({i})."},
                headers=headers,
            )
            for i in range(AT_ONCE)
        )
    )

    assert_no_server_errors(responses)
    assert statuses(responses) == {201: 1, 409: AT_ONCE - 1}, statuses(responses)
    assert_problems(responses, 409)
    assert await count(runtime, RefundRequest.order_id == order.id, of=RefundRequest) == 1


# --- a device renamed while it is removed ------------------------------------------------------


async def test_renaming_a_device_while_it_is_removed_is_a_404_or_a_success(
    runtime: Runtime, http: httpx.AsyncClient
) -> None:
    account, headers = await customer(runtime, plan_code="personal-monthly")
    async with unit_of_work(runtime.sessionmaker) as session:
        device = await create_device(session, account)
    url = f"/api/v1/devices/{device.id}"

    removal = http.delete(url, headers=headers)
    renames = [
        http.patch(url, json={"name": f"Renamed {i}"}, headers=headers) for i in range(AT_ONCE - 1)
    ]
    responses = await at_once(removal, *renames)

    assert_no_server_errors(responses)
    assert responses[0].status_code == 204, responses[0].text
    assert set(statuses(responses[1:])) <= {200, 404}, statuses(responses)
    assert_problems(responses[1:], 404)
    assert await count(runtime, Device.id == device.id, of=Device) == 0


# --- decisions: compare-and-set on the state they start from ----------------------------------


async def test_a_privacy_request_is_resolved_once_by_twenty_admins_at_once(
    runtime: Runtime, http: httpx.AsyncClient
) -> None:
    account, _headers = await customer(runtime)
    _admin, admin_headers = await customer(runtime, admin=True)
    async with unit_of_work(runtime.sessionmaker) as session:
        now = utcnow()
        request = PrivacyRequest(
            account_id=account.id,
            kind=PrivacyRequestKind.rectification,
            status=PrivacyRequestStatus.pending,
            received_at=now,
            due_at=now,
            details="Please correct my name.",
        )
        session.add(request)
    url = f"/api/v1/admin/privacy-requests/{request.id}/resolve"

    responses = await at_once(
        *(
            http.post(
                url,
                json={"status": "done" if i % 2 else "refused", "outcome": f"Answer {i}."},
                headers=admin_headers,
            )
            for i in range(AT_ONCE)
        )
    )

    assert_no_server_errors(responses)
    assert statuses(responses) == {200: 1, 409: AT_ONCE - 1}, statuses(responses)
    winner = next(r.json() for r in responses if r.status_code == 200)
    for body in assert_problems(responses, 409):
        assert f"already {winner['status']}" in body["detail"]
    async with unit_of_work(runtime.sessionmaker) as session:
        stored = await session.get(PrivacyRequest, request.id)
        assert stored is not None
        assert stored.status.value == winner["status"]
        assert stored.outcome == winner["outcome"]
