"""Helpers for testing the web pages with httpx: CSRF tokens, forms, signed-in browsers.

A page's forms carry a ``csrf_token`` bound to the browser's session cookie (or, signed out,
to its ``burrow_csrf`` cookie): GET the page that shows the form first, with the same client,
then post. ``post_form`` does both.
"""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from burrow.control.deps import SESSION_COOKIE

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: str | httpx.Response) -> str:
    text = page.text if isinstance(page, httpx.Response) else page
    found = _TOKEN.search(text)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def post_form(
    client: httpx.AsyncClient,
    action: str,
    data: dict[str, Any] | None = None,
    *,
    page: str | None = None,
    follow: bool = False,
) -> httpx.Response:
    """GET ``page`` (default: ``action``) for its token, then POST ``data`` to ``action``."""
    shown = await client.get(page or action)
    assert shown.status_code < 400, f"GET {page or action}: {shown.status_code} {shown.text}"
    body = {**(data or {}), "csrf_token": csrf_token(shown)}
    return await client.post(action, data=body, follow_redirects=follow)


def sign_in_as(client: httpx.AsyncClient, session_token: str) -> None:
    """Make ``client`` a browser signed in with ``session_token`` (a factories token)."""
    client.cookies.set(SESSION_COOKIE, session_token)


def field_error(page: str | httpx.Response, name: str) -> str | None:
    """The message shown next to field ``name`` (the ``f-<name>-error`` element), if any."""
    text = page.text if isinstance(page, httpx.Response) else page
    found = re.search(rf'id="f-{re.escape(name)}-error"[^>]*>(.*?)</p>', text, re.S)
    return html.unescape(found.group(1).strip()) if found else None


def field_value(page: str | httpx.Response, name: str) -> str | None:
    """The value an ``<input name=...>`` is filled with."""
    text = page.text if isinstance(page, httpx.Response) else page
    found = re.search(
        rf'<input id="f-{re.escape(name)}" name="{re.escape(name)}"[^>]*?value="([^"]*)"',
        text,
        re.S,
    )
    return html.unescape(found.group(1)) if found else None
