"""CSRF protection for every form the web pages accept.

A signed-in browser's token is a keyed digest of its session token, so it is valid exactly as
long as the session. A signed-out browser (sign up, log in) gets a random nonce in an HttpOnly
cookie and the token is a keyed digest of that nonce (a signed double-submit cookie): another
site can make the browser send the cookie but can neither read it nor compute the token.

Every router made with ``routing.page_router`` checks the token on every unsafe method, so a
page module cannot forget it.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

from burrow.control.deps import SESSION_COOKIE
from burrow.control.security import keyed_digest
from burrow.control.web.cookies import CSRF_COOKIE, runtime_of

FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(Exception):
    """A form arrived without the token of the page that showed it."""


def _digest(request: Request, purpose: str, value: str) -> str:
    secret = runtime_of(request).settings.secret_key.get_secret_value()
    return keyed_digest(secret, f"{purpose}:{value}")


def _expected(request: Request) -> str | None:
    session_token = request.cookies.get(SESSION_COOKIE)
    if session_token:
        return _digest(request, "csrf-session", session_token)
    nonce = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "csrf_new_nonce", None)
    if nonce:
        return _digest(request, "csrf-anon", nonce)
    return None


def csrf_token(request: Request) -> str:
    """The token to put in this page's forms; a signed-out browser gets a nonce cookie for it.

    ``templating.render`` sets the cookie when a new nonce was made here.
    """
    expected = _expected(request)
    if expected is not None:
        return expected
    request.state.csrf_new_nonce = secrets.token_urlsafe(24)
    token = _expected(request)
    assert token is not None
    return token


async def verify_csrf(request: Request) -> None:
    """A router dependency: refuses an unsafe request whose form lacks the right token."""
    if request.method in SAFE_METHODS:
        return
    form = await request.form()
    sent = form.get(FIELD)
    expected = _expected(request)
    if not isinstance(sent, str) or expected is None or not hmac.compare_digest(sent, expected):
        raise CsrfRefused()
