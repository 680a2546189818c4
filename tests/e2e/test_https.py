"""Going to production: Caddy (deploy/Caddyfile, its own internal CA) terminates TLS in front
of ``burrow serve`` in the lab's ``ctl`` namespace. Chromium on a customer's host, trusting
that CA through its NSS database (no certificate errors ignored), signs up and signs in over
HTTPS; a node on its own host enrolls over HTTPS and serves, its agent trusting the same CA.
burrow itself listens on 127.0.0.1 only and believes Caddy's forwarded headers
(BURROW_TRUSTED_PROXIES), so its cookies are Secure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.node.netns import unique_name
from tests.support.browser import launch, trust_ca_in_nssdb, why_no_browser

from .lab import BURROW, ROOT, NodeRun, World, build_world, prepare_world, wait_for

pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import Browser, Error, async_playwright, expect

PASSWORD = "a long and secret passphrase"


def lab_caddyfile(site: str, storage: Path) -> str:
    """deploy/Caddyfile as shipped, for the lab: the site is the control host's address with a
    certificate from Caddy's internal CA, and nothing is written outside ``storage``."""
    shipped = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "vpn.example.net {" in shipped
    glob = (
        "{\n\tadmin off\n\tskip_install_trust\n\tauto_https disable_redirects\n"
        f"\tdefault_sni {site}\n\tstorage file_system {storage}\n}}\n\n"
    )
    return glob + shipped.replace("vpn.example.net {", f"https://{site} {{\n\ttls internal")


class Https:
    def __init__(self, world: World, url: str, ca: Path) -> None:
        self.world = world
        self.url = url
        self.ca = ca


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Https]:
    for tool in ("caddy", "certutil"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt install caddy libnss3-tools)")
    with build_world(tmp_path_factory.mktemp("https"), customers=1) as world:
        prepare_world(world)
        site = world.ctl.ipv4
        url = f"https://{site}"
        world.start_control_plane(
            bind="127.0.0.1",
            BURROW_PUBLIC_URL=url,
            BURROW_PUBLIC_HOST=site,
            BURROW_TRUSTED_PROXIES="127.0.0.1,::1",
        )
        storage = world.tmp / "caddy"
        config = world.tmp / "Caddyfile"
        config.write_text(lab_caddyfile(site, storage))
        caddy = world.spawn(
            world.ctl.ns,
            "caddy",
            "caddy", "run", "--adapter", "caddyfile", "--config", str(config),
            env={"HOME": str(world.tmp), "XDG_DATA_HOME": str(storage),
                 "XDG_CONFIG_HOME": str(world.tmp / "caddy-config")},
        )  # fmt: skip
        ca = storage / "pki" / "authorities" / "local" / "root.crt"

        def up() -> bool:
            if not caddy.alive():
                raise AssertionError(f"caddy exited:\n{caddy.output()[-3000:]}")
            if not ca.exists():
                return False
            probe = world.customers[0].ns.run(
                "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(ca),
                f"{url}/healthz", check=False,
            )  # fmt: skip
            return probe.stdout == "200"

        wait_for(up, 30, "caddy to serve burrow over HTTPS")
        yield Https(world, url, ca)


@pytest.fixture
async def trusting_browser(https: Https, tmp_path: Path) -> AsyncIterator[Browser]:
    reason = why_no_browser()
    if reason is not None:
        pytest.skip(reason)
    home = tmp_path / "home"
    trust_ca_in_nssdb(home, https.ca, "burrow lab CA")
    async with async_playwright() as playwright:
        browser = await launch(
            playwright, netns=https.world.customers[0].ns.name, tmp=tmp_path, home=home
        )
        try:
            yield browser
        finally:
            await browser.close()


async def test_a_browser_that_trusts_the_ca_signs_up_and_in_over_https(
    https: Https, trusting_browser: Browser, tmp_path: Path
) -> None:
    context = await trusting_browser.new_context(base_url=https.url)
    context.set_default_timeout(15_000)
    page = await context.new_page()
    email = "tls.customer@example.com"

    await page.goto("/signup")
    assert page.url.startswith(f"{https.url}/signup")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    adult = page.locator("#f-age-adult")
    if await adult.count():
        await adult.check()
    await page.get_by_label(re.compile("I have read and accept")).check()
    await page.get_by_role("button", name="Create account").click()
    # Signed up; a new account signs in itself (the answer must not tell who has one).
    await expect(page).to_have_url(re.compile("/login"))
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile("/dashboard$"))
    assert page.url.startswith(https.url)

    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies["burrow_session"]["secure"], cookies
    assert all(c["secure"] for c in cookies.values()), cookies
    await context.close()

    # The same browser without the CA in its NSS database refuses the site: the trust above
    # came from the CA, not from errors being ignored.
    async with async_playwright() as playwright:
        bare = await launch(playwright, netns=https.world.customers[0].ns.name, tmp=tmp_path)
        try:
            untrusting = await bare.new_page()
            with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
                await untrusting.goto(f"{https.url}/login")
        finally:
            await bare.close()


def test_a_node_enrolls_and_serves_over_https(https: Https) -> None:
    world = https.world
    assert world.api is not None
    created: dict[str, Any] = world.api.call(
        "POST",
        "/api/v1/admin/nodes",
        token=world.admin_token,
        expect=201,
        json={"name": "tls-1", "country": "NL", "city": "Utrecht",
              "endpoint_host": world.node_hosts[0].ipv4},
    ).json()  # fmt: skip
    command = created["enrollment"]["command"]
    found = re.fullmatch(r"burrow node enroll --control (\S+) --token (\S+)", command)
    assert found is not None, command
    assert found.group(1) == https.url  # the public HTTPS address, no loopback
    host = world.node_hosts[0]
    state_dir = world.tmp / "tls-node"
    argv = [BURROW, "node", "enroll", "--control", found.group(1), "--token", found.group(2),
            "--state-dir", str(state_dir)]  # fmt: skip

    # Without the CA the agent refuses the control plane's certificate, in words, not a trace.
    refused = host.ns.run(*argv, check=False, timeout=60)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stdout + refused.stderr
    said = refused.stdout + refused.stderr
    assert "TLS certificate is not trusted" in said, said
    assert "SSL_CERT_FILE" in said

    trusted = subprocess.run(
        host.ns.argv(*argv),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SSL_CERT_FILE": str(https.ca)},
        check=False,
    )
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr

    world.node_extra["SSL_CERT_FILE"] = str(https.ca)
    node = NodeRun(world, 0, host, state_dir, unique_name("bwn"), node_id=created["node"]["id"])
    node.start()

    def online() -> bool:
        assert world.api is not None
        state = world.api.call(
            "GET", f"/api/v1/admin/nodes/{created['node']['id']}", token=world.admin_token
        ).json()
        return bool(state["health"]["state"] == "online")

    wait_for(online, 30, "the node to report over HTTPS")
