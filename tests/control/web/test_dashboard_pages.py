"""The dashboard: plan, status, what happens next; cancel with a confirmation, resume, trial."""

from __future__ import annotations

from datetime import timedelta

import httpx

from burrow.control.accounts.service import account as account_service
from burrow.control.audit.service import CliOperator
from burrow.control.db import unit_of_work
from burrow.control.models import SubscriptionStatus, utcnow
from burrow.control.runtime import Runtime
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import create_subscription
from tests.support.web import post_form


async def test_start_page_sends_to_login_or_dashboard(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    assert (await client.get("/")).headers["location"] == "/login"
    await web_customer()
    assert (await client.get("/")).headers["location"] == "/dashboard"


async def test_cancel_confirms_the_end_date_and_resume_undoes_it(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert "Personal, 1 month" in page.text
    end = (utcnow() + timedelta(days=30)).date().isoformat()
    assert f"Renews on {end}" in page.text

    confirm = await client.get("/dashboard/cancel")
    assert confirm.status_code == 200
    assert 'id="access-ends"' in confirm.text
    assert "you keep access to Personal, 1 month until" in confirm.text

    done = await post_form(client, "/dashboard/cancel", page="/dashboard/cancel")
    assert done.status_code == 303
    after = await client.get("/dashboard")
    assert f"Cancelled. You keep access until {end}" in after.text
    assert f"Ends on {end} because you cancelled" in after.text
    assert 'id="resume-subscription"' in after.text

    resumed = await post_form(client, "/dashboard/resume", page="/dashboard")
    assert resumed.status_code == 303
    again = await client.get("/dashboard")
    assert "Resumed." in again.text
    assert f"Renews on {end}" in again.text


async def test_past_due_shows_the_grace_end(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer(None)
    async with unit_of_work(runtime.sessionmaker) as session:
        sub = await create_subscription(
            session, customer.account, status=SubscriptionStatus.past_due
        )
        sub.grace_until = utcnow() + timedelta(days=3)
    page = await client.get("/dashboard")
    assert "Payment failed" in page.text
    assert 'id="grace-end"' in page.text
    assert "access continues until" in page.text


async def test_no_plan_offers_the_trial_and_its_refusal_is_a_message(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer(None)
    page = await client.get("/dashboard")
    assert 'id="start-trial"' in page.text
    started = await post_form(client, "/dashboard/trial", page="/dashboard")
    assert started.status_code == 303
    after = await client.get("/dashboard")
    assert "Your free trial of Personal, 1 month has started" in after.text
    assert "Trial ends" in after.text
    # A second trial is refused with the service's words, on the page.
    await post_form(client, "/dashboard/cancel", page="/dashboard/cancel")
    refused = await post_form(client, "/dashboard/trial", page="/dashboard")
    assert refused.status_code == 303
    assert "notice-error" in (await client.get("/dashboard")).text


async def test_nothing_to_cancel_without_a_plan(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer(None)
    response = await client.get("/dashboard/cancel")
    assert response.headers["location"] == "/dashboard"
    posted = await post_form(client, "/dashboard/cancel", page="/dashboard")
    assert posted.status_code == 303
    assert "You have no subscription yet" in (await client.get("/dashboard")).text


async def test_a_suspended_account_is_told_why_its_devices_cannot_connect(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        await account_service.suspend(
            session, runtime, CliOperator("ops"), customer.account.id, "Unpaid invoice"
        )
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert "Your account is suspended: Unpaid invoice." in page.text


async def test_a_suspension_reason_ending_in_a_full_stop_gets_no_second_one(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        await account_service.suspend(
            session,
            runtime,
            CliOperator("ops"),
            customer.account.id,
            "Chargeback on your last payment.",
        )
    page = await client.get("/dashboard")
    assert "Your account is suspended: Chargeback on your last payment. Your devices" in page.text
    assert ".." not in page.text
