"""Behind a reverse proxy: forwarded headers count only from BURROW_TRUSTED_PROXIES, cookies
are Secure when the proxy speaks TLS, and the address the proxy forwards is kept or not as the
policy says (``privacy.store_last_login_ip``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import ValidationError

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account
from burrow.control.runtime import Runtime
from tests.support.factories import DEFAULT_PASSWORD, create_account

PROXY = "10.9.8.7"
CUSTOMER = "203.0.113.50"
FORWARDED = {"X-Forwarded-For": CUSTOMER, "X-Forwarded-Proto": "https"}


@pytest.fixture
def behind_proxy(runtime: Runtime) -> Runtime:
    runtime.settings = runtime.settings.model_copy(update={"trusted_proxies": f"{PROXY},::1"})
    return runtime


async def _client(runtime: Runtime, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime=runtime), client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def via_proxy(behind_proxy: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(behind_proxy, PROXY):
        yield client


@pytest.fixture
async def direct(behind_proxy: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(behind_proxy, "198.51.100.9"):
        yield client


async def _sign_in(runtime: Runtime, client: httpx.AsyncClient) -> tuple[Account, httpx.Response]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
    response = await client.post(
        "/api/v1/sessions",
        json={"email": account.email, "password": DEFAULT_PASSWORD},
        headers=FORWARDED,
    )
    assert response.status_code == 201, response.text
    async with unit_of_work(runtime.sessionmaker) as session:
        fresh = await session.get(Account, account.id)
    assert fresh is not None
    return fresh, response


async def test_the_trusted_proxy_forwards_the_customers_address_and_tls(
    behind_proxy: Runtime, via_proxy: httpx.AsyncClient
) -> None:
    assert behind_proxy.policy.privacy.store_last_login_ip  # the strict seed keeps it 30 days
    account, response = await _sign_in(behind_proxy, via_proxy)
    assert account.last_login_ip == CUSTOMER  # not the proxy's own address
    assert "secure" in response.headers["set-cookie"].lower()
    page = await via_proxy.get("/signup", headers=FORWARDED)
    assert page.status_code == 200
    assert all("secure" in c.lower() for c in page.headers.get_list("set-cookie"))


async def test_anyone_else_cannot_claim_an_address_or_tls(
    behind_proxy: Runtime, direct: httpx.AsyncClient
) -> None:
    account, response = await _sign_in(behind_proxy, direct)
    assert account.last_login_ip == "198.51.100.9"
    assert "secure" not in response.headers["set-cookie"].lower()
    page = await direct.get("/signup", headers=FORWARDED)
    assert all("secure" not in c.lower() for c in page.headers.get_list("set-cookie"))


async def test_without_trusted_proxies_no_forwarded_header_counts(
    runtime: Runtime,
) -> None:
    assert runtime.settings.trusted_proxies == ""
    async for client in _client(runtime, "127.0.0.1"):
        account, response = await _sign_in(runtime, client)
        assert account.last_login_ip == "127.0.0.1"
        assert "secure" not in response.headers["set-cookie"].lower()


async def test_a_forwarded_address_is_not_kept_where_the_policy_forbids_it(
    behind_proxy: Runtime, via_proxy: httpx.AsyncClient
) -> None:
    privacy = behind_proxy.policy.privacy.model_copy(update={"store_last_login_ip": False})
    behind_proxy.policy = behind_proxy.policy.model_copy(update={"privacy": privacy})
    account, _ = await _sign_in(behind_proxy, via_proxy)
    assert account.last_login_ip is None
    assert account.last_login_ip_at is None


def test_trusted_proxies_must_be_addresses() -> None:
    assert Settings(trusted_proxies=" 127.0.0.1, ::1 ,10.0.0.0/8").trusted_proxy_list == [
        "127.0.0.1",
        "::1",
        "10.0.0.0/8",
    ]
    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings(trusted_proxies="caddy.local")
