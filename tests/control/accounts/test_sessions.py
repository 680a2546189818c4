"""A customer's own sessions: listed with their device, ended one by one, ended when idle,
their last use written at most once a minute; and the owner told of security changes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pyotp
from sqlalchemy import select, update

from burrow.control.accounts.tasks import purge_expired_sessions
from burrow.control.db import unit_of_work
from burrow.control.models import Account, AccountSession, utcnow
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token
from tests.support.factories import DEFAULT_PASSWORD, create_account, create_session_token
from tests.support.smtp import Inbox, SmtpServer

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


async def _account(runtime: Runtime) -> Account:
    async with unit_of_work(runtime.sessionmaker) as s:
        return await create_account(s)


async def _sign_in(client: httpx.AsyncClient, email: str, user_agent: str) -> str:
    response = await client.post(
        "/api/v1/sessions",
        json={"email": email, "password": DEFAULT_PASSWORD},
        headers={"User-Agent": user_agent},
    )
    assert response.status_code == 201, response.text
    client.cookies.clear()
    return str(response.json()["token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _set_session(runtime: Runtime, token: str, **values: object) -> None:
    async with unit_of_work(runtime.sessionmaker) as s:
        await s.execute(
            update(AccountSession)
            .where(AccountSession.token_hash == hash_token(token))
            .values(**values)
        )


async def _session_row(runtime: Runtime, token: str) -> AccountSession:
    async with unit_of_work(runtime.sessionmaker) as s:
        row = await s.scalar(
            select(AccountSession).where(AccountSession.token_hash == hash_token(token))
        )
        assert row is not None
        return row


async def test_list_and_end_my_sessions(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await _account(runtime)
    laptop = await _sign_in(client, account.email, FIREFOX)
    phone = await _sign_in(client, account.email, IPHONE)
    stranger = await _account(runtime)
    theirs = await _sign_in(client, stranger.email, FIREFOX)

    listed = await client.get("/api/v1/sessions", headers=_bearer(laptop))
    assert listed.status_code == 200, listed.text
    sessions = listed.json()
    assert [s["device"] for s in sessions] == ["Firefox on Linux", "Mobile Safari on iOS"]
    assert [s["current"] for s in sessions] == [True, False]
    assert set(sessions[0]) == {
        "id",
        "device",
        "created_at",
        "last_used_at",
        "expires_at",
        "current",
    }
    assert "127.0.0.1" not in listed.text

    # Another account's session is not mine to end (nor to see).
    their_id = (await client.get("/api/v1/sessions", headers=_bearer(theirs))).json()[0]["id"]
    assert their_id not in {s["id"] for s in sessions}
    refused = await client.delete(f"/api/v1/sessions/{their_id}", headers=_bearer(laptop))
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await client.get("/api/v1/accounts/me", headers=_bearer(theirs))).status_code == 200

    ended = await client.delete(f"/api/v1/sessions/{sessions[1]['id']}", headers=_bearer(laptop))
    assert ended.status_code == 204
    assert (await client.get("/api/v1/accounts/me", headers=_bearer(phone))).status_code == 401
    assert (await client.get("/api/v1/accounts/me", headers=_bearer(laptop))).status_code == 200
    again = await client.delete(f"/api/v1/sessions/{sessions[1]['id']}", headers=_bearer(laptop))
    assert again.status_code == 404


async def test_an_idle_session_ends_before_its_maximum(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    token = await _sign_in(client, account.email, FIREFOX)
    idle = timedelta(hours=runtime.settings.session_idle_hours)
    await _set_session(
        runtime,
        token,
        created_at=utcnow() - idle - timedelta(minutes=5),
        last_used_at=utcnow() - idle - timedelta(minutes=1),
    )
    response = await client.get("/api/v1/accounts/me", headers=_bearer(token))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_last_use_is_written_at_most_once_a_minute(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    token = await _sign_in(client, account.email, FIREFOX)
    long_ago = utcnow() - timedelta(hours=3)
    await _set_session(runtime, token, last_used_at=long_ago)

    # Twenty requests at once on the same session: all answered, one write.
    responses = await asyncio.gather(
        *(client.get("/api/v1/accounts/me", headers=_bearer(token)) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {200}
    first = (await _session_row(runtime, token)).last_used_at
    assert first is not None
    assert first > long_ago + timedelta(hours=2)

    # Within the minute, no further write.
    assert (await client.get("/api/v1/accounts/me", headers=_bearer(token))).status_code == 200
    assert (await _session_row(runtime, token)).last_used_at == first

    # A minute on, the next request writes again: it keeps an active session alive.
    await _set_session(runtime, token, last_used_at=utcnow() - timedelta(seconds=61))
    assert (await client.get("/api/v1/accounts/me", headers=_bearer(token))).status_code == 200
    later = (await _session_row(runtime, token)).last_used_at
    assert later is not None
    assert later > utcnow() - timedelta(seconds=10)


async def test_the_purge_forgets_idle_sessions(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await _account(runtime)
    idle = await _sign_in(client, account.email, FIREFOX)
    fresh = await _sign_in(client, account.email, IPHONE)
    await _set_session(
        runtime, idle, last_used_at=utcnow() - timedelta(hours=runtime.settings.session_idle_hours)
    )
    assert await purge_expired_sessions(runtime) == 1
    async with unit_of_work(runtime.sessionmaker) as s:
        left = await s.scalars(
            select(AccountSession.token_hash).where(AccountSession.account_id == account.id)
        )
        assert list(left) == [hash_token(fresh)]


# The owner is told.


async def test_the_owner_is_emailed_when_the_password_changes(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account = await _account(runtime)
    async with unit_of_work(runtime.sessionmaker) as s:
        token = await create_session_token(s, account)
    changed = await client.post(
        "/api/v1/accounts/me/password",
        headers=_bearer(token),
        json={"current_password": DEFAULT_PASSWORD, "new_password": "a brand new password"},
    )
    assert changed.status_code == 204, changed.text
    notice = smtp.inbox.wait_for(account.email)[0]
    assert "password was changed" in str(notice["Subject"])
    assert "/forgot-password" in Inbox.body(notice)


async def test_the_owner_is_emailed_when_two_factor_goes_on_and_off(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account = await _account(runtime)
    async with unit_of_work(runtime.sessionmaker) as s:
        token = await create_session_token(s, account)
    auth = _bearer(token)
    secret = (await client.post("/api/v1/accounts/me/totp", headers=auth)).json()["secret"]
    totp = pyotp.TOTP(secret)
    on = await client.post(
        "/api/v1/accounts/me/totp/confirm", headers=auth, json={"code": totp.now()}
    )
    assert on.status_code == 200, on.text
    first = smtp.inbox.wait_for(account.email)[0]
    assert "now on" in str(first["Subject"])
    off_code = totp.at(utcnow() + timedelta(seconds=30))
    off = await client.request(
        "DELETE", "/api/v1/accounts/me/totp", headers=auth, json={"code": off_code}
    )
    assert off.status_code == 200, off.text
    second = smtp.inbox.wait_for(account.email, count=2)[1]
    assert "now off" in str(second["Subject"])


async def test_a_failed_change_tells_no_one(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account = await _account(runtime)
    async with unit_of_work(runtime.sessionmaker) as s:
        token = await create_session_token(s, account)
    wrong = await client.post(
        "/api/v1/accounts/me/password",
        headers=_bearer(token),
        json={"current_password": DEFAULT_PASSWORD, "new_password": "1234567890"},
    )
    assert wrong.status_code == 422
    await asyncio.sleep(0.3)
    assert smtp.inbox.to(account.email) == []
