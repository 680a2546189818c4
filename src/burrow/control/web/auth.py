"""Who is looking at a page: the API's session cookie, read by the pages.

The pages use the same ``burrow_session`` cookie (and the same accounts service) as the API.
A session that still waits for its second factor is refused by ``authenticate``, so it
reaches nothing but the two-factor step of the login page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request

from burrow.control.accounts.service import account as account_service
from burrow.control.deps import SESSION_COOKIE, RuntimeDep, SessionDep
from burrow.control.errors import Forbidden, NotAuthenticated
from burrow.control.models import Account, AccountStatus


@dataclass(frozen=True)
class Person:
    """The signed-in person as pages show them: a frozen copy made at authentication.

    Pages and templates read this, never the ORM row: a refused form's savepoint rollback
    (or an error page after the request failed) expires rows, and a template must not load
    anything from the database. Services still take the row (``WebAccount``).
    """

    id: int
    email: str
    is_admin: bool
    totp_enabled: bool
    email_verified_at: datetime | None
    status: AccountStatus
    status_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> Person:
        return cls(
            id=account.id,
            email=account.email,
            is_admin=account.is_admin,
            totp_enabled=account.totp_enabled,
            email_verified_at=account.email_verified_at,
            status=account.status,
            status_reason=account.status_reason,
            created_at=account.created_at,
        )


class LoginRequired(Exception):
    """Send the browser to the login page, and back to ``next_url`` after it."""

    def __init__(self, next_url: str, message: str | None = None) -> None:
        super().__init__(next_url)
        self.next_url = next_url
        self.message = message

    @property
    def location(self) -> str:
        return f"/login?next={quote(self.next_url, safe='/')}"


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query and request.method == "GET" else "")


async def web_account_or_none(
    request: Request, session: SessionDep, runtime: RuntimeDep
) -> Account | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        account = await account_service.authenticate(session, runtime, token)
    except NotAuthenticated:
        return None
    except Forbidden as exc:
        # A terminated account: signed out for every page, told why where it matters.
        request.state.auth_refusal = exc.message
        return None
    request.state.person = Person.of(account)
    return account


async def web_account(
    request: Request, account: Annotated[Account | None, Depends(web_account_or_none)]
) -> Account:
    if account is None:
        had_cookie = bool(request.cookies.get(SESSION_COOKIE))
        refusal = getattr(request.state, "auth_refusal", None)
        ended = "Your session has ended; log in again." if had_cookie else None
        raise LoginRequired(_here(request), refusal or ended)
    return account


WebAccount = Annotated[Account, Depends(web_account)]
OptionalWebAccount = Annotated[Account | None, Depends(web_account_or_none)]


async def web_admin(account: WebAccount) -> Account:
    if not account.is_admin:
        raise Forbidden("This page is for administrators.")
    if not account.totp_enabled:
        raise Forbidden(
            "The admin panel needs two-factor sign-in: turn it on under Account, then log in again."
        )
    return account


WebAdmin = Annotated[Account, Depends(web_admin)]


async def signed_in_person(request: Request, _account: WebAccount) -> Person:
    """The frozen view of whoever ``WebAccount`` let in."""
    person = request.state.person
    assert isinstance(person, Person)
    return person


WebPerson = Annotated[Person, Depends(signed_in_person)]


def client_address(request: Request) -> str | None:
    """For the sign-in throttle only; the service turns it into a keyed digest at once."""
    return request.client.host if request.client else None
