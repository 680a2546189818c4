"""The panels walked in Chromium as issue 14 names them: every customer and operator page at
desktop and phone width (a screenshot of each, nothing scrolling sideways), and every form
found on those pages sent empty and then with wrong values, failing on any library phrase,
any 500 and any traceback. The forms are found in the page itself, so a form added later is
walked without this file changing. One browser and one server for the whole walk."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from burrow.control.db import unit_of_work
from burrow.control.models import Account, RefundRequest, RefundStatus
from burrow.control.runtime import Runtime
from tests.control.web.test_plain_words import library_text
from tests.support import factories
from tests.support.browser import Shooter

from .conftest import NewContext
from .test_journeys import admin_log_in, log_in, seed_admin

pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import Page, ViewportSize, expect

DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
WIDTH = "document.documentElement.scrollWidth"

# The fields a person fills in (hidden fields and buttons are the page's own).
FIELDS = (
    "input:not([type=hidden]):not([type=submit]):not([type=button]):not([type=file]),"
    " textarea, select"
)

# Fills one form (the ``index``-th with fields, among those whose action is ``action``) empty
# or with wrong values, then sends it past the browser's own checks, so the server answers.
SEND = """
([fields, action, index, mode]) => {
  const forms = [...document.querySelectorAll("form")].filter(
    f => (f.getAttribute("action") || "") === action && f.querySelector(fields));
  const form = forms[index];
  if (!form) return false;
  for (const el of form.querySelectorAll(fields)) {
    const type = (el.getAttribute("type") || el.tagName).toLowerCase();
    if (type === "checkbox" || type === "radio") { el.checked = false; continue; }
    if (el.tagName === "SELECT") {
      const option = document.createElement("option");
      option.value = mode === "empty" ? "" : "not-a-choice";
      el.appendChild(option);
      el.value = option.value;
      continue;
    }
    if (mode === "empty") { el.value = ""; continue; }
    el.value = {email: "not-an-address", number: "-5", password: "short",
                textarea: "x".repeat(20000)}[type] ?? "x".repeat(600);
  }
  const radio = form.querySelector("input[type=radio]");
  if (radio && mode !== "empty") { radio.value = "not-a-choice"; radio.checked = true; }
  form.noValidate = true;
  form.requestSubmit();
  return true;
}
"""

FORMS = """
(fields) => [...document.querySelectorAll("form")]
  .filter(f => f.querySelector(fields))
  .map(f => f.getAttribute("action") || "")
"""

# How many forms with fields post to ``action`` on this page.
COUNT = """
([fields, action]) => [...document.querySelectorAll("form")]
  .filter(f => (f.getAttribute("action") || "") === action && f.querySelector(fields)).length
"""


@dataclass
class Walk:
    """What the walk found wrong, page by page and form by form."""

    shot: Shooter
    too_wide: dict[str, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    forms_sent: int = 0
    pages: int = 0

    async def look(self, page: Page, path: str, name: str, status: int = 200) -> None:
        """``path`` at desktop and phone width, photographed, fitting the phone."""
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            await page.set_viewport_size(size)
            response = await page.goto(path)
            assert response is not None
            if response.status != status:
                self.wrong.append(f"GET {path}: {response.status}")
            await self.shot(page, f"{label}-{name}")
            if label == "phone" and (width := await page.evaluate(WIDTH)) > PHONE["width"]:
                self.too_wide[path] = width
            self._check(path, "GET", await page.content())
        self.pages += 1

    async def send_every_form(self, page: Page, path: str) -> None:
        """Each form of ``path``, sent empty and then with wrong values."""
        await page.set_viewport_size(DESKTOP)
        await page.goto(path)
        actions: list[str] = await page.evaluate(FORMS, FIELDS)
        seen: dict[str, int] = {}
        for action in actions:
            index = seen.get(action, 0)
            seen[action] = index + 1
            for mode in ("empty", "wrong"):
                await page.goto(path)
                if await page.evaluate(COUNT, [FIELDS, action]) <= index:
                    break  # the form left the page (its action succeeded the first time)
                async with page.expect_navigation() as answer:
                    await page.evaluate(SEND, [FIELDS, action, index, mode])
                response = await answer.value
                status = response.status if response is not None else 0
                where = f"{mode} {action or path} (from {path})"
                if status >= 500:
                    self.wrong.append(f"{where}: {status}")
                self._check(where, "POST", await page.content())
                self.forms_sent += 1

    def _check(self, where: str, how: str, html: str) -> None:
        if found := library_text(html):
            self.wrong.append(f"{how} {where}: library words {found}")
        if "Traceback" in html:
            self.wrong.append(f"{how} {where}: a traceback")


async def _seed(runtime: Runtime) -> dict[str, int]:
    """A customer with a device, a paid order and a queued refund; an unverified customer."""
    async with unit_of_work(runtime.sessionmaker) as session:
        await factories.create_node(session, name="ams-1")
        customer = await factories.create_account(session)
        await factories.create_subscription(session, customer)
        device = await factories.create_device(session, customer, name="Phone")
        refundable = await factories.create_order(session, customer)
        other = await factories.create_account(session, verified=False)
        await factories.create_subscription(session, other, plan_code="business-monthly")
        await factories.create_device(session, other, name="Office laptop")
        asked = await factories.create_order(session, other, plan_code="business-monthly")
        session.add(
            RefundRequest(
                order_id=asked.id,
                account_id=other.id,
                terms_version=runtime.policy.terms.version,
                status=RefundStatus.queued,
                amount_minor=asked.amount_minor,
                requested_at=asked.created_at + timedelta(hours=1),
            )
        )
    return {
        "customer": customer.id,
        "device": device.id,
        "order": refundable.id,
        "other": other.id,
    }


CUSTOMER_PAGES = [
    ("/dashboard", "dashboard"),
    ("/dashboard/cancel", "cancel"),
    ("/devices", "devices"),
    ("/devices/{device}", "device"),
    ("/devices/{device}/openvpn", "device-openvpn"),
    ("/devices/{device}/ikev2", "device-ikev2"),
    ("/servers", "servers"),
    ("/billing", "billing"),
    ("/billing/orders/{order}/refund", "refund-request"),
    ("/usage", "usage"),
    ("/account", "account"),
    ("/account/sessions", "sessions"),
    ("/account/terms", "account-terms"),
    ("/privacy", "privacy"),
    ("/privacy/email", "privacy-email"),
    ("/privacy/billing", "privacy-billing"),
    ("/privacy/delete", "privacy-delete"),
    ("/support", "support"),
    ("/affiliate", "affiliate"),
    ("/terms", "terms"),
]
SIGNED_OUT_PAGES = [
    ("/signup", "signup"),
    ("/login", "login"),
    ("/forgot-password", "forgot-password"),
    ("/terms", "terms"),
]
ADMIN_PAGES = [
    ("/admin", "overview"),
    ("/admin/accounts", "accounts"),
    ("/admin/accounts/{other}", "account"),
    ("/admin/refunds", "refund-queue"),
    ("/admin/audit", "audit-trail"),
    ("/admin/fleet", "fleet"),
    ("/admin/policy", "policy"),
    ("/admin/privacy", "privacy-requests"),
    ("/admin/payment-events", "payment-events"),
    ("/admin/support", "support"),
    ("/admin/abuse", "abuse"),
    ("/admin/affiliates", "affiliates"),
]
# Forms whose action ends the session or the account are sent last (or not at all): the
# deletion form needs the password, which the walk never has, so it only ever refuses.


async def test_every_page_at_two_widths_and_every_form_refused_in_plain_words(
    new_context: NewContext, live_runtime: Runtime, shot: Shooter
) -> None:
    ids = await _seed(live_runtime)
    admin, secret, _token = await seed_admin(live_runtime)
    walk = Walk(shot)

    stranger = await (await new_context()).new_page()
    for path, name in SIGNED_OUT_PAGES:
        await walk.look(stranger, path, f"signed-out-{name}")
        if path != "/terms":
            await walk.send_every_form(stranger, path)

    async with unit_of_work(live_runtime.sessionmaker) as session:
        customer = await session.get(Account, ids["customer"])
        assert customer is not None
        email = customer.email
    person = await (await new_context()).new_page()
    await log_in(person, email)
    await expect(person).to_have_url(re.compile("/dashboard$"))
    for path, name in CUSTOMER_PAGES:
        await walk.look(person, path.format(**ids), f"customer-{name}")
    # A customer who finds the admin panel gets a page with a way out, not a dead end.
    await walk.look(person, "/admin", "customer-at-admin", status=403)
    await expect(person.locator("main")).to_contain_text("administrators")
    for path, _name in CUSTOMER_PAGES:
        await walk.send_every_form(person, path.format(**ids))

    operator = await (await new_context()).new_page()
    await admin_log_in(operator, admin, secret)
    await expect(operator).to_have_url(re.compile("/admin$"))
    for path, name in ADMIN_PAGES:
        await walk.look(operator, path.format(**ids), f"admin-{name}")
    for path, _name in ADMIN_PAGES:
        await walk.send_every_form(operator, path.format(**ids))

    assert walk.pages == len(SIGNED_OUT_PAGES) + len(CUSTOMER_PAGES) + 1 + len(ADMIN_PAGES)
    assert walk.forms_sent >= 40, walk.forms_sent  # the walk found the forms it should
    assert not walk.too_wide, f"wider than a {PHONE['width']} px phone: {walk.too_wide}"
    assert not walk.wrong, "\n".join(walk.wrong)
