"""The abuse desk in Chromium at phone width, under the strict example policy: an operator
records a complaint with the form, traces it, and reads the answer to send on; nothing scrolls
sideways and the complaints table becomes labelled rows."""

from __future__ import annotations

import re

import pytest

from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime
from tests.support import factories
from tests.support.browser import Shooter

from .conftest import NewContext
from .test_admin_browser import PHONE, _is_a_labelled_list
from .test_journeys import admin_log_in, seed_admin

pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import expect

EGRESS = "203.0.113.6"


async def test_a_complaint_recorded_and_answered_at_phone_width(
    new_context: NewContext, live_runtime: Runtime, shot: Shooter
) -> None:
    admin, secret, _token = await seed_admin(live_runtime)
    async with unit_of_work(live_runtime.sessionmaker) as session:
        node = await factories.create_node(session, name="ams-1")
        node.egress_ipv4 = EGRESS
    context = await new_context()
    page = await context.new_page()
    await page.set_viewport_size(PHONE)
    await admin_log_in(page, admin, secret)
    await page.goto("/admin/abuse")
    await expect(page.locator("#abuse-mode")).to_contain_text("cannot be traced to anyone")
    await page.locator("#record-clause").select_option(index=1)
    await page.get_by_label("Who complained").first.fill("abuse@victim.example")
    await page.get_by_label("Our address they saw").fill(EGRESS)
    await page.get_by_label("Port they saw").fill("40123")
    await page.get_by_label("When").fill("2026-12-01T10:00:00Z")
    await page.locator("#record-evidence").fill("A port scan of our network.")
    await shot(page, "record")
    await page.locator("#record-submit").click()
    await expect(page).to_have_url(re.compile(r"/admin/abuse/\d+$"))
    await page.locator("#trace-submit").click()
    finding = page.locator("#complaint-finding")
    await expect(finding).to_contain_text("by construction")
    await expect(page.get_by_role("heading", name="Answer to send on")).to_be_visible()
    await expect(page.locator("#act-form")).to_have_count(0)
    await shot(page, "answer")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width

    await page.goto("/admin/abuse")
    await expect(page.locator("#complaints tbody tr")).to_have_count(1)
    await _is_a_labelled_list(page, "#complaints")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
