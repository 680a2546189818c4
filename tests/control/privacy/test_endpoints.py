"""The privacy center through the real app: export download, email change by link, erasure,
consents, requests and the admin queue; the last-login IP kept only where the policy says."""

from __future__ import annotations

import logging
import re

import httpx
import pyotp
import pytest
from sqlalchemy import select

from burrow.control.accounts.service import account as account_service
from burrow.control.db import unit_of_work
from burrow.control.models import Account, AccountStatus, EmailVerification
from burrow.control.runtime import Runtime
from tests.control.privacy.conftest import Customer
from tests.support import factories
from tests.support.smtp import Inbox, SmtpServer

PROBLEM = "application/problem+json"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _customer(runtime: Runtime, **kwargs: object) -> tuple[Account, str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await factories.create_account(session, **kwargs)  # type: ignore[arg-type]
        await factories.create_subscription(session, account)
        return account, await factories.create_session_token(session, account)


async def _account(runtime: Runtime, account_id: int) -> Account:
    async with unit_of_work(runtime.sessionmaker) as session:
        return await account_service.get(session, account_id)


async def test_the_export_downloads_as_a_json_file(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    response = await client.get("/api/v1/privacy/export", headers=_bearer(customer.token))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert f"burrow-export-{customer.account.id}-" in disposition
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert document["format"] == "burrow-export/1"
    assert document["account"]["email"] == customer.email
    assert len(document["devices"]) == 2
    assert document["orders"][0]["id"] == customer.order.id
    assert "password_hash" not in response.text


async def test_email_change_takes_effect_only_when_the_link_is_used(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account, token = await _customer(runtime)
    old = account.email
    new = factories.unique_email("moved")
    wrong = await client.post(
        "/api/v1/privacy/email",
        headers=_bearer(token),
        json={"new_email": new, "password": "not my password"},
    )
    assert wrong.status_code == 422
    assert wrong.headers["content-type"] == PROBLEM
    assert wrong.json()["field"] == "password"

    asked = await client.post(
        "/api/v1/privacy/email",
        headers=_bearer(token),
        json={"new_email": f"  {new.upper()} ", "password": factories.DEFAULT_PASSWORD},
    )
    assert asked.status_code == 202, asked.text
    assert new in asked.json()["detail"]
    assert (await _account(runtime, account.id)).email == old  # not yet

    message = smtp.inbox.wait_for(new)[0]
    link = re.search(r"http://testserver\S+", Inbox.body(message))
    assert link is not None
    assert link.group(0).startswith("http://testserver/verify-email?token=")  # the web page
    used = await client.get(link.group(0).removeprefix("http://testserver"))
    assert used.status_code == 200, used.text
    assert f"{new} is verified" in used.text
    changed = await _account(runtime, account.id)
    assert changed.email == new
    assert changed.email_verified_at is not None
    notice = smtp.inbox.wait_for(old)[0]
    assert "was changed" in str(notice["Subject"])
    assert new in Inbox.body(notice)

    token = link.group(0).partition("?")[2]
    again = await client.get(f"/api/v1/accounts/verify-email?{token}")  # the API refuses reuse
    assert again.status_code == 410
    signed_in = await client.post(
        "/api/v1/sessions", json={"email": new, "password": factories.DEFAULT_PASSWORD}
    )
    assert signed_in.status_code == 201
    old_sign_in = await client.post(
        "/api/v1/sessions", json={"email": old, "password": factories.DEFAULT_PASSWORD}
    )
    assert old_sign_in.status_code == 401


async def test_email_change_to_a_taken_address_is_refused_then_and_at_the_link(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account, token = await _customer(runtime)
    other, _ = await _customer(runtime)
    taken = await client.post(
        "/api/v1/privacy/email",
        headers=_bearer(token),
        json={"new_email": other.email, "password": factories.DEFAULT_PASSWORD},
    )
    assert taken.status_code == 409
    assert taken.json()["field"] == "email"
    same = await client.post(
        "/api/v1/privacy/email",
        headers=_bearer(token),
        json={"new_email": account.email, "password": factories.DEFAULT_PASSWORD},
    )
    assert same.status_code == 422
    # Free when asked, taken by a sign-up before the link is used.
    new = factories.unique_email("race")
    asked = await client.post(
        "/api/v1/privacy/email",
        headers=_bearer(token),
        json={"new_email": new, "password": factories.DEFAULT_PASSWORD},
    )
    assert asked.status_code == 202
    await _customer(runtime, email=new)
    link = re.search(r"http://testserver\S+", Inbox.body(smtp.inbox.wait_for(new)[0]))
    assert link is not None
    late = await client.get(link.group(0).removeprefix("http://testserver"))
    assert late.status_code == 409
    assert (await _account(runtime, account.id)).email == account.email


async def test_an_older_link_cannot_undo_a_change(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    """Asking for a change voids every earlier link, so no stale link can move the address."""
    account, token = await _customer(runtime, verified=False)
    await client.post("/api/v1/accounts/me/verification-email", headers=_bearer(token))
    first = re.search(r"http://testserver\S+", Inbox.body(smtp.inbox.wait_for(account.email)[0]))
    assert first is not None
    new = factories.unique_email("second")
    await client.post(
        "/api/v1/privacy/email",
        headers=_bearer(token),
        json={"new_email": new, "password": factories.DEFAULT_PASSWORD},
    )
    stale = await client.get(first.group(0).removeprefix("http://testserver"))
    assert stale.status_code == 410
    async with unit_of_work(runtime.sessionmaker) as session:
        live = (
            await session.scalars(
                select(EmailVerification).where(EmailVerification.account_id == account.id)
            )
        ).all()
    assert [row.email for row in live if row.used_at is None][-1] == new


async def test_erasure_ends_every_session_and_sign_in(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer, customer: Customer
) -> None:
    auth = _bearer(customer.token)
    unconfirmed = await client.post(
        "/api/v1/privacy/erase", headers=auth, json={"password": factories.DEFAULT_PASSWORD}
    )
    assert unconfirmed.status_code == 422
    assert unconfirmed.headers["content-type"] == PROBLEM
    wrong = await client.post(
        "/api/v1/privacy/erase", headers=auth, json={"password": "nope", "confirm": True}
    )
    assert wrong.status_code == 422
    assert wrong.json()["field"] == "password"
    retention = await client.get("/api/v1/privacy/retention", headers=auth)
    assert retention.status_code == 200
    erased = await client.post(
        "/api/v1/privacy/erase",
        headers=auth,
        json={"password": factories.DEFAULT_PASSWORD, "confirm": True},
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["retention"] == retention.json()["statements"]
    assert "burrow_session=" in erased.headers["set-cookie"]
    assert (await client.get("/api/v1/accounts/me", headers=auth)).status_code == 401
    sign_in = await client.post(
        "/api/v1/sessions",
        json={"email": customer.email, "password": factories.DEFAULT_PASSWORD},
    )
    assert sign_in.status_code == 401
    assert (await _account(runtime, customer.account.id)).status is AccountStatus.erased
    goodbye = smtp.inbox.wait_for(customer.email)[-1]
    assert "was deleted" in str(goodbye["Subject"])


async def test_erasure_with_two_factor_needs_the_code(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    account, token = await _customer(runtime)
    secret = pyotp.random_base32()
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await account_service.get(session, account.id)
        row.totp_secret, row.totp_enabled = secret, True
    body = {"password": factories.DEFAULT_PASSWORD, "confirm": True}
    missing = await client.post("/api/v1/privacy/erase", headers=_bearer(token), json=body)
    assert missing.status_code == 401
    assert missing.json()["totp_required"] is True
    done = await client.post(
        "/api/v1/privacy/erase",
        headers=_bearer(token),
        json={**body, "totp_code": pyotp.TOTP(secret).now()},
    )
    assert done.status_code == 200, done.text


async def test_consents_are_given_and_withdrawn(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, token = await _customer(runtime)
    auth = _bearer(token)
    start = await client.get("/api/v1/privacy/consents", headers=auth)
    assert [(c["purpose"], c["granted"]) for c in start.json()["consents"]] == [
        ("marketing_email", False),
        ("product_analytics", False),
    ]
    given = await client.put(
        "/api/v1/privacy/consents", headers=auth, json={"product_analytics": True}
    )
    assert given.status_code == 200
    states = {c["purpose"]: c for c in given.json()["consents"]}
    assert states["product_analytics"]["granted"] is True
    assert states["product_analytics"]["changed_at"] is not None
    assert states["marketing_email"]["changed_at"] is None
    withdrawn = await client.put(
        "/api/v1/privacy/consents", headers=auth, json={"product_analytics": False}
    )
    assert {c["purpose"]: c["granted"] for c in withdrawn.json()["consents"]} == {
        "marketing_email": False,
        "product_analytics": False,
    }
    bad = await client.put("/api/v1/privacy/consents", headers=auth, json={"tracking": True})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == PROBLEM


async def test_a_request_reaches_the_admin_queue_and_its_answer_the_customer(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    account, token = await _customer(runtime)
    _, admin_token = await _customer(runtime, admin=True)
    made = await client.post(
        "/api/v1/privacy/requests",
        headers=_bearer(token),
        json={"kind": "restriction", "details": "Please stop processing my data for X."},
    )
    assert made.status_code == 201, made.text
    request = made.json()
    assert request["status"] == "pending"
    mine = await client.get("/api/v1/privacy/requests", headers=_bearer(token))
    assert [r["id"] for r in mine.json()] == [request["id"]]

    as_customer = await client.get("/api/v1/admin/privacy-requests", headers=_bearer(token))
    assert as_customer.status_code == 403
    queue = await client.get("/api/v1/admin/privacy-requests", headers=_bearer(admin_token))
    assert queue.status_code == 200
    first = queue.json()[0]
    assert (first["id"], first["account_email"]) == (request["id"], account.email)
    assert first["seconds_left"] > 29 * 86400
    resolved = await client.post(
        f"/api/v1/admin/privacy-requests/{request['id']}/resolve",
        headers=_bearer(admin_token),
        json={"status": "done", "outcome": "Processing for X stopped on 2026-11-22."},
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "done"
    answer = smtp.inbox.wait_for(account.email)[-1]
    assert "Processing for X stopped" in Inbox.body(answer)
    twice = await client.post(
        f"/api/v1/admin/privacy-requests/{request['id']}/resolve",
        headers=_bearer(admin_token),
        json={"status": "refused", "outcome": "no"},
    )
    assert twice.status_code == 409
    missing = await client.post(
        "/api/v1/admin/privacy-requests/999999/resolve",
        headers=_bearer(admin_token),
        json={"status": "done", "outcome": "x"},
    )
    assert missing.status_code == 404


# The last-login IP.


async def _sign_in_from(runtime: Runtime, email: str, address: str) -> httpx.Response:
    from burrow.control.app import create_app

    transport = httpx.ASGITransport(app=create_app(runtime=runtime), client=(address, 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        return await c.post(
            "/api/v1/sessions", json={"email": email, "password": factories.DEFAULT_PASSWORD}
        )


async def test_sign_in_keeps_the_address_only_where_the_policy_allows(
    runtime: Runtime, metered: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # The level `burrow serve` logs at (a driver's DEBUG lines echo every SQL parameter).
    caplog.set_level(logging.INFO)
    assert runtime.policy.privacy.store_last_login_ip  # the strict example keeps it 30 days
    kept, _ = await _customer(runtime)
    response = await _sign_in_from(runtime, kept.email, "203.0.113.50")
    assert response.status_code == 201
    row = await _account(runtime, kept.id)
    assert row.last_login_ip == "203.0.113.50"
    assert row.last_login_ip_at is not None

    assert not metered.policy.privacy.store_last_login_ip
    async with unit_of_work(metered.sessionmaker) as session:
        other = await factories.create_account(session)
    response = await _sign_in_from(metered, other.email, "198.51.100.60")
    assert response.status_code == 201
    row = await _account(metered, other.id)
    assert (row.last_login_ip, row.last_login_ip_at) == (None, None)
    # Neither address reaches a log record, kept or not.
    for record in caplog.records:
        text = record.getMessage()
        assert "203.0.113.50" not in text
        assert "198.51.100.60" not in text
