"""Opaque tokens and password hashing shared by accounts, sessions and nodes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's current defaults


def new_token(prefix: str = "") -> str:
    """A random, URL-safe bearer token (256 bits)."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens are long and random, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def keyed_digest(secret: str, value: str) -> str:
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


# A fixed hash to verify against when an account does not exist, so that a login for an
# unknown email costs the same time as one for a known email.
DUMMY_PASSWORD_HASH = _hasher.hash("burrow-timing-equaliser")


# --- Where a browser's request comes from ----------------------------------------------------

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, default ports dropped."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or port == {"http": 80, "https": 443}.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def from_origin(headers: Mapping[str, str], allowed: str) -> bool:
    """Whether a request carrying a browser's cookie was made by a page of ``allowed``.

    OWASP's CSRF cheat sheet, "verifying origin with standard headers" and "Fetch Metadata":
    ``Origin`` decides when sent (every current browser sends it on a POST, PUT, PATCH or
    DELETE; ``null`` is never ours); else ``Sec-Fetch-Site`` must say ``same-origin``; else
    ``Referer`` must be on our origin. With none of them the request is refused, as the cheat
    sheet recommends: a program that sends the cookie can send the bearer token instead.
    """
    want = origin_of(allowed)
    origin = headers.get("origin")
    if origin is not None:
        return origin.strip() != "null" and origin_of(origin) == want
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() == "same-origin"
    referer = headers.get("referer")
    if referer is not None:
        return origin_of(referer) == want
    return False
