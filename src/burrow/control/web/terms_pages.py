"""Terms, from the account's side: the current version, the version accepted and when, every
published version, and accepting a newer one. The terms themselves are at /terms."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response
from markupsafe import Markup

from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.params import MAX_ID
from burrow.control.terms.schemas import TermsAccept
from burrow.control.terms.service import terms as terms_service
from burrow.control.web.auth import OptionalWebAccount, WebAccount
from burrow.control.web.forms import Form, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()

VersionId = Annotated[int, Path(ge=1, le=MAX_ID)]

HOW = {
    "signup": "when you signed up",
    "continued_use": "by using the service after it took effect",
    "explicit": "from your account",
}


@router.get("/terms")
async def public_terms(
    request: Request, runtime: RuntimeDep, account: OptionalWebAccount
) -> Response:
    """The current terms for anyone, inside the site (its header, its phone-width layout)."""
    # Every text in it is escaped by the terms renderer (terms.render._html_block).
    article = Markup(terms_service.html_article(runtime.policy))  # noqa: S704
    return render(request, "terms_public.html", {"article": article})


@router.get("/account/terms")
async def terms_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    mine = await terms_service.for_account(session, runtime.policy, account)
    history = await terms_service.history(session)
    return render(
        request,
        "terms.html",
        {
            "mine": mine,
            "history": history,
            "how": HOW,
            "continued_use": runtime.policy.terms.continued_use_is_acceptance,
        },
    )


@router.post("/account/terms/accept")
async def accept_terms(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    def refused(form: Form, _status: int) -> Response:
        message = form.message or next(iter(form.errors.values()), "")
        return redirect(request, "/account/terms", flash=message, kind="error")

    return await submit(
        request,
        session,
        TermsAccept,
        lambda body: terms_service.accept(session, runtime.policy, account, body.version),
        page=refused,
        done=lambda body, _: redirect(
            request, "/account/terms", flash=f"You accepted version {body.version}."
        ),
    )


@router.get("/account/terms/versions/{version_id}")
async def terms_version(
    request: Request, version_id: VersionId, session: SessionDep, account: WebAccount
) -> Response:
    version = await terms_service.get_version(session, version_id)
    return render(request, "terms_version.html", {"version": version})
