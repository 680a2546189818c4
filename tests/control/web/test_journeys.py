"""The main journeys through the panels, in a real browser (Debian's chromium, Playwright).

Each journey runs against the real app on a loopback port (``live_server``) and photographs
every step into ``test-output/screenshots/<test>/`` so a person can look at what a customer or
an administrator saw. Rows the journey needs but does not make itself (a node, an administrator
with a known TOTP secret) are written with the factories into the server's own database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import Account, AccountStatus, Device, Node, ServedPeer, Subscription
from burrow.control.runtime import Runtime
from tests.support import factories
from tests.support.browser import Shooter
from tests.support.screens import read_qr
from tests.support.server import RunningServer
from tests.support.smtp import Inbox, SmtpServer

from .conftest import NewContext

# Without playwright the browser tests skip, with one line, instead of failing to import.
pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import Page, expect

PASSWORD = "a long passphrase for the panel"


def shown_datetime(moment: datetime) -> str:
    """A moment as the panel's ``|datetime`` filter writes it."""
    return moment.strftime("%d %B %Y, %H:%M UTC").lstrip("0")


async def log_in(
    page: Page, email: str, password: str = factories.DEFAULT_PASSWORD, *, admin_next: bool = False
) -> None:
    await page.goto("/login?next=/dashboard" if not admin_next else "/login?next=/admin")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()


async def seed_node(runtime: Runtime) -> Node:
    async with unit_of_work(runtime.sessionmaker) as session:
        return await seed_node_in(session)


async def seed_node_in(session: AsyncSession) -> Node:
    return await factories.create_node(session, name="ams-1", endpoint_host="203.0.113.10")


async def seed_customer(runtime: Runtime, *, subscribed: bool = True) -> Account:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await factories.create_account(session)
        if subscribed:
            await factories.create_subscription(session, account)
        return account


async def seed_admin(runtime: Runtime, *, two_factor: bool = True) -> tuple[Account, str, str]:
    """An administrator (with two-factor on and a known secret, unless not); an API token."""
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await factories.create_account(session, admin=True, totp=False)
        if two_factor:
            admin.totp_secret = pyotp.random_base32()
            admin.totp_enabled = True
        token = await factories.create_session_token(session, admin)
    return admin, admin.totp_secret or "", token


async def enrol_two_factor(page: Page, shot: Shooter) -> str:
    """Turn two-factor on from the account page, as a person with a phone would: scan the QR
    code (a screenshot decoded), type the code the app then shows. Returns the secret."""
    await page.get_by_role("button", name=re.compile("two-factor", re.I)).first.click()
    qr = page.locator("#totp-qr")
    await expect(qr).to_be_visible()
    await shot(page, "two-factor-qr")
    scanned = read_qr(await qr.screenshot())
    assert scanned is not None, "the two-factor QR code cannot be read from the screen"
    uri = urlsplit(scanned)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    secret = parse_qs(uri.query)["secret"][0]
    assert secret == (await page.locator("#totp-secret").inner_text()).strip()
    await page.get_by_label("6-digit code").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Turn two-factor on").click()
    # The ten recovery codes, shown this once; then back to the account page.
    await expect(page.locator("#recovery-codes li")).to_have_count(10)
    await shot(page, "recovery-codes")
    await page.get_by_role("link", name="Back to your account").click()
    await expect(page.locator("#totp-status")).to_contain_text("On")
    await shot(page, "two-factor-on")
    return secret


async def admin_log_in(page: Page, admin: Account, secret: str, *, next_step: bool = False) -> None:
    """The administrator's sign-in: password, then the code of the authenticator app.

    Each 30 s step's code works once; ``next_step`` types the next one (accepted, like a phone
    whose clock runs a little ahead) when this step's code was just used.
    """
    await log_in(page, admin.email, admin_next=True)
    await expect(page).to_have_url(re.compile("/login/totp"))
    totp = pyotp.TOTP(secret)
    step = totp.timecode(datetime.now(UTC)) + (1 if next_step else 0)
    await page.get_by_label("6-digit code").fill(totp.generate_otp(step))
    await page.get_by_role("button", name="Continue").click()


def parse_config(text: str) -> dict[str, dict[str, str]]:
    """A wg-quick file as {section: {key: value}} (one peer is all a device config has)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def public_key_of(private_key: str) -> str:
    raw = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key)).public_key()
    return base64.b64encode(raw.public_bytes_raw()).decode()


# --- 1. sign up to a QR code ready to scan -------------------------------------------------------


async def test_sign_up_verify_log_in_add_a_device_and_scan_its_qr_code(
    page: Page,
    live_server: RunningServer,
    live_runtime: Runtime,
    smtp: SmtpServer,
    shot: Shooter,
) -> None:
    node = await seed_node(live_runtime)
    email = "new.customer@example.com"

    await page.goto("/signup")
    await shot(page, "signup-form")
    # A password that is too short: the message sits next to the field, the email is kept.
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill("short")
    await page.get_by_label(re.compile("I have read and accept")).check()
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#f-password-error")).to_contain_text("10")
    await expect(page.get_by_label("Email address")).to_have_value(email)
    await shot(page, "signup-refused-short-password")

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label(re.compile("I have read and accept")).check()
    await page.get_by_role("button", name="Create account").click()
    # The same answer as for a taken address: check your mail, then sign in.
    await expect(page).to_have_url(re.compile("/login$"))
    await expect(page.get_by_text("Check your mail")).to_be_visible()
    await shot(page, "signup-check-your-mail")
    await log_in(page, email, PASSWORD)
    await expect(page).to_have_url(re.compile("/dashboard$"))
    await expect(page.locator("#verify-notice")).to_be_visible()
    await shot(page, "dashboard-unverified")

    # The verification mail, from the real SMTP server; its link opened in the same browser.
    mails = await asyncio.to_thread(smtp.inbox.wait_for, email)
    link = re.search(r"https?://\S+", Inbox.body(mails[-1]))
    assert link is not None, Inbox.body(mails[-1])
    assert link.group(0).startswith(f"{live_server.url}/verify-email?token=")
    await page.goto(link.group(0))
    # The mailed link opens the panel's landing page, never the API's JSON.
    await expect(page).to_have_url(re.compile("/verify-email\\?token="))
    await expect(page.locator("#verify-result")).to_contain_text(f"{email} is verified")
    await shot(page, "verification-link-opened")

    # Log out, and back in with the new password.
    await page.goto("/dashboard")
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(re.compile("/login"))
    await shot(page, "logged-out")
    await log_in(page, email, PASSWORD)
    await expect(page).to_have_url(re.compile("/dashboard$"))
    await expect(page.locator("#verify-notice")).to_have_count(0)
    await page.get_by_role("button", name=re.compile("Start the free")).click()
    await expect(page.locator("#subscription-status")).to_contain_text("Free trial")
    await shot(page, "dashboard-trial")

    await page.get_by_role("link", name="Devices", exact=True).first.click()
    await expect(page).to_have_url(re.compile("/devices$"))
    await page.get_by_label("Device name").fill("Laptop")
    await expect(page.get_by_label("Server for the configuration")).to_have_value(str(node.id))
    await shot(page, "add-device")
    await page.get_by_role("button", name="Add device").click()

    qr = page.locator("#config-qr")
    await expect(qr).to_be_visible()
    await shot(page, "device-added-qr")
    # Scanned like the WireGuard app would: a picture of the code, decoded.
    scanned = read_qr(await qr.screenshot())
    shown = await page.locator("#config-text").inner_text()
    assert scanned is not None, "no QR code could be read from the screenshot"
    assert scanned.strip() == shown.strip()

    # And it is this device's configuration for this node.
    config = parse_config(scanned)
    async with unit_of_work(live_runtime.sessionmaker) as session:
        account = (
            await session.execute(select(Account).where(Account.email == email))
        ).scalar_one()
        device = (
            await session.execute(select(Device).where(Device.account_id == account.id))
        ).scalar_one()
    assert account.email_verified_at is not None
    assert device.name == "Laptop"
    assert public_key_of(config["Interface"]["PrivateKey"]) == device.public_key
    assert await page.locator("#device-public-key").inner_text() == device.public_key
    addresses = {a.strip().split("/")[0] for a in config["Interface"]["Address"].split(",")}
    assert addresses == {device.ipv4, device.ipv6}
    assert config["Peer"]["PublicKey"] == node.wg_public_key
    assert config["Peer"]["Endpoint"] == f"203.0.113.10:{node.endpoint_port}"


# --- 2. cancel and un-cancel ----------------------------------------------------------------------


async def test_cancel_states_the_day_access_ends_and_resume_undoes_it(
    page: Page, live_runtime: Runtime, shot: Shooter
) -> None:
    account = await seed_customer(live_runtime)
    async with unit_of_work(live_runtime.sessionmaker) as session:
        sub = (
            await session.execute(select(Subscription).where(Subscription.account_id == account.id))
        ).scalar_one()
    end_day = sub.current_period_end.date().isoformat()

    await log_in(page, account.email)
    await expect(page.locator("#whats-next")).to_contain_text(
        f"Ends on {end_day} (we will remind you"
    )
    await shot(page, "dashboard-active")

    await page.get_by_role("link", name="Cancel…").click()
    await expect(page.locator("#access-ends")).to_have_text(shown_datetime(sub.current_period_end))
    await shot(page, "cancel-confirmation")
    await page.get_by_role("button", name=re.compile("Yes, cancel")).click()

    await expect(page.get_by_role("status").first).to_contain_text(
        f"You keep access until {end_day}"
    )
    await expect(page.locator("#subscription-status")).to_contain_text("Cancelled")
    await expect(page.locator("#whats-next")).to_contain_text(
        f"Ends on {end_day} because you cancelled"
    )
    await shot(page, "cancelled")

    await page.get_by_role("button", name="Resume my subscription").click()
    await expect(page.get_by_role("status").first).to_contain_text("Resumed.")
    await expect(page.locator("#subscription-status")).not_to_contain_text("Cancelled")
    await expect(page.locator("#whats-next")).to_contain_text(
        f"Ends on {end_day} (we will remind you"
    )
    await shot(page, "resumed")

    async with unit_of_work(live_runtime.sessionmaker) as session:
        again = await session.get(Subscription, sub.id)
        assert again is not None
        assert again.cancel_at_period_end is False


# --- 3. a refund request, an administrator's decision, the customer reads it rule by rule -------


async def test_a_refund_request_is_decided_by_an_admin_and_explained_rule_by_rule(
    new_context: NewContext, live_server: RunningServer, live_runtime: Runtime, shot: Shooter
) -> None:
    admin, secret, admin_token = await seed_admin(live_runtime)
    customer = await seed_customer(live_runtime)
    # A card payment recorded by the operator (the manual provider), through the admin API.
    async with httpx.AsyncClient(base_url=live_server.url) as api:
        paid = await api.post(
            f"/api/v1/admin/accounts/{customer.id}/payments",
            json={
                "plan_code": "personal-monthly",
                "amount_minor": 699,
                "currency": "USD",
                "method": "card",
                "reference": "journey-3",
            },
            headers={"Authorization": f"Bearer {admin_token}"},
        )
    assert paid.status_code == 201, paid.text
    order_id = paid.json()["order"]["id"]

    page = await (await new_context()).new_page()
    await log_in(page, customer.email)
    await page.get_by_role("link", name="Billing", exact=True).first.click()
    await shot(page, "customer-billing")
    await page.locator(f"#refund-order-{order_id}").click()
    await page.get_by_label("Why do you ask for your money back?").fill(
        "The tunnel drops every few minutes on my network."
    )
    await shot(page, "customer-refund-form")
    await page.get_by_role("button", name="Request the refund").click()
    await expect(page.locator("#refund-status")).to_contain_text("Waiting for a person")
    rules = page.locator("table.refund-outcomes tr.outcome")
    await expect(rules.first).to_be_visible()
    asked_rules = await rules.evaluate_all("rows => rows.map(r => r.dataset.rule)")
    assert len(asked_rules) >= 3, asked_rules
    await expect(rules.filter(has_text="A person decides")).to_have_count(1)
    await shot(page, "customer-refund-queued")
    refund_url = page.url

    # The administrator signs in with the second factor and decides in the queue.
    desk = await (await new_context()).new_page()
    await admin_log_in(desk, admin, secret)
    await expect(desk).to_have_url(re.compile("/admin$"))
    await shot(desk, "admin-overview")
    await desk.get_by_role("link", name="Refunds", exact=True).click()
    card = desk.locator("section.card").filter(has_text=f"order {order_id} of")
    await expect(card).to_be_visible()
    await expect(card.locator("ul.rules > li")).to_have_count(len(asked_rules))
    await shot(desk, "admin-refund-queue")
    decision = "The tunnel logs show the drops; the service did not work as advertised."
    await card.get_by_role("textbox", name="Reason (the customer reads it)").first.fill(decision)
    await card.get_by_role("button", name="Approve").click()
    await expect(desk.get_by_role("status").first).to_contain_text("is approved")
    await expect(desk.locator("#refund-queue-empty")).to_be_visible()
    await shot(desk, "admin-refund-approved")

    # The customer sees the decision, why, and every rule with what it found.
    await page.goto(refund_url)
    await expect(page.locator("#refund-status")).to_contain_text(re.compile("Approved|Refunded"))
    await expect(page.locator("#refund-decision-reason")).to_have_text(decision)
    await expect(page.locator("#refund-amount")).to_contain_text("6.99")
    shown_rules = await rules.evaluate_all("rows => rows.map(r => r.dataset.rule)")
    assert shown_rules == asked_rules
    for row in await rules.all():
        assert (await row.locator("td").nth(2).inner_text()).strip(), "a rule without its finding"
    await shot(page, "customer-refund-decided")


# --- 5. an administrator suspends an account ----------------------------------------------------


async def test_an_admin_suspends_an_account_and_the_customer_sees_why(
    new_context: NewContext, live_runtime: Runtime, shot: Shooter
) -> None:
    admin, _secret, _token = await seed_admin(live_runtime, two_factor=False)
    customer = await seed_customer(live_runtime)
    async with unit_of_work(live_runtime.sessionmaker) as session:
        await seed_node_in(session)
        device = await factories.create_device(session, customer)
        await desired_state_service.refresh_account(session, live_runtime, customer.id)
    assert await served(live_runtime, device)

    page = await (await new_context()).new_page()
    await log_in(page, customer.email)
    await expect(page.locator("#account-status")).to_have_count(0)
    await shot(page, "customer-dashboard-before")

    # An administrator without two-factor sign-in is sent to set it up before the panel opens.
    desk = await (await new_context()).new_page()
    await log_in(desk, admin.email, admin_next=True)
    await expect(desk).to_have_url(re.compile("/account$"))
    await shot(desk, "admin-needs-two-factor")
    secret = await enrol_two_factor(desk, shot)
    # The session from before two-factor does not open the panel: log in again with a code.
    await desk.goto("/admin")
    await expect(desk.get_by_role("alert")).to_contain_text("log in again with a code")
    await shot(desk, "admin-panel-needs-a-new-session")
    await desk.get_by_role("button", name="Log out and log in again with a code").click()
    await admin_log_in(desk, admin, secret, next_step=True)
    await expect(desk).to_have_url(re.compile("/admin$"))
    await desk.get_by_role("link", name="Accounts", exact=True).click()
    await desk.get_by_label("Email or account id").fill(customer.email)
    await desk.get_by_role("button", name="Search").click()
    await desk.get_by_role("link", name=customer.email).click()
    await shot(desk, "admin-account")
    # No reason, no suspension: the message sits next to the field.
    await desk.get_by_role("button", name="Suspend the account").click()
    await expect(desk.locator("#suspend-reason-error")).to_be_visible()
    await shot(desk, "admin-suspend-needs-a-reason")
    reason = "Port scanning from your connection (terms: unauthorized access to networks)."
    await desk.get_by_label("Reason (the customer reads it)").first.fill(reason)
    await desk.get_by_role("button", name="Suspend the account").click()
    await expect(desk.get_by_role("status").first).to_contain_text("suspended")
    await expect(desk.locator("#account-status-reason")).to_have_text(reason)
    await shot(desk, "admin-suspended")

    await page.reload()
    await expect(page.locator("#account-status")).to_contain_text(f"suspended: {reason}")
    await shot(page, "customer-dashboard-suspended")
    async with unit_of_work(live_runtime.sessionmaker) as session:
        again = await session.get(Account, customer.id)
        assert again is not None
        assert again.status is AccountStatus.suspended
    # Access ended at once: the device left what every node must serve.
    assert not await served(live_runtime, device)


async def served(runtime: Runtime, device: Device) -> bool:
    async with unit_of_work(runtime.sessionmaker) as session:
        return await session.get(ServedPeer, device.id) is not None


# --- 4. data export and account deletion ----------------------------------------------------------


async def test_export_the_data_then_delete_the_account_and_its_device_leaves_the_nodes(
    page: Page, live_runtime: Runtime, shot: Shooter
) -> None:
    customer = await seed_customer(live_runtime)
    async with unit_of_work(live_runtime.sessionmaker) as session:
        await seed_node_in(session)
        device = await factories.create_device(session, customer, name="Phone")
        await desired_state_service.refresh_account(session, live_runtime, customer.id)
    assert await served(live_runtime, device)

    await log_in(page, customer.email)
    await page.get_by_role("link", name="Privacy", exact=True).first.click()
    await shot(page, "privacy-center")
    async with page.expect_download() as started:
        await page.get_by_role("button", name="Download my data").click()
    download = await started.value
    assert download.suggested_filename.endswith(".json")
    text = (await download.path()).read_text()
    export = json.loads(text)
    assert export["format"] == "burrow-export/1"
    assert export["account"]["email"] == customer.email
    assert [d["public_key"] for d in export["devices"]] == [device.public_key]
    assert "private_key" not in text.lower().replace("-", "_")
    assert len(export["subscriptions"]) == 1
    assert export["privacy_mode"] == "strict"
    assert export["connection_records"] == []

    await page.get_by_role("link", name="Delete my account…").click()
    await expect(page.locator("#retention li").first).to_be_visible()
    await shot(page, "delete-confirmation")
    # Without the tick box, nothing is deleted and the page says why, next to the box.
    await page.get_by_label("Your password").fill(factories.DEFAULT_PASSWORD)
    await page.get_by_role("button", name="Delete my account").click()
    await expect(page.locator("#f-confirm-error")).to_be_visible()
    await shot(page, "delete-needs-the-tick")
    assert await served(live_runtime, device)

    await page.get_by_label("Your password").fill(factories.DEFAULT_PASSWORD)
    await page.get_by_label(re.compile("I understand that my account")).check()
    await page.get_by_role("button", name="Delete my account").click()
    await expect(page.locator("#deleted")).to_be_visible()
    # What the law makes us keep, and for how long, is said on the page.
    await expect(page.locator("#retention")).to_contain_text("accounting law")
    await expect(page.locator("#retention")).to_contain_text("10 years")
    await shot(page, "deleted")

    # Access ended at once, the session is gone, and the personal data with it.
    assert not await served(live_runtime, device)
    await page.goto("/dashboard")
    await expect(page).to_have_url(re.compile("/login"))
    await shot(page, "signed-out-after-deletion")
    async with unit_of_work(live_runtime.sessionmaker) as session:
        gone = await session.get(Account, customer.id)
        assert gone is not None
        assert gone.status is AccountStatus.erased
        assert gone.email != customer.email
        assert await session.get(Device, device.id) is None
