"""Fixtures of the web page tests: httpx clients signed in as a customer (``web_customer``),
and for the browser journeys a real server on loopback driven by a real chromium."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyotp
import pytest

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account, AccountStatus
from burrow.control.runtime import Runtime
from tests.conftest import STRICT_POLICY, TEST_SECRET
from tests.support.browser import (
    NAVIGATION_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    Shooter,
    launch,
    why_no_browser,
)
from tests.support.factories import create_account, create_session_token, create_subscription
from tests.support.server import RunningServer, free_port, serving
from tests.support.smtp import SmtpServer
from tests.support.web import sign_in_as

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page


@dataclass
class WebCustomer:
    account: Account
    token: str


MakeWebCustomer = Callable[..., Awaitable[WebCustomer]]


@pytest.fixture
def web_customer(runtime: Runtime, client: httpx.AsyncClient) -> MakeWebCustomer:
    """A committed account, signed in on ``client`` (unless ``sign_in=False``).

    ``two_factor=True`` turns TOTP on (``pyotp.TOTP(account.totp_secret)`` makes codes); the
    admin pages need it.
    """

    async def make(
        plan_code: str | None = "personal-monthly",
        *,
        status: AccountStatus = AccountStatus.active,
        admin: bool = False,
        two_factor: bool = False,
        sign_in: bool = True,
    ) -> WebCustomer:
        async with unit_of_work(runtime.sessionmaker) as session:
            account = await create_account(session, status=status, admin=admin, totp=False)
            if two_factor:
                account.totp_secret = pyotp.random_base32()
                account.totp_enabled = True
            token = await create_session_token(session, account)
            if plan_code is not None:
                await create_subscription(session, account, plan_code=plan_code)
        if sign_in:
            sign_in_as(client, token)
        return WebCustomer(account, token)

    return make


# --- the browser tests: a real server on loopback, a real chromium ------------------------------
#
# Browser tests (marker ``browser``, added to every test that uses the ``browser`` fixture) run
# Playwright's async API against Debian's ``chromium``, never a downloaded browser, and skip with
# one line where either is missing. The app runs in uvicorn on a loopback port with its own
# SQLite database (copied from the migrated template) and the ``smtp`` fixture's real SMTP
# server, so verification mails can be read back. SQLite only: the journeys check what a person
# sees, the services under them are tested on both databases already, and one backend keeps the
# browser tests inside their time budget. ``await shot(page, "step")`` saves each step as
# ``test-output/screenshots/<test>/<NN>-<step>.png``; a failing test adds a last picture of every
# page it had open.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the test item, so fixtures can tell that a test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def web_settings(sqlite_template: Path, tmp_path: Path, smtp: SmtpServer) -> tuple[Settings, int]:
    """Settings of a server about to start on a port chosen now (the links in mails need it)."""
    path = tmp_path / "web.db"
    shutil.copyfile(sqlite_template, path)
    port = free_port()
    settings = Settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{path}",
        policy_path=STRICT_POLICY,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        smtp_port=smtp.port,
        scheduler_enabled=False,
        public_url=f"http://127.0.0.1:{port}",
        long_poll_timeout_seconds=1.0,
    )
    return settings, port


@pytest.fixture
def live_server(web_settings: tuple[Settings, int]) -> Iterator[RunningServer]:
    """The real app in uvicorn on loopback, with its scheduler off."""
    settings, port = web_settings
    with serving(settings, port=port) as running:
        # The first page a server renders loads its templates and opens its database pool; on a
        # busy machine that took longer than a browser step may. Render one before the browser
        # comes, so a step's timeout measures the page, not the server's warming up.
        httpx.get(f"{running.url}/login", timeout=60).raise_for_status()
        yield running


@pytest.fixture
async def live_runtime(live_server: RunningServer) -> AsyncIterator[Runtime]:
    """A runtime on the live server's database, in the test's own event loop, to seed rows
    (an admin with a known TOTP secret, a node) and to check what the browser changed."""
    runtime = Runtime.build(live_server.settings)
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    reason = why_no_browser()
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await launch(playwright, tmp=tmp_path)
        try:
            yield launched
        finally:
            await launched.close()


NewContext = Callable[[], Awaitable["BrowserContext"]]


@pytest.fixture
async def new_context(
    browser: Browser, live_server: RunningServer, shot: Shooter, request: pytest.FixtureRequest
) -> AsyncIterator[NewContext]:
    """Makes browser contexts (one per person: a customer, an administrator), each with its own
    cookies, with relative URLs resolved against the live server."""
    made: list[BrowserContext] = []

    async def make() -> BrowserContext:
        context = await browser.new_context(
            base_url=live_server.url,
            viewport={"width": 1024, "height": 800},
            accept_downloads=True,
        )
        context.set_default_timeout(STEP_TIMEOUT_MS)
        context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        made.append(context)
        return context

    yield make
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        for context in made:
            for page in context.pages:
                await shot(page, "failure")
    for context in made:
        await context.close()


@pytest.fixture
async def page(new_context: NewContext) -> Page:
    """One page in one fresh context: enough for a test with one person in it."""
    context = await new_context()
    return await context.new_page()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shooter:
    """``await shot(page, "step")`` saves the page as the test's next numbered screenshot."""
    return Shooter.fresh(request.node.name)
