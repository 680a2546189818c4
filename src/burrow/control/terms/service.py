"""Terms as code: the policy's terms published as versions, and each account's acceptance.

At every start ``publish`` renders the terms from the policy (``render.py``) and stores a new
``TermsVersion`` when the rendering differs from the newest one; the same content makes no new
row. An account accepts a version at sign-up (``record_acceptance``, called by the accounts
service), explicitly from the account (``accept``), or, where the policy says that continued
use is acceptance, by using the service after the version's effective date: ``for_account``
records that the first time it sees the account after that date.

Callers: ``startup.prepare``, the accounts service (sign-up), the terms endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.errors import BurrowError, Conflict, NotFound
from burrow.control.models import (
    Account,
    TermsAcceptance,
    TermsAcceptanceHow,
    TermsVersion,
    utcnow,
)
from burrow.control.policy.schemas import Policy
from burrow.control.terms import render as renderer
from burrow.control.terms.render import RenderedTerms
from burrow.control.terms.repository import TermsRepository

log = logging.getLogger(__name__)

ACCEPT_PATH = "/api/v1/accounts/me/terms"


class TermsNotPublished(BurrowError):
    status = 503
    title = "Terms not published"
    type_slug = "terms-not-published"


class TermsVersionNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("There is no terms version with this id; see /api/v1/terms/versions.")


class TermsVersionNotCurrent(Conflict):
    def __init__(self, current: str) -> None:
        super().__init__(
            f'Only the current terms can be accepted: send version "{current}" after reading '
            "them at /terms.",
            field="version",
            current_terms_version=current,
        )


@dataclass(frozen=True)
class PublishResult:
    version: TermsVersion
    created: bool


@dataclass(frozen=True)
class AccountTerms:
    current: TermsVersion
    accepted_current: bool
    detail: str
    acceptances: list[tuple[TermsAcceptance, TermsVersion]]


class TermsService:
    def render(self, policy: Policy) -> RenderedTerms:
        """The terms of ``policy`` as Markdown, with its hash."""
        return renderer.render(policy)

    def html(self, policy: Policy) -> str:
        rendered = renderer.render(policy)
        return renderer.to_html(rendered.document, rendered.sha256)

    def html_article(self, policy: Policy) -> str:
        """The terms as an HTML ``<article>`` for the site's own page around it."""
        rendered = renderer.render(policy)
        return renderer.to_html_article(rendered.document, rendered.sha256)

    async def publish(self, session: AsyncSession, policy: Policy) -> PublishResult:
        """Store the policy's terms as a new version unless the newest one reads the same."""
        rendered = renderer.render(policy)
        repository = TermsRepository(session)
        latest = await repository.latest()
        if latest is not None and latest.content_sha256 == rendered.sha256:
            return PublishResult(latest, created=False)
        label = policy.terms.version
        if latest is not None and latest.version == label:
            log.warning(
                "the terms changed but terms.version is still %r: give the new terms a new "
                "version label so that customers can tell the two apart",
                label,
            )
        version = await repository.add_version(
            TermsVersion(
                version=label,
                content_sha256=rendered.sha256,
                effective_date=policy.terms.effective_date,
                markdown=rendered.markdown,
                created_at=utcnow(),
            )
        )
        log.info("terms version %s published (sha256 %s)", label, rendered.sha256[:12])
        return PublishResult(version, created=True)

    async def current(self, session: AsyncSession) -> TermsVersion:
        latest = await TermsRepository(session).latest()
        if latest is None:
            raise TermsNotPublished(
                "The terms have not been published yet; they are published when burrow starts."
            )
        return latest

    async def history(self, session: AsyncSession) -> Sequence[TermsVersion]:
        """Every published version, newest first."""
        return await TermsRepository(session).history()

    async def get_version(self, session: AsyncSession, version_id: int) -> TermsVersion:
        version = await TermsRepository(session).get(version_id)
        if version is None:
            raise TermsVersionNotFound()
        return version

    async def _version_for_label(
        self, session: AsyncSession, label: str, at: datetime | None = None
    ) -> TermsVersion:
        """The version published under ``label`` that was current at ``at`` (default: newest)."""
        versions = await TermsRepository(session).with_label(label)
        if not versions:
            raise TermsNotPublished(
                f"The terms version {label!r} has not been published; restart burrow so that it "
                "publishes the terms of its policy."
            )
        if at is None:
            return versions[-1]
        before = [v for v in versions if v.created_at <= at]
        return before[-1] if before else versions[0]

    async def _record(
        self,
        session: AsyncSession,
        account_id: int,
        version: TermsVersion,
        how: TermsAcceptanceHow,
        at: datetime,
    ) -> TermsAcceptance:
        repository = TermsRepository(session)
        existing = await repository.acceptance(account_id, version.id)
        if existing is not None:
            return existing
        stored = await repository.add_acceptance(
            TermsAcceptance(
                account_id=account_id, terms_version_id=version.id, accepted_at=at, how=how
            )
        )
        if stored is None:  # recorded by a concurrent request a moment ago
            again = await repository.acceptance(account_id, version.id)
            assert again is not None
            return again
        return stored

    async def record_acceptance(
        self,
        session: AsyncSession,
        account_id: int,
        version: str,
        how: TermsAcceptanceHow | str,
    ) -> TermsAcceptance:
        """Record that ``account_id`` accepted the terms labelled ``version`` now.

        The sign-up hook: the accounts service calls it with how="signup". Accepting a version
        twice keeps the first record.
        """
        terms_version = await self._version_for_label(session, version)
        return await self._record(
            session, account_id, terms_version, TermsAcceptanceHow(how), utcnow()
        )

    async def for_account(
        self, session: AsyncSession, policy: Policy, account: Account
    ) -> AccountTerms:
        """What ``account`` accepted and when, recording continued use where the policy says so."""
        repository = TermsRepository(session)
        current = await self.current(session)
        rows = await repository.acceptances(account.id)
        if not rows and account.terms_version_accepted:
            # Accepted at sign-up before acceptances were recorded one by one.
            at = account.terms_accepted_at or account.created_at
            try:
                accepted = await self._version_for_label(
                    session, account.terms_version_accepted, at
                )
            except TermsNotPublished:
                pass
            else:
                await self._record(session, account.id, accepted, TermsAcceptanceHow.signup, at)
                rows = await repository.acceptances(account.id)
        accepted_current = any(version.id == current.id for _, version in rows)
        now = utcnow()
        if (
            not accepted_current
            and policy.terms.continued_use_is_acceptance
            and current.effective_date <= now.date()
        ):
            await self._record(session, account.id, current, TermsAcceptanceHow.continued_use, now)
            rows = await repository.acceptances(account.id)
            accepted_current = True
        return AccountTerms(
            current=current,
            accepted_current=accepted_current,
            detail=self._detail(policy, current, rows, accepted_current),
            acceptances=rows,
        )

    @staticmethod
    def _detail(
        policy: Policy,
        current: TermsVersion,
        rows: list[tuple[TermsAcceptance, TermsVersion]],
        accepted_current: bool,
    ) -> str:
        if accepted_current:
            acceptance = next(a for a, v in rows if v.id == current.id)
            ways = {
                TermsAcceptanceHow.signup: "when you signed up",
                TermsAcceptanceHow.continued_use: "by using the service after it took effect",
                TermsAcceptanceHow.explicit: "from your account",
            }
            return (
                f"You accepted the current terms, version {current.version}, "
                f"{ways[acceptance.how]} on {acceptance.accepted_at.date()}."
            )
        accept = f'send POST {ACCEPT_PATH} with {{"version": "{current.version}"}}'
        if policy.terms.continued_use_is_acceptance:
            return (
                f"Version {current.version} of the terms takes effect on "
                f"{current.effective_date}; using the service after that date accepts "
                f"it. To accept it now, {accept}."
            )
        return (
            f"Version {current.version} of the terms needs your acceptance: read /terms, "
            f"then {accept}."
        )

    async def accept(
        self, session: AsyncSession, policy: Policy, account: Account, version: str
    ) -> AccountTerms:
        """``account`` accepts the current terms explicitly."""
        current = await self.current(session)
        if version != current.version:
            raise TermsVersionNotCurrent(current.version)
        await self._record(session, account.id, current, TermsAcceptanceHow.explicit, utcnow())
        return await self.for_account(session, policy, account)


terms = TermsService()
