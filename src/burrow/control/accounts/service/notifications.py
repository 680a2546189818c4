"""Emails to an account's owner about its security: the password changed, two-factor sign-in
turned on or off, a recovery code used, many failed sign-ins, a sign-up with their address.

The bodies are templates in ``accounts/emails/`` (first line the subject). ``notify_owner``
sends after the unit of work commits, so a change that rolls back tells no one. Other modules
of the domain (two-factor, recovery) call it where the change happens.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import after_commit
from burrow.control.runtime import Runtime

# The page where a forgotten password is reset (the recovery module builds it).
FORGOT_PASSWORD_PATH = "/forgot-password"  # noqa: S105 - a page, not a secret
LOGIN_PATH = "/login"

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "emails"),
    autoescape=False,  # plain-text mail; nothing here is HTML  # noqa: S701
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


class OwnerNotice(StrEnum):
    password_changed = "password_changed"  # noqa: S105 - a name, not a secret
    two_factor_on = "two_factor_on"
    two_factor_off = "two_factor_off"
    recovery_code_used = "recovery_code_used"
    failed_sign_ins = "failed_sign_ins"
    signup_attempt = "signup_attempt"


def render_notice(runtime: Runtime, notice: OwnerNotice, **values: object) -> tuple[str, str]:
    """The subject and body of ``notice``."""
    provider = runtime.policy.provider
    settings = runtime.settings
    context: dict[str, object] = {
        "provider": provider.name,
        "contact": provider.contact_email,
        "reset_link": settings.public_link(FORGOT_PASSWORD_PATH),
        "login_link": settings.public_link(LOGIN_PATH),
        "remaining": None,
    }
    context.update(values)
    text = _templates.get_template(f"{notice.value}.txt").render(context)
    subject, _, body = text.partition("\n")
    return subject.strip(), body


def notify_owner(
    session: AsyncSession, runtime: Runtime, to: str, notice: OwnerNotice, **values: object
) -> None:
    """Email ``to`` (the account's address) about ``notice`` once the unit of work commits.

    ``values`` fill the template; ``recovery_code_used`` takes ``remaining`` (codes left)."""
    subject, body = render_notice(runtime, notice, **values)
    after_commit(session, lambda: runtime.mailer.send(to, subject, body))


async def failed_sign_ins_notice(runtime: Runtime, to: str) -> None:
    """Sent at once: the failed attempt's own unit of work rolls back."""
    subject, body = render_notice(runtime, OwnerNotice.failed_sign_ins)
    await runtime.mailer.send(to, subject, body)
