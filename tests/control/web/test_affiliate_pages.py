"""The affiliate program's pages: the affiliate's own page (apply, then link, numbers,
commissions by state, chart, payouts, rules) and the admin panel's (applications with refund
rate and balance, decisions, held commissions, payouts)."""

from __future__ import annotations

import html

import httpx
from sqlalchemy import select

from burrow.control.db import unit_of_work
from burrow.control.models import Affiliate, Commission, CommissionStatus
from burrow.control.runtime import Runtime
from tests.control.affiliates.conftest import make_affiliate, make_commission
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import create_account, create_session_token
from tests.support.web import field_error, post_form, sign_in_as


def _text(response: httpx.Response) -> str:
    return html.unescape(response.text)


async def test_apply_then_see_the_link_the_numbers_and_the_rules(
    runtime: Runtime, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    page = await client.get("/affiliate")
    assert page.status_code == 200
    assert 'id="affiliate-apply-form"' in page.text
    assert "Payouts start from a balance of 100.00 USD" in _text(page)
    assert 'href="/affiliate"' in page.text  # in the main navigation

    # The first seed needs the promotional site: said next to the field.
    refused = await post_form(
        client,
        "/affiliate/apply",
        {"contact_name": "Jo", "website": "", "paypal_email": "jo@example.net"},
        page="/affiliate",
    )
    assert refused.status_code == 422
    assert field_error(refused, "website") == (
        "The affiliate program needs the address of your active promotional site."
    )
    applied = await post_form(
        client,
        "/affiliate/apply",
        {
            "contact_name": "Jo",
            "website": "https://jo.example.org/",
            "paypal_email": "jo@example.net",
        },
        page="/affiliate",
    )
    assert applied.status_code == 303
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await session.scalar(
            select(Affiliate).where(Affiliate.account_id == customer.account.id)
        )
        assert affiliate is not None
        affiliate.status = "approved"
        await make_commission(session, affiliate.id, amount=1499, status="pending")
        await make_commission(session, affiliate.id, amount=209, status="held")
    shown = await client.get("/affiliate")
    text = _text(shown)
    assert f"http://testserver/r/{affiliate.code}" in text
    assert 'id="affiliate-chart"' in shown.text
    assert "14.99 USD" in text
    assert "Held for review" in text
    assert "We end an affiliate account after 6 months" in text


async def test_the_admin_decides_reviews_and_pays_out(
    runtime: Runtime, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        applied = await make_affiliate(session, status="applied")
        approved = await make_affiliate(session)
        held = await make_commission(session, approved.id, amount=300, status="held")
    await web_customer(admin=True, two_factor=True)
    page = await client.get("/admin/affiliates")
    assert page.status_code == 200
    assert f'id="affiliate-{applied.id}"' in page.text
    assert f'id="review-form-{held.id}"' in page.text
    assert "0 of 0 (0 %)" in _text(page)

    missing = await post_form(
        client,
        f"/admin/affiliates/{applied.id}/decision",
        {"decision": "approve", "reason": ""},
        page="/admin/affiliates",
    )
    assert missing.status_code == 422
    decided = await post_form(
        client,
        f"/admin/affiliates/{applied.id}/decision",
        {"decision": "approve", "reason": "A real review site."},
        page="/admin/affiliates",
        follow=True,
    )
    assert f"Affiliate {applied.id} is approved." in _text(decided)
    reviewed = await post_form(
        client,
        f"/admin/affiliates/commissions/{held.id}/review",
        {"decision": "reject", "reason": "Paid with the affiliate's own card."},
        page="/admin/affiliates",
        follow=True,
    )
    assert f"Commission {held.id} is cancelled." in _text(reviewed)
    async with unit_of_work(runtime.sessionmaker) as session:
        stored = await session.get(Commission, held.id)
        assert stored is not None
        assert stored.status == CommissionStatus.cancelled
    # No PayPal on this server: the panel says so and nothing changes.
    paid = await post_form(
        client, "/admin/affiliates/payouts", {}, page="/admin/affiliates", follow=True
    )
    assert "PayPal is not set up on this server" in _text(paid)


async def test_a_customer_cannot_enter_the_admin_page(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    page = await client.get("/admin/affiliates")
    assert page.status_code == 403
    assert "for administrators" in page.text


async def test_no_program_no_page(metered_client: httpx.AsyncClient, metered: Runtime) -> None:
    """The second seed runs no program: the page says so and the menu has no entry."""
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
    sign_in_as(metered_client, token)
    page = await metered_client.get("/affiliate")
    assert 'id="affiliate-none"' in page.text
    assert 'href="/affiliate"' not in page.text
