"""Shared by the admin panel's pages: who may enter, path parameters, time wording, the
payment methods checkout cannot take."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from burrow.control.accounts.service import AdminSecondFactor
from burrow.control.accounts.service import account as account_service
from burrow.control.billing.service import billing as billing_service
from burrow.control.deps import SESSION_COOKIE, SessionDep
from burrow.control.errors import Forbidden
from burrow.control.models import Account
from burrow.control.params import id_path
from burrow.control.runtime import Runtime
from burrow.control.web.auth import LoginRequired, WebAccount
from burrow.control.web.billing_pages import METHOD_NAMES

PAGE_SIZE = 50

PROVIDER_NAMES = {"stripe": "Stripe", "paypal": "PayPal", "coingate": "CoinGate"}


def methods_missing(runtime: Runtime) -> list[dict[str, str | None]]:
    """The payment methods the policy offers but checkout cannot take, in words for a page."""
    return [
        {
            "method": METHOD_NAMES.get(m.method, m.method),
            "provider": PROVIDER_NAMES.get(m.provider, m.provider) if m.provider else None,
        }
        for m in billing_service.methods_without_provider(runtime)
    ]


class TwoFactorSetupRequired(LoginRequired):
    """An administrator without two-factor sign-in: to the account page to turn it on."""

    @property
    def location(self) -> str:
        return "/account"


async def panel_admin(request: Request, session: SessionDep, account: WebAccount) -> Account:
    # The header shows ``request.state.person``: the frozen ``auth.Person`` made at sign-in.
    if not account.is_admin:
        raise Forbidden("This page is for administrators.")
    token = request.cookies.get(SESSION_COOKIE) or ""
    # The same check as the admin API's (deps.current_admin).
    state = await account_service.admin_second_factor(session, account, token)
    if state is AdminSecondFactor.not_enrolled:
        raise TwoFactorSetupRequired(
            "/admin",
            "The admin panel needs two-factor sign-in: set it up below, then log out and log in "
            "again with a code.",
        )
    if state is AdminSecondFactor.not_proved:
        raise Forbidden(
            "This session was opened without your two-factor code (it is older than your "
            "two-factor sign-in): log out, then log in again with a code to open the admin panel."
        )
    return account


PanelAdmin = Annotated[Account, Depends(panel_admin)]


AccountIdPath = Annotated[int, id_path("The account's id.")]
NodeIdPath = Annotated[int, id_path("The node's id.")]
DeviceIdPath = Annotated[int, id_path("The device's id.")]
RefundIdPath = Annotated[int, id_path("The refund request's id.")]
RequestIdPath = Annotated[int, id_path("The privacy request's id.")]


def duration(seconds: float | int | None) -> str:
    """'2 d 3 h', '3 h 12 min', '45 s' ... for deadlines and report ages."""
    if seconds is None:
        return "—"
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def time_left(seconds: int | None) -> str:
    if seconds is None:
        return "no deadline"
    if seconds < 0:
        return f"overdue by {duration(seconds)}"
    return f"{duration(seconds)} left"
