"""The browser harness itself (Debian's chromium, driven by Playwright, reads a real page), and
the layout of the panel in it: every page fits a phone-width screen."""

from __future__ import annotations

import hashlib
import re

import pytest

from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime
from tests.support import factories
from tests.support.browser import Shooter
from tests.support.server import RunningServer

from .conftest import NewContext

# Without playwright the browser tests skip, with one line, instead of failing to import.
pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import Page, expect


async def test_the_terms_page_shows_the_terms_and_the_hash_of_their_markdown(
    page: Page, live_server: RunningServer, shot: Shooter
) -> None:
    response = await page.goto("/terms")
    assert response is not None
    assert response.status == 200
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Terms")
    assert await page.get_by_role("heading", level=2).count() > 3
    picture = await shot(page, "terms")
    assert picture.stat().st_size > 10_000

    # The footer names the SHA-256 of the Markdown it links to; following the link proves it.
    shown = (await page.locator("footer code").inner_text()).strip()
    markdown = await page.request.get("/terms.md")
    assert markdown.ok
    assert hashlib.sha256(await markdown.body()).hexdigest() == shown


PHONE = {"width": 390, "height": 844}
PANEL_PAGES = [
    "/dashboard",
    "/dashboard/cancel",
    "/devices",
    "/devices/{device}",
    "/servers",
    "/billing",
    "/usage",
    "/account",
    "/account/sessions",
    "/account/terms",
    "/privacy",
    "/privacy/email",
    "/privacy/billing",
    "/privacy/delete",
    "/terms",
]
PUBLIC_PAGES = ["/terms", "/login", "/signup", "/forgot-password"]
WIDTH = "document.documentElement.scrollWidth"


async def test_the_customer_panel_fits_a_phone_screen(
    new_context: NewContext, live_runtime: Runtime, shot: Shooter
) -> None:
    async with unit_of_work(live_runtime.sessionmaker) as session:
        account = await factories.create_account(session)
        await factories.create_subscription(session, account)
        await factories.create_node(session, name="ams-1")
        device = await factories.create_device(session, account, name="Phone")
    context = await new_context()
    page = await context.new_page()
    await page.set_viewport_size(PHONE)
    too_wide = {}
    # Signed out: the public pages, the terms with the site's own header.
    for path in PUBLIC_PAGES:
        response = await page.goto(path)
        assert response is not None
        assert response.status == 200, path
        await shot(page, f"phone-public{path.replace('/', '-')}")
        if (width := await page.evaluate(WIDTH)) > PHONE["width"]:
            too_wide[path] = width
        if path == "/terms":
            await expect(page.locator("header.site-header")).to_be_visible()
            await expect(page.get_by_role("heading", level=1)).to_contain_text("Terms")
    await page.goto("/login")
    await page.get_by_label("Email address").fill(account.email)
    await page.get_by_label("Password").fill(factories.DEFAULT_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile("/dashboard$"))
    for path in PANEL_PAGES:
        path = path.format(device=device.id)
        response = await page.goto(path)
        assert response is not None
        assert response.status == 200, path
        await shot(page, f"phone{path.replace('/', '-')}")
        # Nothing may make the page scroll sideways.
        if (width := await page.evaluate(WIDTH)) > PHONE["width"]:
            too_wide[path] = width
    assert not too_wide, f"wider than a {PHONE['width']} px phone: {too_wide}"

    # A wide table is a list of labelled cards on a phone, not a box to scroll sideways.
    await page.goto("/devices")
    cell = page.locator("#devices-table td").first
    assert await cell.evaluate("c => getComputedStyle(c).display") == "block"
    label = await cell.evaluate("c => getComputedStyle(c, '::before').content")
    assert "Name" in label
    assert await page.locator("#devices-table thead").evaluate("h => h.offsetHeight") <= 1


async def test_forms_refused_in_the_browser_speak_plainly(
    new_context: NewContext, live_runtime: Runtime, shot: Shooter
) -> None:
    from tests.control.web.test_plain_words import library_text

    context = await new_context()
    page = await context.new_page()
    # The sign-up form, sent empty and then with wrong values, as a person would.
    await page.goto("/signup")
    await page.locator("#signup-submit").click()
    await expect(page.locator(".field-error, .has-error").first).to_be_visible()
    await shot(page, "signup-empty")
    assert library_text(await page.content()) == []
    await page.locator("#f-email").fill("not-an-address")
    await page.locator("#f-password").fill("short")
    await page.locator("#signup-submit").click()
    await expect(page.locator(".has-error").first).to_be_visible()
    await shot(page, "signup-wrong")
    assert library_text(await page.content()) == []
