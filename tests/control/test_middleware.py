"""The edge of every request: body limits, same-origin API calls by cookie, security headers."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.deps import SESSION_COOKIE
from burrow.control.middleware import inline_script_hashes
from burrow.control.runtime import Runtime
from burrow.control.security import origin_of
from burrow.wire import API_PREFIX
from tests.control.node_api.conftest import new_enrollment_token
from tests.support.browser import launch, why_no_browser
from tests.support.factories import (
    create_account,
    create_node,
    create_session_token,
    create_subscription,
    new_public_key,
)
from tests.support.server import serving

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "burrow" / "control" / "web" / "templates"
MIB = 1024 * 1024


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


# --- Body limits ---------------------------------------------------------------------------


async def test_an_api_body_over_the_limit_is_413_problem_json(client: httpx.AsyncClient) -> None:
    body = json.dumps({"email": "a@example.com", "password": "x" * (2 * MIB)})
    response = await client.post(
        "/api/v1/accounts", content=body, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 413)
    assert "1 MiB" in problem["detail"]


async def test_a_chunked_body_without_length_is_counted_and_refused(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "a@example.com", "password": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/api/v1/accounts", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


async def test_a_page_post_over_the_limit_is_an_html_page(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/login",
        content=b"email=a%40example.com&password=" + b"x" * (2 * MIB),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert "too large" in response.text


async def test_a_node_report_of_65536_peers_fits(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await new_enrollment_token(runtime, "big-1")
    enrolled = await client.post(
        f"{API_PREFIX}/enroll", json={"token": token, "public_key": new_public_key()}
    )
    assert enrolled.status_code == 200, enrolled.text
    headers = {"Authorization": f"Bearer {enrolled.json()['node_token']}"}
    # The largest a peer line can be: full 64-bit counters, pretty-printed.
    peer = {
        "public_key": new_public_key(),
        "connected": False,
        "rx_bytes": 2**64 - 1,
        "tx_bytes": 2**64 - 1,
    }
    report = {"boot_id": "b" * 64, "seq": 1, "revision": 0, "peers": [peer] * 65536}
    body = json.dumps(report, indent=2).encode()
    assert len(body) > 8 * MIB  # larger than any ordinary body limit would allow
    response = await client.post(
        f"{API_PREFIX}/report",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text[:300]


async def test_a_node_report_over_its_limit_is_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    limit = settings.node_report_max_body_bytes
    response = await client.post(
        f"{API_PREFIX}/report",
        headers={"Content-Length": str(limit + 1), "Content-Type": "application/json"},
        content=b"{}",
    )
    assert_problem(response, 413)


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    with serving(settings) as running:
        yield running.url


def _raw_request(url: str, head: bytes, chunks: Iterator[bytes]) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body went
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def test_a_real_server_refuses_a_chunked_body_over_the_limit(server: str) -> None:
    """Chunked, without Content-Length, against uvicorn: 413, the app never parses it."""
    head = (
        b"POST /api/v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = _raw_request(server, head, (b"x" * 65536 for _ in range(64)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


# --- Same origin for API calls made with the session cookie (deps.get_session_token) -----


@pytest.fixture
async def customer(runtime: Runtime) -> str:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        await create_subscription(session, account)
        return await create_session_token(session, account)


CANCEL = "/api/v1/subscriptions/current/cancel"


async def _cancelled(client: httpx.AsyncClient, token: str) -> bool:
    current = await client.get(
        "/api/v1/subscriptions/current", headers={"Authorization": f"Bearer {token}"}
    )
    assert current.status_code == 200, current.text
    return bool(current.json()["cancel_at_period_end"])


async def test_a_foreign_origin_cannot_cancel_with_the_cookie(
    client: httpx.AsyncClient, customer: str
) -> None:
    response = await client.post(
        CANCEL,
        headers={"Origin": "https://evil.example", "Cookie": f"{SESSION_COOKIE}={customer}"},
    )
    problem = assert_problem(response, 403)
    assert "another website" in problem["detail"]
    assert not await _cancelled(client, customer)


@pytest.mark.parametrize(
    "headers",
    [
        {},  # neither Origin nor Referer: refused, as OWASP advises
        {"Origin": "null"},  # a sandboxed frame or a cross-origin redirect
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "https://testserver"},  # another scheme is another origin
        {"Referer": "https://evil.example/page"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain, which SameSite=Lax lets by
        {"Sec-Fetch-Site": "cross-site", "Referer": "http://testserver/"},
    ],
)
async def test_cookie_calls_without_our_origin_are_refused(
    client: httpx.AsyncClient, customer: str, headers: dict[str, str]
) -> None:
    response = await client.post(
        CANCEL, headers={**headers, "Cookie": f"{SESSION_COOKIE}={customer}"}
    )
    assert_problem(response, 403)
    assert not await _cancelled(client, customer)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://testserver"},
        {"Origin": "http://testserver:80"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Referer": "http://testserver/dashboard"},
    ],
)
async def test_cookie_calls_from_our_own_origin_pass(
    client: httpx.AsyncClient, customer: str, headers: dict[str, str]
) -> None:
    response = await client.post(
        CANCEL, headers={**headers, "Cookie": f"{SESSION_COOKIE}={customer}"}
    )
    assert response.status_code == 200, response.text
    assert await _cancelled(client, customer)


async def test_bearer_clients_are_not_affected(client: httpx.AsyncClient, customer: str) -> None:
    response = await client.post(
        CANCEL,
        headers={
            "Authorization": f"Bearer {customer}",
            "Origin": "https://some-app.example",
            "Cookie": f"{SESSION_COOKIE}={customer}",
        },
    )
    assert response.status_code == 200, response.text


async def test_safe_methods_with_the_cookie_still_read(
    client: httpx.AsyncClient, customer: str
) -> None:
    response = await client.get(
        "/api/v1/subscriptions/current",
        headers={"Origin": "https://evil.example", "Cookie": f"{SESSION_COOKIE}={customer}"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://vpn.example/", "https://vpn.example"),
        ("https://VPN.example:443/x", "https://vpn.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:80/", "http://[::1]"),
    ],
)
def test_origin_of(url: str, origin: str) -> None:
    assert origin_of(url) == origin


# --- Security headers ----------------------------------------------------------------------


def _assert_secure(response: httpx.Response) -> str:
    csp = response.headers["content-security-policy"]
    directives = dict(
        ([*part.split(" ", 1), ""])[:2] for part in (p.strip() for p in csp.split(";")) if part
    )
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    return csp


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/login",
        "/servers",
        "/terms",
        "/api/v1/plans",
        "/api/v1/devices",  # 401
        "/api/v1/nowhere",  # 404 problem
        "/nowhere",  # 404 page
        "/healthz",
        "/static/burrow.css",
        "/api/openapi.json",
    ],
)
async def test_every_answer_carries_the_security_headers(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    csp = _assert_secure(response)
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp


async def test_refusals_carry_the_headers_too(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/accounts", headers={"Content-Length": str(100 * MIB)}, content=b"{}"
    )
    assert response.status_code == 413
    _assert_secure(response)


_INLINE = re.compile(r"<script(?![^>]*\bsrc=)|\son[a-z]+\s*=|\sstyle\s*=|<style", re.I)


def test_no_template_has_inline_script_or_style() -> None:
    offenders = [
        f"{path.relative_to(TEMPLATES)}: {match.group(0)}"
        for path in TEMPLATES.rglob("*.html")
        for match in _INLINE.finditer(path.read_text())
    ]
    assert offenders == []


async def test_the_api_docs_allow_exactly_their_own_inline_script(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/docs")
    assert response.status_code == 200
    csp = _assert_secure(response)
    hashes = inline_script_hashes(response.content)
    assert hashes, "the docs page starts Swagger UI with an inline script"
    script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
    for source in hashes:
        assert source in script_src
    assert "'unsafe-inline'" not in script_src


@pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))
async def test_pages_run_under_the_policy_in_chromium(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """Real Chromium: no policy violation on the pages, the browser key still made in JS,
    and the docs page's inline script is allowed (its bundle may be out of reach here)."""
    from playwright.async_api import async_playwright

    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        await create_subscription(session, account)
        await create_node(session)
        token = await create_session_token(session, account)

    with serving(settings) as running:
        async with async_playwright() as playwright:
            browser = await launch(playwright, tmp=tmp_path)
            try:
                context = await browser.new_context()
                await context.add_cookies(
                    [{"name": SESSION_COOKIE, "value": token, "url": running.url}]
                )
                page = await context.new_page()
                violations: list[str] = []
                page.on(
                    "console",
                    lambda m: (
                        violations.append(m.text) if "Content Security Policy" in m.text else None
                    ),
                )
                for path in ("/", "/servers", "/devices", "/api/docs"):
                    await page.goto(running.url + path)
                    await page.wait_for_load_state("load")
                assert violations == []
                # Swagger UI draws the operations from /api/openapi.json under its policy.
                await page.goto(running.url + "/api/docs")
                await page.wait_for_selector(".opblock", timeout=15_000)
                assert violations == []
                # The browser-made key: devices.js makes an X25519 pair and fills the file.
                await page.goto(running.url + "/devices")
                await page.fill("#f-name", "Laptop")
                await page.check("#f-browser_key")
                await page.click("button:has-text('Add device')")
                await page.wait_for_selector("#browser-key-note")
                config = await page.text_content("#config-text") or ""
                assert re.search(r"^PrivateKey = [A-Za-z0-9+/]{43}=$", config, re.M), config
                assert violations == []
            finally:
                await browser.close()
