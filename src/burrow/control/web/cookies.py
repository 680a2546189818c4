"""Signed values and the web's cookie settings.

Small values the browser keeps for us (flash messages, the signed-out CSRF secret) are signed
with the secret key so that a page cannot be fed a message or a token it did not make.
"""

from __future__ import annotations

import base64
import hmac
from typing import Literal

from fastapi import Request, Response

from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest

FLASH_COOKIE = "burrow_flash"
CSRF_COOKIE = "burrow_csrf"


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _secret(request: Request) -> str:
    return runtime_of(request).settings.secret_key.get_secret_value()


def sign(request: Request, purpose: str, value: str) -> str:
    """``value`` (any text) as ``base64.signature``, the signature bound to ``purpose``."""
    encoded = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
    return f"{encoded}.{keyed_digest(_secret(request), f'{purpose}:{encoded}')}"


def unsign(request: Request, purpose: str, signed: str | None) -> str | None:
    """The value of a ``sign`` result, or None when it is missing, altered or for another use."""
    if not signed or "." not in signed:
        return None
    encoded, signature = signed.rsplit(".", 1)
    expected = keyed_digest(_secret(request), f"{purpose}:{encoded}")
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def secure_cookies(request: Request) -> bool:
    # Behind a TLS-terminating proxy the request arrives over http: the scheme a trusted proxy
    # forwarded (X-Forwarded-Proto, BURROW_TRUSTED_PROXIES) or an https public URL says TLS.
    if request.url.scheme == "https":
        return True
    return runtime_of(request).settings.public_url.startswith("https://")


def set_cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    samesite: Literal["lax", "strict"] = "lax",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite=samesite,
        secure=secure_cookies(request),
        path="/",
    )


def delete_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path="/", httponly=True, samesite="lax", secure=secure_cookies(request)
    )
