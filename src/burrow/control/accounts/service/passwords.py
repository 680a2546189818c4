"""Passwords and addresses: the rules a new password meets, and hashing off the event loop.

A new password is refused when it is too short or long, is the email address, appears in the
list of leaked passwords shipped beside this module (``breached_passwords.txt``: see its
header for where it comes from), or when zxcvbn, given the address as something an attacker
knows, rates it easier to guess than ``MIN_SCORE``.
"""

from __future__ import annotations

import asyncio
import re
from functools import cache
from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from zxcvbn import zxcvbn

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


# zxcvbn's scale: 3 is "safely unguessable" (about 10^10 guesses); under it, refused.
MIN_SCORE = 3
# zxcvbn takes at most 72 characters and slows with length; what follows adds strength anyway.
_JUDGED_LENGTH = 64
BREACHED_FILE = Path(__file__).with_name("breached_passwords.txt")


@cache
def breached_passwords() -> frozenset[str]:
    lines = BREACHED_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("# "))


def _hints_from(email: str) -> list[str]:
    """What an attacker knows of the owner: the address, its name part with and without its
    separators, and each word of it."""
    email = email.strip().lower()
    local = email.partition("@")[0]
    words = [part for part in re.split(r"[@.+_\-]", email) if len(part) >= 3]
    return [email, local, re.sub(r"[^a-z0-9]", "", local), *words]


def check_password(password: str, email: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise WeakPassword(f"Choose a password of at least {PASSWORD_MIN} characters.")
    if len(password) > PASSWORD_MAX:
        raise WeakPassword(f"A password has at most {PASSWORD_MAX} characters.")
    if password.strip().lower() == email.strip().lower():
        raise WeakPassword("Your password must not be your email address.")
    if password.lower() in breached_passwords():
        raise WeakPassword(
            "This password appears in lists of leaked passwords, which attackers try first; "
            "choose another."
        )
    judged = zxcvbn(password[:_JUDGED_LENGTH], user_inputs=_hints_from(email))
    if judged["score"] < MIN_SCORE:
        feedback = judged["feedback"]
        warning = str(feedback.get("warning") or "").strip().rstrip(".")
        suggestions = " ".join(str(s) for s in feedback.get("suggestions") or [])
        raise WeakPassword(
            "This password is too easy to guess"
            + (f" ({warning[0].lower()}{warning[1:]}). " if warning else ". ")
            + (suggestions + " " if suggestions else "")
            + "A few unrelated words make a strong password that is easy to remember."
        )


async def check_new_password(password: str, email: str) -> None:
    """``check_password`` off the event loop: zxcvbn takes some 20 ms of CPU."""
    await asyncio.to_thread(check_password, password, email)


async def new_password_hash(password: str) -> str:
    # argon2 is slow on purpose; keep it off the event loop.
    return await asyncio.to_thread(hash_password, password)


async def password_matches(stored_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password, stored_hash, password)
