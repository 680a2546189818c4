"""Passwords and addresses: the rules a new password meets, and hashing off the event loop."""

from __future__ import annotations

import asyncio

from pydantic import TypeAdapter, ValidationError

from burrow.control.accounts.schemas import PASSWORD_MAX, PASSWORD_MIN, Email
from burrow.control.accounts.service.errors import WeakPassword
from burrow.control.errors import InvalidInput
from burrow.control.security import hash_password, verify_password

_email_adapter: TypeAdapter[str] = TypeAdapter(Email)


def parse_email(raw: str) -> str:
    """Validate and normalise an address typed outside the API (the CLI)."""
    try:
        return _email_adapter.validate_python(raw)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise InvalidInput(
            f"'{raw}' is not a usable email address: {reason}", field="email"
        ) from exc


def check_password(password: str, email: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise WeakPassword(f"Choose a password of at least {PASSWORD_MIN} characters.")
    if len(password) > PASSWORD_MAX:
        raise WeakPassword(f"A password has at most {PASSWORD_MAX} characters.")
    if password.strip().lower() == email.strip().lower():
        raise WeakPassword("Your password must not be your email address.")


async def new_password_hash(password: str) -> str:
    # argon2 is slow on purpose; keep it off the event loop.
    return await asyncio.to_thread(hash_password, password)


async def password_matches(stored_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password, stored_hash, password)
