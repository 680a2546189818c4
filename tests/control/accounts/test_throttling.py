"""Sign-in throttling: counted before checked, per account-and-client, per account, per client,
and the owner told about many failures, never locked out from a client that has not failed.

Concurrency runs against a real uvicorn server on loopback (``tests.support.server``), with
loopback as its trusted proxy (``trusted_proxies``): the test speaks from several clients by
``X-Forwarded-For``, as Caddy in front of burrow would pass them on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account
from burrow.control.runtime import Runtime
from tests.support.factories import DEFAULT_PASSWORD, create_account, create_session_token
from tests.support.server import RunningServer, serving
from tests.support.smtp import Inbox, SmtpServer

AT_ONCE = 20


def _behind_proxy(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"trusted_proxies": "127.0.0.1", **changes})


@pytest.fixture
def server(settings: Settings) -> Iterator[RunningServer]:
    with serving(_behind_proxy(settings)) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=AT_ONCE, max_keepalive_connections=AT_ONCE)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
        yield client


async def _account(runtime: Runtime) -> Account:
    async with unit_of_work(runtime.sessionmaker) as s:
        return await create_account(s)


def _sign_in(
    http: httpx.AsyncClient, email: str, password: str, client: str
) -> Coroutine[Any, Any, httpx.Response]:
    return http.post(
        "/api/v1/sessions",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": client},
    )


async def _statuses(*calls: Coroutine[Any, Any, httpx.Response]) -> Counter[int]:
    responses = await asyncio.gather(*calls)
    return Counter(r.status_code for r in responses)


async def test_twenty_wrong_passwords_at_once_are_not_all_checked(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    allowed = 5  # the design: five attempts for one account from one client
    burst = await _statuses(
        *(_sign_in(http, account.email, "wrong password", "198.51.100.7") for _ in range(AT_ONCE))
    )
    # Each attempt is counted before its password is looked at: only the allowed ones are.
    assert burst == Counter({401: allowed, 429: AT_ONCE - allowed})
    # A second burst is refused whole, and does not raise anything for the owner elsewhere.
    again = await _statuses(
        *(_sign_in(http, account.email, "wrong password", "198.51.100.7") for _ in range(AT_ONCE))
    )
    assert again == Counter({429: AT_ONCE})
    owner = await http.post(
        "/api/v1/sessions",
        json={"email": account.email, "password": DEFAULT_PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.20"},
    )
    assert owner.status_code == 201, owner.text


async def test_failures_from_one_address_do_not_lock_out_the_others_behind_it(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    victims = [await _account(runtime) for _ in range(5)]
    neighbour = await _account(runtime)
    shared = "192.0.2.55"  # one NAT: an attacker and their neighbour behind it
    for victim in victims:
        failures = await _statuses(
            *(_sign_in(http, victim.email, "wrong password", shared) for _ in range(5))
        )
        assert failures == Counter({401: 5})
    # Twenty-five failures from the address; the neighbour's first, right password works.
    ok = await http.post(
        "/api/v1/sessions",
        json={"email": neighbour.email, "password": DEFAULT_PASSWORD},
        headers={"X-Forwarded-For": shared},
    )
    assert ok.status_code == 201, ok.text


async def test_distributed_guessing_slows_the_account_briefly_and_tells_the_owner(
    settings: Settings, runtime: Runtime, smtp: SmtpServer
) -> None:
    tight = _behind_proxy(
        settings, login_limit_account="8 per 10 seconds", login_failure_notice="4 per hour"
    )
    account = await _account(runtime)
    limits = httpx.Limits(max_connections=AT_ONCE, max_keepalive_connections=AT_ONCE)
    with serving(tight) as server:
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:

            def owner_from(client: str) -> Coroutine[Any, Any, httpx.Response]:
                return _sign_in(http, account.email, DEFAULT_PASSWORD, client)

            # The owner's own browser signed in last week (here: a moment ago; one of the eight).
            assert (await owner_from("203.0.113.9")).status_code == 201
            # Twenty clients, one guess each: the account's own bucket holds them to eight.
            burst = await _statuses(
                *(
                    _sign_in(http, account.email, "wrong password", f"198.51.100.{n}")
                    for n in range(1, AT_ONCE + 1)
                )
            )
            assert burst == Counter({401: 7, 429: AT_ONCE - 7})
            # The owner's known browser is not held back; a new one waits a moment only.
            assert (await owner_from("203.0.113.9")).status_code == 201
            waiting = await owner_from("203.0.113.77")
            assert waiting.status_code == 429
            wait = int(waiting.headers["Retry-After"])
            assert wait <= 10
            await asyncio.sleep(wait + 0.3)
            assert (await owner_from("203.0.113.77")).status_code == 201
    smtp.inbox.wait_for(account.email)
    await asyncio.sleep(0.5)
    notices = smtp.inbox.to(account.email)
    # Seven failures past a notice limit of four: one email, not one per failure.
    assert len(notices) == 1
    assert "failed sign-ins" in str(notices[0]["Subject"]).lower()
    body = Inbox.body(notices[0])
    assert "/forgot-password" in body
    assert "198.51.100" not in body  # no address in the mail either


async def test_throttle_counts_a_signed_in_persons_wrong_passwords(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Proving oneself again (a password change) counts like a sign-in, per account."""
    account = await _account(runtime)
    async with unit_of_work(runtime.sessionmaker) as s:
        token = await create_session_token(s, account)
    auth = {"Authorization": f"Bearer {token}"}
    codes = []
    for _ in range(7):
        response = await client.post(
            "/api/v1/accounts/me/password",
            headers=auth,
            json={"current_password": "not it at all", "new_password": "a brand new password"},
        )
        codes.append(response.status_code)
    assert codes == [422] * 5 + [429] * 2
