"""Getting back in: a forgotten password (the API), two-factor recovery codes (the API), and an
unknown address answered like a known one, in time as well as in words."""

from __future__ import annotations

import re
import statistics
import time
from datetime import timedelta

import httpx
import pyotp
from sqlalchemy import select, update

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account, PasswordReset, RecoveryCode, utcnow
from burrow.control.ratelimit import RateLimits
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token
from tests.support.app import app_client, running_runtime
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_session_token,
    unique_email,
)
from tests.support.smtp import Inbox, SmtpServer

PROBLEM = "application/problem+json"
NEW_PASSWORD = "a brand new passphrase"


async def _account(runtime: Runtime, **kwargs: object) -> tuple[Account, str]:
    async with unit_of_work(runtime.sessionmaker) as s:
        account = await create_account(s, **kwargs)  # type: ignore[arg-type]
        return account, await create_session_token(s, account)


async def _link_token(smtp: SmtpServer, email: str, count: int = 1) -> str:
    body = Inbox.body((await smtp.inbox.arrived(email, count))[count - 1])
    found = re.search(r"http://testserver/reset-password\?token=([\w-]+)", body)
    assert found is not None, body
    return found.group(1)


async def _reset(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/api/v1/accounts/password-reset", json={"email": email})


async def _confirm(client: httpx.AsyncClient, token: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/accounts/password-reset/confirm", json={"token": token, "new_password": password}
    )


async def test_a_forgotten_password_is_reset_with_a_one_time_link(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account, old_session = await _account(runtime)
    known = await _reset(client, account.email)
    unknown = await _reset(client, unique_email("nobody"))
    # The same answer whether or not the address has an account.
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    token = await _link_token(smtp, account.email)

    async with unit_of_work(runtime.sessionmaker) as s:
        rows = (await s.execute(select(PasswordReset))).scalars().all()
    assert [r.token_hash for r in rows] == [hash_token(token)]  # stored hashed, never in clear
    assert timedelta(minutes=59) < rows[0].expires_at - utcnow() <= timedelta(hours=1)

    weak = await _confirm(client, token, "short")
    assert weak.status_code == 422
    same = await _confirm(client, token, account.email)  # a password that is the address
    assert same.status_code == 422
    assert "email" in same.json()["detail"]
    done = await _confirm(client, token, NEW_PASSWORD)  # the refusals did not spend the link
    assert done.status_code == 200, done.text

    # Every session ended; the old password is gone, the new one works.
    me = await client.get("/api/v1/accounts/me", headers={"Authorization": f"Bearer {old_session}"})
    assert me.status_code == 401
    old = await client.post(
        "/api/v1/sessions", json={"email": account.email, "password": DEFAULT_PASSWORD}
    )
    assert old.status_code == 401
    new = await client.post(
        "/api/v1/sessions", json={"email": account.email, "password": NEW_PASSWORD}
    )
    assert new.status_code == 201
    assert "was changed" in str((await smtp.inbox.arrived(account.email, 2))[1]["Subject"])

    again = await _confirm(client, token, "yet another passphrase")
    assert again.status_code == 410
    assert again.headers["content-type"].startswith(PROBLEM)
    assert "already used" in again.json()["detail"]
    garbage = await _confirm(client, "not-a-token", NEW_PASSWORD)
    assert garbage.status_code == 400
    assert "ask for a new one" in garbage.json()["detail"]


async def test_a_link_expires_after_an_hour_and_a_new_one_retires_the_old(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account, _ = await _account(runtime)
    await _reset(client, account.email)
    first = await _link_token(smtp, account.email)
    await _reset(client, account.email)
    second = await _link_token(smtp, account.email, 2)
    retired = await _confirm(client, first, NEW_PASSWORD)
    assert retired.status_code == 410
    async with unit_of_work(runtime.sessionmaker) as s:
        await s.execute(
            update(PasswordReset)
            .where(PasswordReset.token_hash == hash_token(second))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = await _confirm(client, second, NEW_PASSWORD)
    assert expired.status_code == 410
    assert "expired" in expired.json()["detail"]


async def test_bad_input_is_answered_with_a_message(client: httpx.AsyncClient) -> None:
    for body in ({}, {"email": "not an address"}, {"email": "x@example.com", "extra": 1}):
        answer = await client.post("/api/v1/accounts/password-reset", json=body)
        assert answer.status_code == 422
        assert answer.headers["content-type"].startswith(PROBLEM)
    answer = await client.post(
        "/api/v1/accounts/password-reset/confirm", json={"token": "", "new_password": "x"}
    )
    assert answer.status_code == 422


async def test_reset_requests_are_throttled_per_address_and_per_client(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account, _ = await _account(runtime)
    limit = RateLimits.parse(runtime.settings.login_limit_account_client)[0].amount
    answers = [(await _reset(client, account.email)).status_code for _ in range(limit + 1)]
    assert answers == [202] * limit + [429]
    assert len(await smtp.inbox.arrived(account.email, limit)) == limit
    # An unknown address is throttled the same way, so the throttle tells nothing either.
    ghost = unique_email("ghost")
    answers = [(await _reset(client, ghost)).status_code for _ in range(limit + 1)]
    assert answers == [202] * limit + [429]
    refused = await _reset(client, ghost)
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert "wait" in refused.json()["detail"]
    # Per client: many addresses from one client run into the client's limit.
    client_limit = RateLimits.parse(runtime.settings.login_limit_client)[0].amount
    statuses = [
        (await _reset(client, unique_email("spray"))).status_code for _ in range(client_limit)
    ]
    assert 429 in statuses
    # Sign-in is not locked by asking for links.
    signed_in = await client.post(
        "/api/v1/sessions", json={"email": account.email, "password": DEFAULT_PASSWORD}
    )
    assert signed_in.status_code == 201


async def test_an_unknown_address_takes_the_time_of_a_known_one(
    settings: Settings, smtp: SmtpServer
) -> None:
    """Sign-in and reset requests, known against unknown addresses: the medians of many
    interleaved requests are close (the answers are equal too)."""
    roomy = settings.model_copy(
        update={
            "login_limit_account_client": "10000 per hour",
            "login_limit_account": "10000 per hour",
            "login_limit_client": "10000 per hour",
            "login_failure_notice": "10000 per hour",
        }
    )
    async with running_runtime(roomy) as runtime, app_client(runtime) as client:
        account, _ = await _account(runtime)
        rounds = 25

        async def timed(path: str, body: dict[str, str]) -> tuple[float, httpx.Response]:
            started = time.perf_counter()
            answer = await client.post(path, json=body)
            return time.perf_counter() - started, answer

        for path, body_for in (
            ("/api/v1/sessions", lambda e: {"email": e, "password": "wrong password!"}),
            ("/api/v1/accounts/password-reset", lambda e: {"email": e}),
        ):
            known: list[float] = []
            unknown: list[float] = []
            answers: set[tuple[int, str]] = set()
            await client.post(path, json=body_for(account.email))  # warm up
            if path.endswith("password-reset"):
                await smtp.inbox.arrived(account.email)
            mails = len(smtp.inbox.to(account.email))
            for _ in range(rounds):
                for email, into in ((account.email, known), (unique_email("nx"), unknown)):
                    seconds, answer = await timed(path, body_for(email))
                    into.append(seconds)
                    answers.add((answer.status_code, answer.json()["detail"]))
                    if path.endswith("password-reset") and email == account.email:
                        # The link is made and mailed after the answer; let that finish so
                        # it does not slow the next measurement down.
                        mails += 1
                        await smtp.inbox.arrived(account.email, mails)
            assert len(answers) == 1, answers  # the same status and words
            a, b = statistics.median(known), statistics.median(unknown)
            print(f"{path}: median known {a * 1000:.1f} ms, unknown {b * 1000:.1f} ms")
            assert abs(a - b) <= max(0.25 * min(a, b), 0.004), (path, a, b)


async def _enrol(client: httpx.AsyncClient, token: str) -> tuple[pyotp.TOTP, list[str]]:
    headers = {"Authorization": f"Bearer {token}"}
    started = await client.post("/api/v1/accounts/me/totp", headers=headers)
    totp = pyotp.TOTP(started.json()["secret"])
    confirmed = await client.post(
        "/api/v1/accounts/me/totp/confirm", json={"code": totp.now()}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["totp_enabled"] is True
    return totp, confirmed.json()["recovery_codes"]


async def test_recovery_codes_stand_in_for_the_app_once_each(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account, token = await _account(runtime)
    headers = {"Authorization": f"Bearer {token}"}
    totp, codes = await _enrol(client, token)
    assert len(codes) == len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z2-9]{5}-[a-z2-9]{5}", code) for code in codes)
    async with unit_of_work(runtime.sessionmaker) as s:
        stored = (await s.execute(select(RecoveryCode.code_hash))).scalars().all()
    assert len(stored) == 10
    assert not set(codes) & set(stored)  # hashed

    sign_in = {"email": account.email, "password": DEFAULT_PASSWORD}
    used = await client.post("/api/v1/sessions", json={**sign_in, "recovery_code": codes[0]})
    assert used.status_code == 201, used.text
    # Typed by hand: upper case, spaces, no dash.
    typed = codes[1].replace("-", " ").upper()
    assert (
        await client.post("/api/v1/sessions", json={**sign_in, "recovery_code": typed})
    ).status_code == 201
    twice = await client.post("/api/v1/sessions", json={**sign_in, "recovery_code": codes[0]})
    assert twice.status_code == 401
    assert twice.json()["totp_required"] is True
    assert "recovery code" in twice.json()["detail"]
    malformed = await client.post("/api/v1/sessions", json={**sign_in, "recovery_code": "1"})
    assert malformed.status_code == 422
    left = await client.get("/api/v1/accounts/me/totp/recovery-codes", headers=headers)
    assert left.json() == {"remaining": 8}

    # On request, a new set replaces the old one (proven with a code from the app).
    wrong = await client.post(
        "/api/v1/accounts/me/totp/recovery-codes", json={"code": "000000"}, headers=headers
    )
    assert wrong.status_code == 422
    fresh = await client.post(
        "/api/v1/accounts/me/totp/recovery-codes",
        json={"code": totp.at(utcnow() + timedelta(seconds=30))},
        headers=headers,
    )
    assert fresh.status_code == 200, fresh.text
    new_codes = fresh.json()["codes"]
    assert len(new_codes) == 10
    assert not set(new_codes) & set(codes)
    old = await client.post("/api/v1/sessions", json={**sign_in, "recovery_code": codes[5]})
    assert old.status_code == 401
    new = await client.post("/api/v1/sessions", json={**sign_in, "recovery_code": new_codes[5]})
    assert new.status_code == 201
    left = await client.get("/api/v1/accounts/me/totp/recovery-codes", headers=headers)
    assert left.json() == {"remaining": 9}
