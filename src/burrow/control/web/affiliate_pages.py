"""The affiliate program on the website: the referral link ``/r/CODE`` (a first-party cookie,
a click counted as a number only), and the affiliate's own page: the application form, then
the link and code, clicks, sign-ups, paid orders, commissions by state, payouts, a chart of
commissions per month, and the program's rules as the terms state them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from burrow.control.affiliates.schemas import AffiliateApply
from burrow.control.affiliates.service import REFERRAL_COOKIE, NotAnAffiliate
from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.errors import BurrowError
from burrow.control.models import Account
from burrow.control.runtime import Runtime
from burrow.control.terms.render import affiliate_rules, money
from burrow.control.web.auth import WebAccount
from burrow.control.web.cookies import set_cookie
from burrow.control.web.forms import Form, attempt
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render, trusted_svg

router = page_router()

Code = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$")]

# Commission states in the order an affiliate follows them, with their words.
STATES = (
    ("pending", "Pending (inside the holding period)"),
    ("payable", "Payable (in your next payout)"),
    ("held", "Held for review"),
    ("paid", "Paid out"),
    ("cancelled", "Cancelled (refunded or ended)"),
)


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


def month_chart(months: list[tuple[str, int]], currency: str) -> str:
    """Bars of commission earned per month (numbers and month names only)."""
    width, height, top, bottom, left = 640, 180, 16, 28, 8
    plot = height - top - bottom
    peak = max((amount for _, amount in months), default=0) or 1
    slot = (width - left * 2) / max(len(months), 1)
    bar = max(4.0, slot * 0.6)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        'aria-labelledby="commission-chart-title">',
        '<title id="commission-chart-title">Commission earned per month, highest '
        f"{money(peak, currency)}</title>",
        f'<line x1="{left}" y1="{top + plot}" x2="{width - left}" y2="{top + plot}" '
        'stroke="#9aa5b3"/>',
    ]
    for index, (month, amount) in enumerate(months):
        x = left + index * slot + (slot - bar) / 2
        tall = plot * max(amount, 0) / peak
        parts.append(f"<g><title>{month}: {money(amount, currency)}</title>")
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot - tall:.1f}" width="{bar:.1f}" '
            f'height="{tall:.1f}" fill="#1f5fae"/>'
        )
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{height - 8}" font-size="11" '
            f'text-anchor="middle">{month}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


async def _page(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    rules = affiliate_rules(runtime.policy)
    context: dict[str, object] = {
        "rules": rules,
        "form": form or Form.empty(),
        "program": runtime.policy.affiliates,
        "dashboard": None,
    }
    if rules:
        base = runtime.settings.public_url or str(request.base_url)
        try:
            found = await affiliate_service.dashboard(session, runtime, account.id, base)
        except NotAnAffiliate:
            found = None
        if found is not None:
            context["dashboard"] = found
            context["states"] = [(label, found.by_status.get(state, 0)) for state, label in STATES]
            context["chart"] = (
                trusted_svg(month_chart(found.by_month, found.currency)) if found.by_month else None
            )
    return render(request, "affiliate.html", context, status_code=status_code)


@router.get("/affiliate")
async def affiliate_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await _page(request, session, runtime, account)


@router.post("/affiliate/apply")
async def apply(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    form = await Form.read(request)
    body = form.validate(AffiliateApply)
    if body is None:
        return await _page(request, session, runtime, account, form, 422)
    try:
        await attempt(session, lambda: affiliate_service.apply(session, runtime, account, body))
    except BurrowError as exc:
        form.fail(exc, fields=("website", "paypal_email", "contact_name"))
        return await _page(request, session, runtime, account, form, exc.status)
    return redirect(
        request,
        "/affiliate",
        flash="Your application is in; an administrator will approve or deny it.",
        kind="info",
    )
