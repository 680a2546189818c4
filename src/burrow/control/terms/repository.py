"""All SQL of the terms domain.

Versions are public. An account's acceptances are only ever read through ``_owned``, the one
place that scopes a query to an account.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import TermsAcceptance, TermsVersion


class TermsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- versions (public) -----------------------------------------------------------------

    async def latest(self) -> TermsVersion | None:
        query = select(TermsVersion).order_by(TermsVersion.id.desc()).limit(1)
        return (await self.session.scalars(query)).first()

    async def history(self) -> Sequence[TermsVersion]:
        """Newest first."""
        return (
            await self.session.scalars(select(TermsVersion).order_by(TermsVersion.id.desc()))
        ).all()

    async def get(self, version_id: int) -> TermsVersion | None:
        return await self.session.get(TermsVersion, version_id)

    async def with_label(self, label: str) -> Sequence[TermsVersion]:
        """Every version published under ``label``, oldest first."""
        query = select(TermsVersion).where(TermsVersion.version == label).order_by(TermsVersion.id)
        return (await self.session.scalars(query)).all()

    async def add_version(self, version: TermsVersion) -> TermsVersion:
        self.session.add(version)
        await self.session.flush()
        return version

    # --- one account's acceptances -----------------------------------------------------------

    def _owned(self, account_id: int) -> Select[TermsAcceptance, TermsVersion]:
        """Tenant scoping: every read of an account's acceptances starts here."""
        return (
            select(TermsAcceptance, TermsVersion)
            .join(TermsVersion, TermsVersion.id == TermsAcceptance.terms_version_id)
            .where(TermsAcceptance.account_id == account_id)
        )

    async def acceptances(self, account_id: int) -> list[tuple[TermsAcceptance, TermsVersion]]:
        """Oldest first."""
        query = self._owned(account_id).order_by(TermsAcceptance.accepted_at, TermsAcceptance.id)
        result = await self.session.execute(query)
        return [(row[0], row[1]) for row in result.all()]

    async def acceptance(self, account_id: int, version_id: int) -> TermsAcceptance | None:
        query = self._owned(account_id).where(TermsAcceptance.terms_version_id == version_id)
        row = (await self.session.execute(query)).first()
        if row is None:
            return None
        acceptance: TermsAcceptance = row[0]
        return acceptance

    async def add_acceptance(self, acceptance: TermsAcceptance) -> TermsAcceptance | None:
        """Store ``acceptance``; None when the account accepted that version a moment ago."""
        try:
            async with self.session.begin_nested():
                self.session.add(acceptance)
        except IntegrityError:
            return None
        return acceptance
