"""The Jinja2 environment, page rendering, redirects and flash messages.

Every page goes through ``render``: it adds what ``base.html`` needs (the CSRF token, the
signed-in account, flash messages, the provider's name) and sets or clears the cookies those
need. A POST that succeeds answers with ``redirect`` (303, post/redirect/get) and may carry a
flash message to the next page.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from burrow.control.policy.schemas import PROTOCOL_NAMES
from burrow.control.refunds.engine import rule_words
from burrow.control.terms.render import data_size
from burrow.control.web.cookies import (
    CSRF_COOKIE,
    FLASH_COOKIE,
    delete_cookie,
    runtime_of,
    set_cookie,
    sign,
    unsign,
)
from burrow.control.web.csrf import FIELD, csrf_token

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

FLASH_KINDS = ("success", "info", "error")


def _when(value: datetime | date | None, fmt: str = "%d %B %Y") -> str:
    if value is None:
        return "—"
    text = value.strftime(fmt)
    return text.lstrip("0") if fmt.startswith("%d") else text


def _when_time(value: datetime | None) -> str:
    return _when(value, "%d %B %Y, %H:%M UTC")


def _money(amount_minor: int | None, currency: str | None = None) -> str:
    if amount_minor is None:
        return "—"
    sign_ = "-" if amount_minor < 0 else ""
    units, cents = divmod(abs(amount_minor), 100)
    return f"{sign_}{units}.{cents:02d} {(currency or '').upper()}".strip()


def _bytes(count: int | None) -> str:
    return "—" if count is None else data_size(count)


def _csrf_field(token: str) -> Markup:
    return Markup('<input type="hidden" name="{}" value="{}">').format(FIELD, token)


env = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["date"] = _when
env.filters["datetime"] = _when_time
env.filters["money"] = _money
env.filters["bytes"] = _bytes
env.filters["rule_words"] = rule_words
env.filters["protocol_name"] = lambda protocol: PROTOCOL_NAMES.get(protocol, protocol)


def _read_flashes(request: Request) -> list[dict[str, str]]:
    raw = unsign(request, "flash", request.cookies.get(FLASH_COOKIE))
    if raw is None:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    return [
        {"kind": str(i.get("kind")), "text": str(i.get("text"))}
        for i in items
        if isinstance(i, dict) and i.get("kind") in FLASH_KINDS
    ][:5]


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render ``template`` into a full page answer."""
    runtime = runtime_of(request)
    token = csrf_token(request)
    flashes = _read_flashes(request)
    values: dict[str, Any] = {
        "request": request,
        "csrf_token": token,
        "csrf_field": _csrf_field(token),
        "current_account": getattr(request.state, "person", None),
        "provider_name": runtime.policy.provider.name,
        "affiliate_program": runtime.policy.affiliates is not None
        and runtime.policy.affiliates.enabled,
        "flashes": flashes,
        "path": request.url.path,
    }
    values.update(context or {})
    html = env.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code)
    nonce = getattr(request.state, "csrf_new_nonce", None)
    if nonce and not request.cookies.get(CSRF_COOKIE):
        set_cookie(request, response, CSRF_COOKIE, nonce)
    if request.cookies.get(FLASH_COOKIE):
        delete_cookie(request, response, FLASH_COOKIE)
    # Pages carry tokens and personal data: never from a shared cache.
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(
    request: Request, url: str, *, flash: str | None = None, kind: str = "success"
) -> RedirectResponse:
    """303 to ``url`` (after a POST), with an optional message shown on the next page."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        items = [*_read_flashes(request), {"kind": kind, "text": flash}][-5:]
        set_cookie(request, response, FLASH_COOKIE, sign(request, "flash", json.dumps(items)))
    return response


def safe_next(target: str | None, default: str = "/dashboard") -> str:
    """Only a path on this site: ``next=`` must never send a signed-in browser elsewhere."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 32 for c in target):
        return default
    return target


def trusted_svg(svg: str) -> Markup:
    """Inline SVG we drew ourselves (segno's QR codes, our charts), not customer text."""
    return Markup(svg)  # noqa: S704 - made by segno or by our own chart code from numbers
