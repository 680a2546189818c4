"""What every request meets before a route sees it: a body limit, and the security headers
of every answer.

Each is a small pure-ASGI middleware (no ``BaseHTTPMiddleware``, so long polls and streamed
answers pass untouched). ``create_app`` installs them; the answer to a refused request (413)
is built by a callable the app passes in, so this module renders nothing of its own and
imports no domain. (The same-origin check of cookie-authenticated API calls lives with the
authentication, ``deps.get_session_token``: only there is it known that the cookie is what
authenticates the call.)
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

from secure import (
    ContentSecurityPolicy,
    CrossOriginOpenerPolicy,
    ReferrerPolicy,
    Secure,
    StrictTransportSecurity,
    XContentTypeOptions,
    XFrameOptions,
)
from secure.middleware.asgi import SecureASGIMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Builds the answer to a refused request: (scope, status, message) -> an ASGI app that sends it.
Refusal = Callable[[Scope, int, str], Awaitable[ASGIApp]]


# --- Body limit ------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class BodyLimits:
    """The most bytes a request body may have: ``default``, or the first matching prefix's."""

    default: int
    by_prefix: Mapping[str, int]

    def for_path(self, path: str) -> int:
        for prefix, limit in self.by_prefix.items():
            if path.startswith(prefix):
                return limit
        return self.default


class BodyLimitMiddleware:
    """Refuse a request body over its route's limit with 413 before anything parses it.

    A declared ``Content-Length`` over the limit is refused without reading a byte. Otherwise
    (chunked bodies have no length) the body is read here, counting, up to the limit and
    handed on whole; the app never holds more than the limit, whatever the client sends.
    """

    def __init__(self, app: ASGIApp, *, limits: BodyLimits, refuse: Refusal) -> None:
        self.app = app
        self.limits = limits
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False  # the server refuses a malformed length itself
            if too_large:
                await self._refuse(scope, receive, send, limit)
                return
        try:
            first, rest = await _read_body(receive, limit)
        except BodyTooLarge:
            await self._refuse(scope, receive, send, limit)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            # After the body: what the client does next (a disconnect, for a long poll).
            return await rest()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        message = (
            f"The request is too large: at most {_size(limit)} may be sent here. "
            "Send less at a time."
        )
        answer = await self.refuse(scope, 413, message)
        # The client may still be sending; the connection closes after the answer.
        await answer(scope, receive, send)


async def _read_body(receive: Receive, limit: int) -> tuple[Message, Receive]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return message, receive  # a disconnect before the body ended: pass it on
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return {"type": "http.request", "body": body, "more_body": False}, receive


def _size(limit: int) -> str:
    if limit >= 1024 * 1024 and limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit >= 1024 and limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


# --- Security headers ------------------------------------------------------------------------

# The pages load only their own script and style files (static/), so no inline code runs.
_PAGE_POLICY = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'",),
    "connect-src": ("'self'",),
    "object-src": ("'none'",),
    "base-uri": ("'none'",),
    "frame-ancestors": ("'none'",),
}

# The API documentation page is FastAPI's Swagger UI: its bundle from this server
# (control/api_docs.py: no browser calls a CDN), one inline script that starts it (allowed by
# its hash, see DocsPolicyMiddleware), and the inline styles and data: images Swagger UI makes
# as it draws.
_DOCS_POLICY = {
    **_PAGE_POLICY,
    "style-src": ("'self'", "'unsafe-inline'"),
    "img-src": ("'self'", "data:"),
}


def _policy(directives: Mapping[str, tuple[str, ...]]) -> ContentSecurityPolicy:
    csp = ContentSecurityPolicy().clear()
    for name, sources in directives.items():
        csp.custom_directive(name, *sources)
    return csp


def security_headers(public_url: str, directives: Mapping[str, tuple[str, ...]]) -> Secure:
    """The headers of every answer (``secure`` writes and validates them)."""
    hsts = None
    if public_url.lower().startswith("https://"):
        hsts = StrictTransportSecurity().max_age(63_072_000)
    return Secure(
        csp=_policy(directives),
        xfo=XFrameOptions().deny(),
        xcto=XContentTypeOptions().nosniff(),
        # Same-origin: our own pages still name themselves (and keep Origin on our own
        # requests), no other site learns which page of a VPN provider's panel someone was on.
        referrer=ReferrerPolicy().same_origin(),
        coop=CrossOriginOpenerPolicy().same_origin(),
        hsts=hsts,
    )


def page_headers(public_url: str) -> Secure:
    return security_headers(public_url, _PAGE_POLICY)


def docs_headers(public_url: str) -> Secure:
    return security_headers(public_url, _DOCS_POLICY)


_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.I)


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP sources (``'sha256-...'``) for each inline ``<script>`` of a page."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


class DocsPolicyMiddleware:
    """The API documentation pages: allow exactly the inline script each of them carries.

    Swagger UI's page is made by FastAPI from fixed values (no request data reaches it), so
    hashing its inline script as it leaves allows that script and nothing injected later,
    whichever copy of Swagger UI (CDN or local files) the page loads.
    """

    def __init__(self, app: ASGIApp, *, paths: tuple[str, ...], secure: Secure) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.base = secure.headers["Content-Security-Policy"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            assert start is not None
            hashes = " ".join(inline_script_hashes(bytes(body)))
            policy = self.base.replace("script-src ", f"script-src {hashes} ", 1)
            headers = [
                (k, v)
                for k, v in start.get("headers", [])
                if k.lower() != b"content-security-policy"
            ]
            headers.append((b"content-security-policy", policy.encode("latin-1")))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": bytes(body), "more_body": False})

        await self.app(scope, receive, hold)


class SecurityHeadersMiddleware:
    """Every answer gets the page headers, the documentation pages their own policy."""

    def __init__(self, app: ASGIApp, *, public_url: str, docs_paths: tuple[str, ...]) -> None:
        docs = docs_headers(public_url)
        self.docs_paths = frozenset(docs_paths)
        # secure's middleware types ASGI loosely (object); it is an ASGI app all the same.
        self.pages = cast(ASGIApp, SecureASGIMiddleware(app, secure=page_headers(public_url)))
        # The hashes go in after Secure wrote the documentation pages' base policy.
        self.docs = DocsPolicyMiddleware(
            cast(ASGIApp, SecureASGIMiddleware(app, secure=docs)), paths=docs_paths, secure=docs
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.docs_paths:
            await self.docs(scope, receive, send)
        else:
            await self.pages(scope, receive, send)
