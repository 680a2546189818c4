"""Getting back in through the web: the forgotten-password pages (the emailed link opens a page),
a recovery code at the log-in's code step, and the account page's count of codes left."""

from __future__ import annotations

import re

import httpx
import pyotp

from burrow.control.runtime import Runtime
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import DEFAULT_PASSWORD, unique_email
from tests.support.smtp import Inbox, SmtpServer
from tests.support.web import field_error, post_form

NEW_PASSWORD = "a brand new passphrase"


async def test_a_forgotten_password_through_the_pages(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer, smtp: SmtpServer
) -> None:
    customer = await web_customer(sign_in=False)
    email = customer.account.email
    login = await client.get("/login")
    assert 'href="/forgot-password"' in login.text

    bad = await post_form(client, "/forgot-password", {"email": "not an address"})
    assert bad.status_code == 422
    assert field_error(bad, "email")
    known = await post_form(client, "/forgot-password", {"email": email})
    unknown = await post_form(client, "/forgot-password", {"email": unique_email("nobody")})
    assert known.status_code == unknown.status_code == 200
    assert "a link to set a new password is on its way" in known.text
    assert known.text.replace(email, "X").count("on its way") == 1
    # The two pages differ only by the address typed.
    said = re.compile(r'id="reset-requested"[^>]*>If an account uses [^ ]+ (.*?)</p>', re.S)
    assert said.findall(known.text) == said.findall(unknown.text)

    body = Inbox.body((await smtp.inbox.arrived(email))[0])
    link = re.search(r"http://testserver(/reset-password\?token=[\w-]+)", body)
    assert link is not None, body
    page = await client.get(link.group(1))
    assert page.status_code == 200
    assert email in page.text
    token = re.search(r'name="token" value="([\w-]+)"', page.text)
    assert token is not None
    weak = await post_form(
        client,
        "/reset-password",
        {"token": token.group(1), "new_password": "short"},
        page=link.group(1),
    )
    assert weak.status_code == 422
    assert field_error(weak, "new_password")
    done = await post_form(
        client,
        "/reset-password",
        {"token": token.group(1), "new_password": NEW_PASSWORD},
        page=link.group(1),
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/login")
    # The old session ended with the password change.
    client.cookies.set("burrow_session", customer.token)
    assert (await client.get("/account")).status_code == 303
    client.cookies.clear()
    used = await client.get(link.group(1))
    assert used.status_code == 410
    assert "already used" in used.text
    nothing = await client.get("/reset-password")
    assert nothing.status_code == 400
    signed_in = await post_form(client, "/login", {"email": email, "password": NEW_PASSWORD})
    assert signed_in.status_code == 303
    assert not signed_in.headers["location"].startswith("/login")


async def test_a_recovery_code_at_the_code_step_and_the_count_left(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    await post_form(client, "/account/two-factor/start", page="/account")
    page = await client.get("/account/two-factor")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret is not None
    totp = pyotp.TOTP(secret.group(1))
    shown = await post_form(
        client, "/account/two-factor/confirm", {"code": totp.now()}, page="/account/two-factor"
    )
    codes = re.findall(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", shown.text)
    assert len(codes) == 10
    assert shown.headers["cache-control"] == "no-store"
    assert "10 unused recovery codes" in (await client.get("/account")).text

    await post_form(client, "/logout", page="/account")
    first = await post_form(
        client, "/login", {"email": customer.account.email, "password": DEFAULT_PASSWORD}
    )
    assert first.headers["location"].startswith("/login/totp")
    step = await client.get(first.headers["location"])
    assert "recovery code" in step.text
    nonsense = await post_form(client, "/login/totp", {"totp_code": "abc"}, page="/login/totp")
    assert nonsense.status_code == 422
    assert "recovery code" in (field_error(nonsense, "totp_code") or "")
    done = await post_form(client, "/login/totp", {"totp_code": codes[3]}, page="/login/totp")
    assert done.status_code == 303, done.text
    account = await client.get("/account")
    assert account.status_code == 200
    assert "9 unused recovery codes" in account.text

    # The same code a second time is refused at the code step.
    await post_form(client, "/logout", page="/account")
    await post_form(
        client, "/login", {"email": customer.account.email, "password": DEFAULT_PASSWORD}
    )
    again = await post_form(client, "/login/totp", {"totp_code": codes[3]}, page="/login/totp")
    assert again.status_code == 401
    assert "already used" in (field_error(again, "totp_code") or "")
