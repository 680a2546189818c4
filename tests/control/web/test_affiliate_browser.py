"""The affiliate program in a real browser (Debian's chromium through Playwright, the app in
uvicorn on loopback): a visitor follows a referral link and signs up with the cookie it set;
the affiliate applies and, once approved, reads the link, the numbers, the chart and the rules
on a phone-width screen without sideways scrolling."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from burrow.control.db import unit_of_work
from burrow.control.models import Affiliate, AffiliateStatus, Referral
from burrow.control.runtime import Runtime
from tests.control.affiliates.conftest import make_commission
from tests.support import factories
from tests.support.browser import Shooter

from .conftest import NewContext

pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import expect

PHONE = {"width": 390, "height": 844}
WIDTH = "document.documentElement.scrollWidth"


async def test_apply_be_followed_and_read_it_all_on_a_phone(
    new_context: NewContext, live_runtime: Runtime, shot: Shooter
) -> None:
    async with unit_of_work(live_runtime.sessionmaker) as session:
        account = await factories.create_account(session)
    context = await new_context()
    page = await context.new_page()
    await page.set_viewport_size(PHONE)
    await page.goto("/login")
    await page.get_by_label("Email address").fill(account.email)
    await page.get_by_label("Password").fill(factories.DEFAULT_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile("/dashboard$"))

    await page.get_by_role("link", name="Affiliates").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Affiliate program")
    await page.get_by_label("Your name, or your company's").fill("Pat Promoter")
    await page.get_by_label("PayPal account for payouts").fill("pat@example.net")
    await page.get_by_role("button", name="Apply").click()
    # The seed needs the promotional site: said at the field, in plain words.
    await expect(page.locator("#f-website-error")).to_have_text(
        "The affiliate program needs the address of your active promotional site."
    )
    await shot(page, "apply-refused")
    await page.get_by_label("Your promotional site").fill("https://pat.example.org/")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.locator("#affiliate-status")).to_contain_text("applied")

    async with unit_of_work(live_runtime.sessionmaker) as session:
        affiliate = await session.scalar(
            select(Affiliate).where(Affiliate.account_id == account.id)
        )
        assert affiliate is not None
        affiliate.status = AffiliateStatus.approved
        await make_commission(session, affiliate.id, amount=1499, status="pending")
        await make_commission(session, affiliate.id, amount=209, status="payable")
        code = affiliate.code

    # A visitor in another browser follows the link and signs up.
    visitor = await (await new_context()).new_page()
    await visitor.goto(f"/r/{code}")
    await expect(visitor).to_have_url(re.compile("/signup$"))
    await visitor.get_by_label("Email address").fill("followed@example.com")
    await visitor.get_by_label("Password").fill("a long enough password for this")
    await visitor.locator("input[name=accept_terms]").check()
    await visitor.get_by_role("button", name=re.compile("Sign up|Create")).click()
    await expect(visitor).to_have_url(re.compile("/login"))
    async with unit_of_work(live_runtime.sessionmaker) as session:
        referred = await session.scalar(
            select(Referral).where(Referral.affiliate_id == affiliate.id)
        )
        assert referred is not None

    await page.goto("/affiliate")
    await expect(page.locator("#affiliate-link")).to_contain_text(f"/r/{code}")
    await expect(page.locator("#affiliate-signups")).to_have_text("1")
    await expect(page.locator("#affiliate-clicks")).to_have_text("1")
    await expect(page.locator("#affiliate-chart svg")).to_be_visible()
    await expect(page.locator("#affiliate-rules")).to_contain_text("Payouts start from")
    await shot(page, "affiliate-page")
    width = await page.evaluate(WIDTH)
    assert width <= PHONE["width"], f"the affiliate page is {width} px wide on a phone"
