"""Sign up, verification, log in with and without two-factor, log out, password, two-factor."""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest

from burrow.control.accounts.service import account as account_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.deps import SESSION_COOKIE
from burrow.control.mail import Mailer
from burrow.control.runtime import Runtime
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import DEFAULT_PASSWORD, create_session_token
from tests.support.smtp import Inbox, SmtpServer
from tests.support.web import field_error, field_value, post_form


async def _signup(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await post_form(client, "/signup", fields)


async def test_signup_says_check_your_mail_and_the_emailed_link_verifies(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    response = await _signup(
        client,
        email="New.Person@Example.com",
        password="a long enough password",
        accept_terms=runtime.policy.terms.version,
    )
    assert response.status_code == 303, response.text
    # Not signed in: a taken address gets this same answer, so a new one cannot differ.
    assert response.headers["location"] == "/login"
    assert SESSION_COOKIE not in client.cookies
    login = await client.get("/login")
    assert "Check your mail: we sent a message to new.person@example.com" in login.text
    signed_in = await post_form(
        client, "/login", {"email": "new.person@example.com", "password": "a long enough password"}
    )
    assert signed_in.status_code == 303, signed_in.text

    text = Inbox.body(smtp.inbox.wait_for("new.person@example.com")[0])
    token = re.search(r"token=(\S+)", text)
    assert token is not None
    landing = await client.get("/verify-email", params={"token": token.group(1)})
    assert landing.status_code == 200
    assert "new.person@example.com is verified" in landing.text
    again = await client.get("/verify-email", params={"token": token.group(1)})
    assert again.status_code == 410
    assert "already used" in again.text
    assert "Yes, on" in (await client.get("/account")).text


async def test_bad_signup_keeps_the_form_and_shows_the_apis_message_by_the_field(
    client: httpx.AsyncClient,
) -> None:
    response = await _signup(client, email="someone@example.com", password="short")
    assert response.status_code == 422
    api = await client.post(
        "/api/v1/accounts",
        json={"email": "someone@example.com", "password": "short", "accept_terms_version": "x"},
    )
    api_messages = {e["field"]: e["message"] for e in api.json()["errors"]}
    # The same words as the API's validation of AccountCreate, next to the field.
    assert field_error(response, "password") == api_messages["password"]
    assert "at least 10" in api_messages["password"]
    assert field_error(response, "accept_terms") is not None
    assert field_value(response, "email") == "someone@example.com"
    assert field_value(response, "password") == ""  # never sent back

    bad_email = await _signup(client, email="not-an-address", password="x" * 12, accept_terms="1")
    assert "such as name@example.com" in (field_error(bad_email, "email") or "")


async def test_signup_with_a_taken_email_answers_as_for_a_new_one(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer, smtp: SmtpServer
) -> None:
    existing = await web_customer(sign_in=False)
    answers = []
    for email in ("someone.new@example.com", existing.account.email):
        response = await _signup(
            client,
            email=email,
            password="a long enough password",
            accept_terms=runtime.policy.terms.version,
        )
        page = await client.get(response.headers["location"])
        answers.append(
            (response.status_code, response.headers["location"], page.text.replace(email, "@"))
        )
        assert SESSION_COOKIE not in client.cookies
    assert answers[0] == answers[1]
    assert "already" not in answers[1][2]
    notice = smtp.inbox.wait_for(existing.account.email)[0]
    assert "/forgot-password" in Inbox.body(notice)


async def test_sessions_page_lists_and_ends_my_sessions(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as s:
        other = await create_session_token(s, customer.account)
    page = await client.get("/account/sessions")
    assert page.status_code == 200, page.text
    ids = re.findall(r'<tr id="session-(\d+)"', page.text)
    assert len(ids) == 2
    assert page.text.count("This session") == 1
    current = re.search(r'<tr id="session-(\d+)">\s*<td[^>]*>[^<]*<span class="badge', page.text)
    assert current is not None
    other_id = next(i for i in ids if i != current.group(1))

    ended = await post_form(client, f"/account/sessions/{other_id}/end", page="/account/sessions")
    assert ended.status_code == 303
    assert ended.headers["location"] == "/account/sessions"
    me = await client.get("/api/v1/accounts/me", headers={"Authorization": f"Bearer {other}"})
    assert me.status_code == 401
    # Another's (or a gone) session: a message, nothing ended.
    gone = await post_form(client, f"/account/sessions/{other_id}/end", page="/account/sessions")
    assert gone.status_code == 303
    assert "no such session" in (await client.get("/account/sessions")).text

    mine = await post_form(
        client, f"/account/sessions/{current.group(1)}/end", page="/account/sessions"
    )
    assert mine.headers["location"] == "/login"
    assert (await client.get("/account")).status_code in (303, 401)


async def test_login_logout_and_wrong_password(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer(sign_in=False)
    wrong = await post_form(
        client, "/login", {"email": customer.account.email, "password": "not it"}
    )
    assert wrong.status_code == 401
    assert "Wrong email or password." in wrong.text
    assert field_value(wrong, "email") == customer.account.email

    ok = await post_form(
        client,
        "/login",
        {"email": customer.account.email, "password": DEFAULT_PASSWORD, "next": "/account"},
        page="/login?next=/account",
    )
    assert ok.status_code == 303
    assert ok.headers["location"] == "/account"
    assert (await client.get("/account")).status_code == 200

    out = await post_form(client, "/logout", page="/account")
    assert out.status_code == 303
    assert (await client.get("/account")).status_code == 303


async def test_two_factor_from_enrolment_to_login(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    started = await post_form(client, "/account/two-factor/start", page="/account")
    assert started.headers["location"] == "/account/two-factor"
    page = await client.get("/account/two-factor")
    assert "<svg" in page.text
    secret_match = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret_match is not None
    totp = pyotp.TOTP(secret_match.group(1))

    wrong = await post_form(
        client, "/account/two-factor/confirm", {"code": "000000"}, page="/account/two-factor"
    )
    assert wrong.status_code == 422
    assert "not right" in (field_error(wrong, "code") or "")
    assert "<svg" in wrong.text  # the same QR code, to try again

    confirmed = await post_form(
        client,
        "/account/two-factor/confirm",
        {"code": totp.now()},
        page="/account/two-factor",
    )
    assert confirmed.status_code == 200
    assert "Two-factor sign-in is on" in confirmed.text
    assert len(re.findall(r"<li><code>[a-z2-9]{5}-[a-z2-9]{5}</code></li>", confirmed.text)) == 10
    assert "10 unused recovery codes" in (await client.get("/account")).text

    await post_form(client, "/logout", page="/account")
    first = await post_form(
        client, "/login", {"email": customer.account.email, "password": DEFAULT_PASSWORD}
    )
    assert first.headers["location"].startswith("/login/totp")
    # Waiting for the code: nothing else is reachable.
    blocked = await client.get("/account")
    assert blocked.status_code == 303
    assert blocked.headers["location"].startswith("/login")
    bad = await post_form(client, "/login/totp", {"totp_code": "12"}, page="/login/totp")
    assert bad.status_code == 422
    assert field_error(bad, "totp_code")
    # The code used to confirm enrolment cannot be used again; the next step's code can.
    code = totp.at(totp.timecode(__import__("datetime").datetime.now()) * 30 + 30)
    done = await post_form(client, "/login/totp", {"totp_code": code}, page="/login/totp")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/dashboard"
    assert (await client.get("/account")).status_code == 200


async def test_change_password_shows_errors_by_the_field(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    wrong = await post_form(
        client,
        "/account/password",
        {"current_password": "nope", "new_password": "another long password"},
        page="/account",
    )
    assert wrong.status_code == 422
    assert field_error(wrong, "current_password") == "Your current password is not right."
    ok = await post_form(
        client,
        "/account/password",
        {"current_password": DEFAULT_PASSWORD, "new_password": "another long password"},
        page="/account",
    )
    assert ok.status_code == 303
    assert "Your password is changed" in (await client.get("/account")).text


async def test_log_out_everywhere_ends_other_sessions(
    client: httpx.AsyncClient, app: object, web_customer: MakeWebCustomer, runtime: Runtime
) -> None:
    customer = await web_customer()
    api = await client.get(
        "/api/v1/accounts/me", headers={"Authorization": f"Bearer {customer.token}"}
    )
    assert api.status_code == 200
    done = await post_form(client, "/logout-everywhere", page="/account")
    assert done.status_code == 303
    assert urlsplit(done.headers["location"]).path == "/login"
    client.cookies.clear()
    after = await client.get(
        "/api/v1/accounts/me", headers={"Authorization": f"Bearer {customer.token}"}
    )
    assert after.status_code == 401


async def test_turning_two_factor_off_needs_a_current_code(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer(two_factor=True)
    page = await client.get("/account")
    assert 'id="totp-disable"' in page.text
    wrong = await post_form(
        client, "/account/two-factor/disable", {"code": "123456"}, page="/account"
    )
    assert wrong.status_code == 422
    assert "not right" in (field_error(wrong, "code") or "")
    assert customer.account.totp_secret is not None
    code = pyotp.TOTP(customer.account.totp_secret).now()
    done = await post_form(client, "/account/two-factor/disable", {"code": code}, page="/account")
    assert done.status_code == 303
    assert "Two-factor sign-in is off." in (await client.get("/account")).text
    async with unit_of_work(runtime.sessionmaker) as session:
        assert not (await account_service.get(session, customer.account.id)).totp_enabled


class TestAgeAttestationRequired:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        metered = Path(__file__).resolve().parents[3] / "examples" / "policies" / "metered.toml"
        return settings.model_copy(update={"policy_path": metered})

    async def test_signup_asks_for_the_age_and_keeps_the_form(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        page = await client.get("/signup")
        assert "Your age</legend>" in page.text
        assert 'id="f-age-adult"' in page.text
        fields = {
            "email": "young@example.com",
            "password": "a long enough password",
            "accept_terms": runtime.policy.terms.version,
        }
        refused = await _signup(client, **fields)
        assert refused.status_code == 422
        assert "Confirm your age" in (field_error(refused, "age_attestation") or "")
        assert 'id="f-accept_terms" name="accept_terms"' in refused.text
        assert "checked" in refused.text.split('id="f-accept_terms"')[1].split(">")[0]
        accepted = await _signup(client, **fields, age_attestation="adult")
        assert accepted.status_code == 303


async def test_in_development_without_smtp_the_link_is_in_the_servers_output(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert 'id="mail-to-output"' not in (await client.get("/signup")).text  # SMTP is set
    development = Settings(
        **runtime.settings.model_dump(exclude={"environment", "smtp_host", "smtp_port"})
    )
    assert development.environment == "development"
    runtime.settings = development
    runtime.mailer = Mailer(development)

    page = await client.get("/signup")
    notice = re.search(r'id="mail-to-output">(.*?)</p>', page.text, re.S)
    assert notice is not None
    assert "server's output" in html.unescape(notice.group(1))
    with caplog.at_level(logging.WARNING, logger="burrow.control.mail"):
        response = await _signup(
            client,
            email="dev@example.com",
            password="a long enough password",
            accept_terms=runtime.policy.terms.version,
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/login"
        login = await client.get("/login")
    shown = html.unescape(login.text)
    assert "we sent" not in shown.lower()
    assert "the message to dev@example.com is in the server's output" in shown
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(r"/verify-email\?token=\S+", logged), logged
    assert smtp.inbox.to("dev@example.com") == []


async def test_no_age_question_when_the_policy_asks_none(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert not runtime.policy.age.attestation_required
    page = await client.get("/signup")
    assert "Your age" not in page.text
    assert 'name="age_attestation"' not in page.text
