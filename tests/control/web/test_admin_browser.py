"""The operator's pages in Chromium at desktop and phone width: the overview's charts, the
accounts list and the refund queue, with screenshots, and nothing scrolling sideways."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from burrow.control.audit.service import admin_audit
from burrow.control.db import unit_of_work
from burrow.control.models import (
    PrivacyRequest,
    PrivacyRequestKind,
    PrivacyRequestStatus,
    RefundRequest,
    RefundStatus,
    utcnow,
)
from burrow.control.runtime import Runtime
from tests.support import factories
from tests.support.browser import Shooter

from .conftest import NewContext
from .test_journeys import admin_log_in, seed_admin

pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import Page, expect

PHONE = {"width": 390, "height": 844}


async def _seed_month(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        for n in range(24):
            account = await factories.create_account(session)
            account.created_at = account.created_at - timedelta(days=n, hours=n % 5)
            code = ("personal-monthly", "personal-yearly", "business-monthly")[n % 3]
            sub = await factories.create_subscription(session, account, plan_code=code)
            sub.created_at = account.created_at
            order = await factories.create_order(session, account, plan_code=code)
            order.paid_at = account.created_at
            device = await factories.create_device(session, account)
            device.created_at = account.created_at
            if n % 7 == 0:
                session.add(
                    RefundRequest(
                        order_id=order.id,
                        account_id=account.id,
                        terms_version="2026-11",
                        status=RefundStatus.queued,
                        amount_minor=order.amount_minor,
                        requested_at=account.created_at + timedelta(hours=1),
                    )
                )
        await factories.create_node(session, name="ams-1")


# Tables wider than a phone, on the page that shows them: each must become labelled rows.
WIDE_TABLES = {
    "fleet": ("#node-list",),
    "privacy-requests": ("#privacy-answered",),
    "account": ("#account-orders",),
    "audit-trail": ("#audit-trail",),
}


async def _is_a_labelled_list(page: Page, table: str) -> None:
    """At phone width the table's cells stack, each led by its column's name."""
    cell = page.locator(f"{table} tbody td").first
    assert await cell.evaluate("c => getComputedStyle(c).display") == "block", table
    label = await cell.evaluate("c => getComputedStyle(c, '::before').content")
    assert label not in ("none", "normal", '""'), (table, label)
    assert await page.locator(f"{table} thead").evaluate("h => h.offsetHeight") <= 1, table


async def test_admin_pages_at_desktop_and_phone_width(
    new_context: NewContext, live_runtime: Runtime, shot: Shooter
) -> None:
    admin, secret, _token = await seed_admin(live_runtime)
    await _seed_month(live_runtime)
    context = await new_context()
    page = await context.new_page()
    async with unit_of_work(live_runtime.sessionmaker) as session:
        # A row in the audit trail, wide with its detail, for the phone-width check.
        victim = await factories.create_account(session)
        await admin_audit.record(
            session,
            admin,
            "account.suspend",
            "account",
            victim.id,
            "Chargeback " * 8,
            {"clause": "Prohibited activities: spam or unsolicited bulk messaging"},
        )
        # Rows for the other wide tables: an answered privacy request, an order, a device.
        for status in (PrivacyRequestStatus.pending, PrivacyRequestStatus.done):
            session.add(
                PrivacyRequest(
                    account_id=victim.id,
                    kind=PrivacyRequestKind.rectification,
                    status=status,
                    received_at=utcnow() - timedelta(days=3),
                    due_at=utcnow() + timedelta(days=27),
                    completed_at=utcnow() if status is PrivacyRequestStatus.done else None,
                    details="The name on my invoices is spelled wrongly " * 3,
                    outcome="Corrected." if status is PrivacyRequestStatus.done else None,
                )
            )
        await factories.create_subscription(session, victim)
        await factories.create_order(session, victim)
        await factories.create_device(session, victim, name="A laptop with a long name " * 2)
    await admin_log_in(page, admin, secret)
    await expect(page).to_have_url(re.compile("/admin$"))
    await expect(page.locator("#chart-signups svg rect.chart-bar")).to_have_count(30)
    for label, size in (("desktop", {"width": 1280, "height": 900}), ("phone", PHONE)):
        await page.set_viewport_size(size)
        for path, name in (
            ("/admin", "overview"),
            ("/admin/accounts", "accounts"),
            ("/admin/refunds", "refund-queue"),
            ("/admin/audit", "audit-trail"),
            ("/admin/fleet", "fleet"),
            ("/admin/policy", "policy"),
            ("/admin/privacy", "privacy-requests"),
            (f"/admin/accounts/{victim.id}", "account"),
        ):
            response = await page.goto(path)
            assert response is not None
            assert response.status == 200, path
            await shot(page, f"{label}-{name}")
            if label == "phone":
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= PHONE["width"], (path, width)
                for table in WIDE_TABLES.get(name, ()):
                    await _is_a_labelled_list(page, table)
    await expect(page.locator("body")).not_to_contain_text("minor units")
