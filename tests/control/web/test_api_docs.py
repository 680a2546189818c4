"""``/api/docs`` renders in a real browser that may reach nothing but this server."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.server import RunningServer

from .conftest import NewContext

pytest.importorskip("playwright", reason="needs playwright (pip install -e '.[dev]')")
from playwright.async_api import Route, expect


async def test_the_docs_page_names_no_other_host(client: httpx.AsyncClient) -> None:
    page = await client.get("/api/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text
    assert "https://" not in page.text
    assert "/api/docs/assets/swagger-ui-bundle.js" in page.text
    # The browser is told so too: the page's policy allows no other host.
    policy = page.headers["content-security-policy"]
    assert "https:" not in policy
    assert "http:" not in policy
    script = await client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.text


async def test_the_docs_render_with_every_other_host_blocked(
    new_context: NewContext, live_server: RunningServer
) -> None:
    context = await new_context()
    local = urlsplit(live_server.url).netloc
    blocked: list[str] = []
    served: list[str] = []

    async def only_local(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == local or url.startswith("data:"):
            served.append(url)
            await route.continue_()
        else:
            blocked.append(url)
            await route.abort()

    await context.route("**/*", only_local)
    page = await context.new_page()
    await page.goto("/api/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("burrow")
    # Swagger UI read the whole document: an operation of the devices API is listed.
    await expect(page.locator("#operations-devices-add_device_api_v1_devices_post")).to_be_visible()
    assert blocked == []
    assert any(url.endswith("/api/openapi.json") for url in served)
