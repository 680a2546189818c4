"""The support desk in Chromium: a signed-out visitor opens a request with the real form,
follows the link the email brings, and writes again."""

from __future__ import annotations

import re

import pytest

from tests.support.browser import Shooter
from tests.support.server import RunningServer
from tests.support.smtp import Inbox, SmtpServer

from .conftest import NewContext

pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import expect


async def test_a_visitor_asks_support_and_follows_the_emailed_link(
    new_context: NewContext, live_server: RunningServer, smtp: SmtpServer, shot: Shooter
) -> None:
    context = await new_context()
    page = await context.new_page()
    await page.goto("/support")
    # Sent empty: each missing field says so.
    await page.locator("#support-submit").click()
    await expect(page.locator("#f-email-error")).to_be_visible()
    await page.locator("#f-email").fill("visitor@example.org")
    await page.locator("#f-topic").select_option("connection")
    await page.locator("#f-subject").fill("Cannot connect")
    await page.locator("#f-message").fill("The app says handshake failed.\nSince today.")
    await page.locator("#support-submit").click()
    await expect(page.locator("#support-sent")).to_contain_text("visitor@example.org")
    await shot(page, "sent")

    mail = await smtp.inbox.arrived("visitor@example.org")
    link = re.search(r"http://\S+", Inbox.body(mail[0]))
    assert link is not None
    assert link.group(0).startswith(live_server.url)
    await page.goto(link.group(0))
    await expect(page.locator("#support-messages")).to_contain_text("handshake failed.")
    await page.locator("#f-message").fill("It works again after a restart.")
    await page.locator("#support-reply-submit").click()
    await expect(page.locator("#support-messages li")).to_have_count(2)
    await expect(page.locator("#support-messages")).to_contain_text("after a restart")
    await shot(page, "replied")
