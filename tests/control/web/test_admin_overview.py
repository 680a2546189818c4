"""The admin overview page: charts drawn on the server as inline SVG over 7, 30 or 90 days,
with the seeded figures, and no script."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pyotp
from sqlalchemy import select

from burrow.control.db import unit_of_work
from burrow.control.models import Account, AdminAction, Order
from burrow.control.runtime import Runtime
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_device,
    create_subscription,
)
from tests.support.web import post_form


async def test_overview_draws_the_seeded_month_as_svg(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer, runtime: Runtime
) -> None:
    await web_customer(None, admin=True, two_factor=True)
    async with unit_of_work(runtime.sessionmaker) as session:
        for n in range(6):
            account = await create_account(session)
            account.created_at = account.created_at - timedelta(days=10 + n)
            device = await create_device(session, account)
            device.created_at = account.created_at
    page = await client.get("/admin")
    assert page.status_code == 200
    assert "<script" not in page.text
    assert "<svg" in page.text
    signups = re.search(r'id="chart-signups" data-total="(\d+)"', page.text)
    # The admin and the six customers, all within 30 days.
    assert signups is not None
    assert int(signups.group(1)) == 7
    devices = re.search(r'id="chart-devices" data-total="(\d+)"', page.text)
    assert devices is not None
    assert int(devices.group(1)) == 6
    assert len(re.findall(r'<rect [^>]*class="chart-bar" data-day=', page.text)) == 6 * 30

    week = await client.get("/admin", params={"days": "7"})
    assert week.status_code == 200
    signups = re.search(r'id="chart-signups" data-total="(\d+)"', week.text)
    assert signups is not None
    assert int(signups.group(1)) == 1
    assert '<strong aria-current="page">7 days</strong>' in week.text

    wrong = await client.get("/admin", params={"days": "12"})
    assert wrong.status_code == 422
    assert "7, 30 or 90 days" in wrong.text


async def test_an_admin_signing_in_lands_on_the_overview(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    secret = pyotp.random_base32()
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        admin.totp_enabled = True
        admin.totp_secret = secret
    first = await post_form(client, "/login", {"email": admin.email, "password": DEFAULT_PASSWORD})
    assert first.status_code == 303
    second = await post_form(
        client,
        "/login/totp",
        {"totp_code": pyotp.TOTP(secret).now(), "next": ""},
        page=first.headers["location"],
    )
    assert second.status_code == 303, second.text
    assert second.headers["location"] == "/admin"
    overview = await client.get("/admin")
    assert overview.status_code == 200
    assert 'id="chart-signups"' in overview.text


async def test_accounts_list_shows_plan_period_and_devices_and_filters_by_plan(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer, runtime: Runtime
) -> None:
    await web_customer(None, admin=True, two_factor=True)
    async with unit_of_work(runtime.sessionmaker) as session:
        yearly = await create_account(session)
        sub = await create_subscription(session, yearly, plan_code="personal-yearly")
        await create_device(session, yearly)
        await create_device(session, yearly)
        business = await create_account(session)
        await create_subscription(session, business, plan_code="business-monthly")
        nothing = await create_account(session)
    listed = await client.get("/admin/accounts")
    assert listed.status_code == 200
    row = re.search(rf'<tr id="account-row-{yearly.id}">(.*?)</tr>', listed.text, re.S)
    assert row is not None
    cells = [
        re.sub(r"<[^>]+>", "", c).strip()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    ]
    assert cells[3] == "Personal, 12 months"
    assert str(sub.current_period_end.year) in cells[4]
    assert cells[5] == "2"
    only = await client.get("/admin/accounts", params={"plan": "business-monthly"})
    assert f"account-row-{business.id}" in only.text
    assert f"account-row-{yearly.id}" not in only.text
    assert f"account-row-{nothing.id}" not in only.text
    assert '<option value="business-monthly" selected>' in only.text


async def test_admin_records_a_manual_payment_from_the_account_page(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer, runtime: Runtime
) -> None:
    admin = (await web_customer(None, admin=True, two_factor=True)).account
    async with unit_of_work(runtime.sessionmaker) as session:
        customer = await create_account(session)
    url = f"/admin/accounts/{customer.id}"
    page = await client.get(url)
    assert 'id="payment-form"' in page.text
    empty = await post_form(client, f"{url}/payment", {"plan_code": "personal-monthly"}, page=url)
    assert empty.status_code == 422
    done = await post_form(
        client,
        f"{url}/payment",
        {"plan_code": "personal-monthly", "amount": "4.99", "reference": "SEPA-2026-0001"},
        page=url,
    )
    assert done.status_code == 303, done.text
    async with unit_of_work(runtime.sessionmaker) as session:
        orders = (await session.scalars(select(Order).where(Order.account_id == customer.id))).all()
        trail = (await session.scalars(select(AdminAction))).all()
    assert [(o.amount_minor, o.status.value) for o in orders] == [(499, "paid")]
    assert [(t.admin_id, t.target_id) for t in trail if t.target_type == "account"] == [
        (admin.id, str(customer.id))
    ]


async def test_a_customer_on_an_admin_page_gets_a_way_out(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    refused = await client.get("/admin/accounts")
    assert refused.status_code == 403
    assert 'id="error-logout"' in refused.text
    assert 'href="/dashboard" class="button button-secondary" id="error-dashboard"' in refused.text
    assert 'id="error-two-factor"' not in refused.text


async def test_an_admin_whose_session_lacks_its_code_gets_a_way_out(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer, runtime: Runtime
) -> None:
    # Two-factor turned on after this session was opened: the session never proved a code.
    made = await web_customer(None, admin=True)
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, made.account.id)
        assert account is not None
        account.totp_secret = pyotp.random_base32()
        account.totp_enabled = True
    refused = await client.get("/admin")
    assert refused.status_code == 403
    assert "Log out and log in again with a code" in refused.text
    assert 'id="error-two-factor"' in refused.text
