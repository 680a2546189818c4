"""The affiliate program on the website: the referral link ``/r/CODE`` (a first-party cookie,
a click counted as a number only), the affiliate's own page (apply, then link, referrals,
commissions by state, payouts, a chart and the rules)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from burrow.control.affiliates.service import REFERRAL_COOKIE
from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.web.cookies import set_cookie
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect

router = page_router()

Code = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$")]


@router.get("/r/{code}")
async def referral_link(
    request: Request, code: Code, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Count the click, remember the code in the visitor's own browser for the policy's
    cookie lifetime, and go on to sign-up. Nothing about the visitor is stored here."""
    response = redirect(request, "/signup")
    if await affiliate_service.click(session, runtime, code):
        program = runtime.policy.affiliates
        days = program.cookie_days if program is not None else 30
        set_cookie(request, response, REFERRAL_COOKIE, code, max_age=days * 86400)
    return response
