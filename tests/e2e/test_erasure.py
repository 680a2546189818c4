"""Erasure through the privacy center, in a real browser, ends a real tunnel.

A customer's device carries traffic through a node of the lab; the customer then deletes the
account on the privacy page in Debian's chromium (run inside the control plane's namespace, where
the panel is served) and the tunnel stops within seconds: the node no longer has the peer, and
the old session token is refused. Screenshots of each step go to
``test-output/screenshots/<test>/``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.netns import unique_name
from tests.support.browser import (
    NAVIGATION_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    Shooter,
    launch,
    why_no_browser,
)

from .lab import API_PORT, NODES, Tunnel, World, build_world, prepare_world, wait_for
from .test_tunnels import REVOKE_SECONDS, device_on, reaches_internet, serves, works_within

pytestmark = pytest.mark.browser

# The password ``World.new_customer`` registers with.
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The lab with one node and one customer: all this journey needs, and quicker to build."""
    with build_world(tmp_path_factory.mktemp("erasure"), customers=1) as world:
        prepare_world(world)
        world.start_control_plane()
        name, country, city = NODES[0]
        created = world.create_node(0, name, country, city)
        world.enroll_and_run([(0, created["enrollment"]["token"], created["node"]["id"])])
        node = world.nodes[0]
        wait_for(lambda: node.wireguard_go_pid() is not None, 30, "the node to serve")
        yield world


@pytest.fixture
def tunnel_list() -> Iterator[list[Tunnel]]:
    made: list[Tunnel] = []
    yield made
    for tunnel in made:
        tunnel.down()


async def test_deleting_the_account_in_the_browser_stops_its_tunnel_within_seconds(
    small_world: World, tunnel_list: list[Tunnel], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    world = small_world
    reason = why_no_browser()
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright, expect

    assert world.api is not None
    node = world.nodes[0]
    customer = world.customers[0]
    # The lab's helpers block (and run their own event loops): threads keep this loop free.
    token, device = await asyncio.to_thread(device_on, world, node)
    email = world.api.call("GET", "/api/v1/accounts/me", token=token).json()["email"]
    tunnel = Tunnel(world, customer, unique_name("bwc"), "")
    tunnel_list.append(tunnel)
    await asyncio.to_thread(tunnel.up, device["config"])
    await asyncio.to_thread(works_within, customer, world, 10)

    shot = Shooter.fresh(request.node.name)
    async with async_playwright() as playwright:
        browser = await launch(playwright, netns=world.ctl.ns.name, tmp=tmp_path)
        try:
            context = await browser.new_context(base_url=f"http://127.0.0.1:{API_PORT}")
            context.set_default_timeout(STEP_TIMEOUT_MS)
            context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
            page = await context.new_page()
            try:
                await page.goto("/login")
                await page.get_by_label("Email address").fill(email)
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Log in").click()
                await expect(page).to_have_url(re.compile("/dashboard$"))
                await shot(page, "dashboard")
                await page.goto("/devices")
                await expect(page.locator("#devices-table")).to_contain_text("laptop")
                await shot(page, "devices")
                await page.goto("/privacy")
                await page.get_by_role("link", name="Delete my account…").click()
                await page.get_by_label("Your password").fill(PASSWORD)
                await page.get_by_label(re.compile("I understand that my account")).check()
                await shot(page, "delete-confirmation")
                assert reaches_internet(customer, world)
                await page.get_by_role("button", name="Delete my account").click()
                await expect(page.locator("#deleted")).to_be_visible()
                start = time.monotonic()
                await shot(page, "deleted")
            except BaseException:
                await shot(page, "failure")
                raise
        finally:
            await browser.close()

    await asyncio.to_thread(
        wait_for,
        lambda: not reaches_internet(customer, world, timeout=0.3),
        REVOKE_SECONDS,
        "traffic to stop after the deletion",
        0.1,
    )
    assert time.monotonic() - start < REVOKE_SECONDS
    assert not serves(node, device)
    assert device["public_key"] not in world.desired_peers(node)
    world.api.call("GET", "/api/v1/accounts/me", token=token, expect=401)
    # And it stays stopped.
    await asyncio.sleep(1)
    assert not reaches_internet(customer, world)
