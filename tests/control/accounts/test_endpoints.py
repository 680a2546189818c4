"""The accounts and sessions API through the real app: registration to sign-out, 2FA, throttling."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.deps import SESSION_COOKIE
from burrow.control.models import Account, AccountStatus, utcnow
from burrow.control.policy.schemas import AgeSection
from burrow.control.runtime import Runtime
from tests.support.app import app_client, running_runtime
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_session_token,
    unique_email,
)
from tests.support.smtp import Inbox, SmtpServer

PROBLEM = "application/problem+json"


def _signup(runtime: Runtime, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "email": unique_email("api"),
        "password": "a long enough password",
        "accept_terms_version": runtime.policy.terms.version,
    }
    body.update(changes)
    return body


async def _account(runtime: Runtime, **kwargs: object) -> Account:
    async with unit_of_work(runtime.sessionmaker) as s:
        return await create_account(s, **kwargs)  # type: ignore[arg-type]


async def _token(runtime: Runtime, account: Account, expires_in: timedelta | None = None) -> str:
    async with unit_of_work(runtime.sessionmaker) as s:
        if expires_in is None:
            return await create_session_token(s, account)
        return await create_session_token(s, account, expires_in=expires_in)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _sign_in(
    client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD, **extra: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/sessions", json={"email": email, "password": password, **extra}
    )


# Registration and verification.


async def test_register_verify_by_emailed_link(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    body = _signup(runtime, email="  New.Person@Example.COM", age_attestation="adult")
    response = await client.post("/api/v1/accounts", json=body)
    assert response.status_code == 202, response.text
    assert "new.person@example.com" in response.json()["detail"]
    assert "password" not in response.text
    assert "hash" not in response.text

    message = smtp.inbox.wait_for("new.person@example.com")[0]
    text = Inbox.body(message)
    link = re.search(r"http://testserver\S+", text)
    assert link is not None, text
    url = urlsplit(link.group(0))
    # A person clicks the link: it opens the web page, which verifies (never the API's JSON).
    assert url.path == "/verify-email"
    followed = await client.get(f"{url.path}?{url.query}")
    assert followed.status_code == 200, followed.text
    assert followed.headers["content-type"].startswith("text/html")
    assert "new.person@example.com is verified" in followed.text
    # The API still takes the same token, and refuses it once it was used.
    again = await client.get(f"/api/v1/accounts/verify-email?{url.query}")
    assert again.status_code == 410
    assert again.headers["content-type"] == PROBLEM
    assert "new link" in again.json()["detail"]

    signed_in = await _sign_in(client, "new.person@example.com", "a long enough password")
    me = await client.get("/api/v1/accounts/me", headers=_bearer(signed_in.json()["token"]))
    created = me.json()
    assert created["email"] == "new.person@example.com"
    assert created["email_verified"] is True
    assert created["terms_version_accepted"] == runtime.policy.terms.version
    assert created["age_attestation"] == "adult"


async def test_verify_email_by_post_rejects_unknown_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/accounts/verify-email", json={"token": "nope"})
    assert response.status_code == 400
    assert "new link" in response.json()["detail"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a" * 320 + "@example.com"}, "email"),
        ({"password": "short"}, "password"),
        ({"password": "x" * 1025}, "password"),
        ({"accept_terms_version": "1999-01"}, "accept_terms_version"),
        ({"age_attestation": "teenager"}, "age_attestation"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_register_refuses_bad_input(
    client: httpx.AsyncClient, runtime: Runtime, changes: dict[str, object], field: str
) -> None:
    response = await client.post("/api/v1/accounts", json=_signup(runtime, **changes))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    fields = [problem.get("field")] + [e["field"] for e in problem.get("errors", [])]
    assert field in fields


async def test_register_refuses_password_equal_to_email(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(
        "/api/v1/accounts",
        json=_signup(runtime, email="same@example.com", password="Same@Example.com"),
    )
    assert response.status_code == 422
    assert response.json()["field"] == "password"


async def test_terms_mismatch_names_the_current_version(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(
        "/api/v1/accounts", json=_signup(runtime, accept_terms_version="1999-01")
    )
    assert runtime.policy.terms.version in response.json()["detail"]


async def test_age_attestation_required_by_policy(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.policy = runtime.policy.model_copy(
        update={"age": AgeSection(attestation_required=True, allow_guardian_consent=False)}
    )
    missing = await client.post("/api/v1/accounts", json=_signup(runtime))
    assert missing.status_code == 422
    assert missing.json()["field"] == "age_attestation"
    refused = await client.post(
        "/api/v1/accounts", json=_signup(runtime, age_attestation="guardian_consent")
    )
    assert refused.status_code == 422
    ok = await client.post("/api/v1/accounts", json=_signup(runtime, age_attestation="adult"))
    assert ok.status_code == 202


async def test_resend_verification_is_rate_limited(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account = await _account(runtime, verified=False)
    token = await _token(runtime, account)
    first = await client.post("/api/v1/accounts/me/verification-email", headers=_bearer(token))
    assert first.status_code == 202
    smtp.inbox.wait_for(account.email)
    second = await client.post("/api/v1/accounts/me/verification-email", headers=_bearer(token))
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1

    verified = await _account(runtime)
    done = await client.post(
        "/api/v1/accounts/me/verification-email", headers=_bearer(await _token(runtime, verified))
    )
    assert done.status_code == 409


# Sessions.


async def test_sign_in_cookie_and_bearer_then_sign_out(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    response = await _sign_in(client, account.email.upper())
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={token}")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert f"Max-Age={runtime.settings.session_ttl_hours * 3600}" in cookie
    assert "Secure" not in cookie  # plain http in tests

    # The client now holds the cookie; the API works with it alone.
    by_cookie = await client.get("/api/v1/accounts/me")
    assert by_cookie.status_code == 200
    assert by_cookie.json()["id"] == account.id
    client.cookies.clear()
    by_bearer = await client.get("/api/v1/accounts/me", headers=_bearer(token))
    assert by_bearer.json()["email"] == account.email

    out = await client.delete("/api/v1/sessions/current", headers=_bearer(token))
    assert out.status_code == 204
    after = await client.get("/api/v1/accounts/me", headers=_bearer(token))
    assert after.status_code == 401
    assert after.json()["detail"] == "Your session has expired; sign in again."


async def test_secure_cookie_over_https(app: object, runtime: Runtime) -> None:
    account = await _account(runtime)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as secure:
        response = await _sign_in(secure, account.email)
    assert "Secure" in response.headers["set-cookie"]


async def test_sign_out_everywhere(client: httpx.AsyncClient, runtime: Runtime) -> None:
    account = await _account(runtime)
    one = (await _sign_in(client, account.email)).json()["token"]
    two = (await _sign_in(client, account.email)).json()["token"]
    client.cookies.clear()
    assert (await client.delete("/api/v1/sessions", headers=_bearer(one))).status_code == 204
    for token in (one, two):
        response = await client.get("/api/v1/accounts/me", headers=_bearer(token))
        assert response.status_code == 401


async def test_wrong_password_and_unknown_email_are_the_same_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    wrong = await _sign_in(client, account.email, "wrong password")
    unknown = await _sign_in(client, "nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_expired_and_missing_tokens_are_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    expired = await _token(runtime, account, expires_in=timedelta(seconds=-1))
    response = await client.get("/api/v1/accounts/me", headers=_bearer(expired))
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert "sign in again" in response.json()["detail"]
    assert (await client.get("/api/v1/accounts/me")).status_code == 401


async def test_terminated_cannot_sign_in_suspended_can(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    gone = await _account(runtime, status=AccountStatus.terminated)
    response = await _sign_in(client, gone.email)
    assert response.status_code == 403
    assert "terminated" in response.json()["detail"]
    paused = await _account(runtime, status=AccountStatus.suspended)
    ok = await _sign_in(client, paused.email)
    assert ok.status_code == 201
    me = await client.get("/api/v1/accounts/me", headers=_bearer(ok.json()["token"]))
    assert me.json()["status"] == "suspended"


async def test_throttled_after_attempts_then_recovers(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    quick = settings.model_copy(update={"login_limit_account_client": "3 per 8 seconds"})
    async with running_runtime(quick) as runtime, app_client(runtime) as client:
        account = await _account(runtime)
        for _ in range(3):
            assert (await _sign_in(client, account.email, "wrong password")).status_code == 401
        slowed = await _sign_in(client, account.email)
        assert slowed.status_code == 429
        assert slowed.headers["content-type"] == PROBLEM
        wait = int(slowed.headers["Retry-After"])
        assert 1 <= wait <= 8
        await asyncio.sleep(wait + 0.5)
        assert (await _sign_in(client, account.email)).status_code == 201


async def test_password_change_ends_other_sessions(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    mine = await _token(runtime, account)
    other = await _token(runtime, account)
    wrong = await client.post(
        "/api/v1/accounts/me/password",
        headers=_bearer(mine),
        json={"current_password": "not it at all", "new_password": "a brand new password"},
    )
    assert wrong.status_code == 422
    assert wrong.json()["field"] == "current_password"
    weak = await client.post(
        "/api/v1/accounts/me/password",
        headers=_bearer(mine),
        json={"current_password": DEFAULT_PASSWORD, "new_password": "short"},
    )
    assert weak.status_code == 422
    changed = await client.post(
        "/api/v1/accounts/me/password",
        headers=_bearer(mine),
        json={"current_password": DEFAULT_PASSWORD, "new_password": "a brand new password"},
    )
    assert changed.status_code == 204
    assert (await client.get("/api/v1/accounts/me", headers=_bearer(mine))).status_code == 200
    assert (await client.get("/api/v1/accounts/me", headers=_bearer(other))).status_code == 401
    assert (await _sign_in(client, account.email)).status_code == 401
    assert (await _sign_in(client, account.email, "a brand new password")).status_code == 201


# Two-factor.


async def test_totp_enrol_confirm_sign_in_and_replay(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    auth = _bearer(await _token(runtime, account))
    started = await client.post("/api/v1/accounts/me/totp", headers=auth)
    assert started.status_code == 200, started.text
    enrolment = started.json()
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/")
    assert "<svg" in enrolment["qr_svg"]
    totp = pyotp.TOTP(enrolment["secret"])

    bad = await client.post("/api/v1/accounts/me/totp/confirm", headers=auth, json={"code": "12"})
    assert bad.status_code == 422
    code = totp.now()
    confirmed = await client.post(
        "/api/v1/accounts/me/totp/confirm", headers=auth, json={"code": code}
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["totp_enabled"] is True

    no_code = await _sign_in(client, account.email)
    assert no_code.status_code == 401
    assert no_code.json()["totp_required"] is True
    replay = await _sign_in(client, account.email, totp_code=code)
    assert replay.status_code == 401
    assert replay.json()["totp_required"] is True
    next_code = totp.at(utcnow() + timedelta(seconds=totp.interval))
    ok = await _sign_in(client, account.email, totp_code=next_code)
    assert ok.status_code == 201, ok.text
    again = await _sign_in(client, account.email, totp_code=next_code)
    assert again.status_code == 401

    off = await client.request(
        "DELETE", "/api/v1/accounts/me/totp", headers=auth, json={"code": next_code}
    )
    assert off.status_code == 422  # used already
    off = await client.request(
        "DELETE",
        "/api/v1/accounts/me/totp",
        headers=auth,
        json={"code": totp.at(utcnow() + timedelta(seconds=2 * totp.interval))},
    )
    assert off.status_code == 422  # outside the window


async def test_totp_confirm_without_enrolment_is_409(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account = await _account(runtime)
    response = await client.post(
        "/api/v1/accounts/me/totp/confirm",
        headers=_bearer(await _token(runtime, account)),
        json={"code": "123456"},
    )
    assert response.status_code == 409
    assert "enrolment" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/v1/accounts/verify-email", '{"token": "\\ud800"}'),
        ("/api/v1/sessions", '{"email": "a@example.com", "password": "\\ud800abcdefghijk"}'),
        (
            "/api/v1/accounts",
            '{"email": "a@example.com", "password": "nul\\u0000nul\\u0000xx",'
            ' "accept_terms_version": "2026-11"}',
        ),
    ],
)
async def test_text_the_hashers_cannot_take_is_422(
    client: httpx.AsyncClient, path: str, raw: str
) -> None:
    response = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
