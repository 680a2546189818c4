"""The terms: the public pages (/terms, /terms.md), their version history, and an account's
acceptance of them.

The pages are rendered from the running policy, so they read exactly like the current version
(whose hash ``GET /api/v1/terms`` gives). They are web pages, not API operations, so they stay
out of the OpenAPI document. /terms itself is a page of the site, in ``web.terms_pages``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response

from burrow.control.deps import CurrentAccount, RuntimeDep, SessionDep
from burrow.control.params import id_path
from burrow.control.problems import problem_responses
from burrow.control.terms.schemas import (
    AcceptanceRead,
    AccountTermsRead,
    CurrentTerms,
    TermsAccept,
    TermsVersionRead,
    TermsVersionText,
)
from burrow.control.terms.service import AccountTerms
from burrow.control.terms.service import terms as terms_service

pages_router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/v1", tags=["terms"])

VersionId = Annotated[int, id_path("A terms version's id.")]


@pages_router.get("/terms.md")
async def terms_markdown(runtime: RuntimeDep) -> Response:
    markdown = terms_service.render(runtime.policy).markdown
    return Response(markdown, media_type="text/markdown; charset=utf-8")


@api_router.get(
    "/terms",
    summary="The current terms: version, effective date and content hash",
    response_model=CurrentTerms,
    responses=problem_responses(503),
)
async def current_terms(session: SessionDep, runtime: RuntimeDep) -> CurrentTerms:
    """No sign-in needed. The hash is the SHA-256 of the text at /terms.md."""
    version = await terms_service.current(session)
    return CurrentTerms(
        **TermsVersionRead.model_validate(version).model_dump(),
        continued_use_is_acceptance=runtime.policy.terms.continued_use_is_acceptance,
    )


@api_router.get(
    "/terms/versions",
    summary="Every published version of the terms, newest first",
    response_model=list[TermsVersionRead],
)
async def terms_history(session: SessionDep) -> list[TermsVersionRead]:
    return [TermsVersionRead.model_validate(v) for v in await terms_service.history(session)]


@api_router.get(
    "/terms/versions/{version_id}",
    summary="One published version of the terms, with its text",
    response_model=TermsVersionText,
    responses=problem_responses(404, 422),
)
async def terms_version(version_id: VersionId, session: SessionDep) -> TermsVersionText:
    return TermsVersionText.model_validate(await terms_service.get_version(session, version_id))


def _account_terms(found: AccountTerms) -> AccountTermsRead:
    return AccountTermsRead(
        current=TermsVersionRead.model_validate(found.current),
        accepted_current=found.accepted_current,
        detail=found.detail,
        acceptances=[
            AcceptanceRead(
                terms_version_id=version.id,
                version=version.version,
                effective_date=version.effective_date,
                content_sha256=version.content_sha256,
                accepted_at=acceptance.accepted_at,
                how=acceptance.how,
            )
            for acceptance, version in found.acceptances
        ],
    )


@api_router.get(
    "/accounts/me/terms",
    tags=["accounts"],
    summary="The terms you accepted, and when",
    description="Where the terms say that continued use is acceptance, using the service after "
    "a version's effective date accepts it; that acceptance is recorded here.",
    response_model=AccountTermsRead,
    responses=problem_responses(401, 403, 503),
)
async def my_terms(
    session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> AccountTermsRead:
    return _account_terms(await terms_service.for_account(session, runtime.policy, account))


@api_router.post(
    "/accounts/me/terms",
    tags=["accounts"],
    summary="Accept the current terms",
    response_model=AccountTermsRead,
    responses=problem_responses(401, 403, 409, 422, 503),
)
async def accept_terms(
    body: TermsAccept, session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> AccountTermsRead:
    found = await terms_service.accept(session, runtime.policy, account, body.version)
    return _account_terms(found)


router = APIRouter()
router.include_router(pages_router)
router.include_router(api_router)
