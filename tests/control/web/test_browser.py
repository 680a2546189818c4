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
PANEL_PAGES = ["/dashboard", "/devices", "/servers", "/billing", "/usage", "/account", "/privacy"]


async def test_the_customer_panel_fits_a_phone_screen(
    new_context: NewContext, live_runtime: Runtime, shot: Shooter
) -> None:
    async with unit_of_work(live_runtime.sessionmaker) as session:
        account = await factories.create_account(session)
        await factories.create_subscription(session, account)
        await factories.create_node(session, name="ams-1")
        await factories.create_device(session, account, name="Phone")
    context = await new_context()
    page = await context.new_page()
    await page.set_viewport_size(PHONE)
    await page.goto("/login")
    await page.get_by_label("Email address").fill(account.email)
    await page.get_by_label("Password").fill(factories.DEFAULT_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile("/dashboard$"))
    too_wide = {}
    for path in PANEL_PAGES:
        response = await page.goto(path)
        assert response is not None
        assert response.status == 200, path
        await shot(page, f"phone{path.replace('/', '-')}")
        # Nothing may make the page scroll sideways (wide tables scroll inside their own box).
        width = await page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            too_wide[path] = width
    assert not too_wide, f"wider than a {PHONE['width']} px phone: {too_wide}"
