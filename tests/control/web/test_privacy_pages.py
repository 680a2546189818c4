"""The privacy center's pages with httpx form posts: download, email change, billing details,
consents, requests, and deleting the account after reading what is kept."""

from __future__ import annotations

import json
import re

import httpx
import pyotp
from sqlalchemy import func, select

from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    AccountStatus,
    Device,
    Order,
    OrderKind,
    OrderStatus,
    PaymentMethod,
    ServedPeer,
    utcnow,
)
from burrow.control.privacy.service import retention_statement
from burrow.control.runtime import Runtime
from tests.control.web.conftest import MakeWebCustomer
from tests.support import factories
from tests.support.smtp import Inbox, SmtpServer
from tests.support.web import field_error, field_value, post_form


async def _account(runtime: Runtime, account_id: int) -> Account:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, account_id)
        assert account is not None
        return account


async def test_the_privacy_page_downloads_the_export(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    page = await client.get("/privacy")
    assert page.status_code == 200
    assert 'id="export-download"' in page.text
    assert customer.account.email in page.text
    download = await post_form(client, "/privacy/export", page="/privacy")
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith("attachment;")
    document = json.loads(download.text)
    assert document["account"]["id"] == customer.account.id
    assert [s["plan_id"] for s in document["subscriptions"]]
    # The download is recorded as an access request, answered at once.
    listed = await client.get("/privacy")
    done = r"<td[^>]*>access</td>\s*<td[^>]*><span class=\"badge badge-ok\">done"
    assert re.search(done, listed.text)


async def test_a_signed_out_browser_is_sent_to_log_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/privacy/delete")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/privacy/delete"


async def test_changing_the_email_shows_errors_by_the_field_then_sends_the_link(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    old = customer.account.email
    bad = await post_form(
        client, "/privacy/email", {"new_email": "not an address", "password": "x"}
    )
    assert bad.status_code == 422
    assert field_error(bad, "new_email") is not None
    assert field_value(bad, "new_email") == "not an address"
    new = factories.unique_email("webmove")
    wrong = await post_form(
        client, "/privacy/email", {"new_email": new, "password": "not my password"}
    )
    assert wrong.status_code == 422
    assert field_error(wrong, "password") == "Your current password is not right."
    assert field_value(wrong, "password") == ""  # never sent back
    assert field_value(wrong, "new_email") == new
    sent = await post_form(
        client, "/privacy/email", {"new_email": new, "password": factories.DEFAULT_PASSWORD}
    )
    assert sent.status_code == 303
    assert (await _account(runtime, customer.account.id)).email == old
    token = re.search(r"token=(\S+)", Inbox.body(smtp.inbox.wait_for(new)[0]))
    assert token is not None
    landing = await client.get("/verify-email", params={"token": token.group(1)})
    assert landing.status_code == 200
    assert new in landing.text
    assert (await _account(runtime, customer.account.id)).email == new
    assert "was changed" in str(smtp.inbox.wait_for(old)[0]["Subject"])


async def test_billing_details_are_kept_only_for_paying_customers(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    fields = {"country": "nl", "city": "Utrecht", "postal_code": "3511 AA"}
    refused = await post_form(client, "/privacy/billing", fields)
    assert refused.status_code == 403
    assert "only for paid accounts" in refused.text
    async with unit_of_work(runtime.sessionmaker) as session:
        plan = await factories.get_plan(session, "personal-monthly")
        session.add(
            Order(
                account_id=customer.account.id,
                plan_id=plan.id,
                kind=OrderKind.first,
                amount_minor=plan.price_minor,
                currency=plan.currency,
                payment_method=PaymentMethod.manual,
                status=OrderStatus.paid,
                period_months=1,
                paid_at=utcnow(),
                provider="manual",
            )
        )
    bad = await post_form(client, "/privacy/billing", {**fields, "country": "Netherlands"})
    assert bad.status_code == 422
    assert field_error(bad, "country") is not None
    assert field_value(bad, "city") == "Utrecht"
    saved = await post_form(client, "/privacy/billing", fields)
    assert saved.status_code == 303
    shown = await client.get("/privacy/billing")
    assert field_value(shown, "country") == "NL"
    assert field_value(shown, "postal_code") == "3511 AA"


async def test_consents_are_toggled_and_shown_with_their_time(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    given = await post_form(
        client, "/privacy/consents", {"marketing_email": "yes"}, page="/privacy"
    )
    assert given.status_code == 303
    page = await client.get("/privacy")
    assert re.search(r'id="consent-marketing_email"[^>]*checked', page.text)
    assert not re.search(r'id="consent-product_analytics"[^>]*checked', page.text)
    assert "Given on" in page.text
    withdrawn = await post_form(client, "/privacy/consents", {}, page="/privacy")
    assert withdrawn.status_code == 303
    page = await client.get("/privacy")
    assert not re.search(r'id="consent-marketing_email"[^>]*checked', page.text)
    assert "Withdrawn on" in page.text


async def test_a_request_is_listed_with_its_deadline(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    empty = await post_form(
        client, "/privacy/requests", {"kind": "objection", "details": ""}, page="/privacy"
    )
    assert empty.status_code == 422
    assert field_error(empty, "details") is not None
    made = await post_form(
        client,
        "/privacy/requests",
        {"kind": "objection", "details": "I object to profiling."},
        page="/privacy",
    )
    assert made.status_code == 303
    page = await client.get("/privacy")
    assert "I object to profiling." in page.text
    assert "badge-warn" in page.text


async def test_deleting_the_account_says_what_is_kept_and_needs_a_confirmation(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        await factories.create_device(session, customer.account)
    page = await client.get("/privacy/delete")
    assert page.status_code == 200
    for line in retention_statement(runtime.policy):
        assert line.split(":")[0] in page.text
    unconfirmed = await post_form(
        client, "/privacy/delete", {"password": factories.DEFAULT_PASSWORD}
    )
    assert unconfirmed.status_code == 422
    assert field_error(unconfirmed, "confirm") is not None
    wrong = await post_form(
        client, "/privacy/delete", {"password": "not my password", "confirm": "yes"}
    )
    assert wrong.status_code == 422
    assert field_error(wrong, "password") == "Your current password is not right."
    assert (await _account(runtime, customer.account.id)).status is AccountStatus.active

    done = await post_form(
        client, "/privacy/delete", {"password": factories.DEFAULT_PASSWORD, "confirm": "yes"}
    )
    assert done.status_code == 200, done.text
    assert 'id="deleted"' in done.text
    assert 'id="logout"' not in done.text
    assert 'burrow_session=""' in done.headers["set-cookie"]
    erased = await _account(runtime, customer.account.id)
    assert erased.status is AccountStatus.erased
    async with unit_of_work(runtime.sessionmaker) as session:
        for model in (Device, ServedPeer):
            count = await session.scalar(
                select(func.count()).select_from(model).where(model.account_id == erased.id)
            )
            assert count == 0
    after = await client.get("/privacy")
    assert after.status_code == 303


async def test_deleting_with_two_factor_asks_for_the_code(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer(two_factor=True)
    page = await client.get("/privacy/delete")
    assert 'id="f-totp_code"' in page.text
    missing = await post_form(
        client, "/privacy/delete", {"password": factories.DEFAULT_PASSWORD, "confirm": "yes"}
    )
    assert missing.status_code == 401
    assert field_error(missing, "totp_code") is not None
    assert customer.account.totp_secret is not None
    code = pyotp.TOTP(customer.account.totp_secret).now()
    done = await post_form(
        client,
        "/privacy/delete",
        {"password": factories.DEFAULT_PASSWORD, "confirm": "yes", "totp_code": code},
    )
    assert done.status_code == 200
