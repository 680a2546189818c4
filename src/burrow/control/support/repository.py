"""All SQL of the support desk. A customer's requests are only ever read through ``_of``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import compare_and_set
from burrow.control.models import (
    Account,
    SupportMessage,
    SupportRequest,
    SupportStatus,
)


class SupportRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _of(account_id: int) -> Select[SupportRequest]:
        """Tenant scoping: every read of a customer's requests starts here."""
        return select(SupportRequest).where(SupportRequest.account_id == account_id)

    async def requests_of(self, account_id: int) -> Sequence[SupportRequest]:
        query = self._of(account_id).order_by(SupportRequest.id.desc())
        return (await self.session.scalars(query)).all()

    async def own(self, account_id: int, request_id: int) -> SupportRequest | None:
        query = self._of(account_id).where(SupportRequest.id == request_id)
        return await self.session.scalar(query)

    async def get(self, request_id: int) -> SupportRequest | None:
        return await self.session.get(SupportRequest, request_id)

    async def add(self, request: SupportRequest) -> SupportRequest:
        self.session.add(request)
        await self.session.flush()
        return request

    async def add_message(self, message: SupportMessage) -> SupportMessage:
        self.session.add(message)
        await self.session.flush()
        return message

    async def messages_of(self, request_ids: Sequence[int]) -> Sequence[SupportMessage]:
        if not request_ids:
            return []
        query = (
            select(SupportMessage)
            .where(SupportMessage.request_id.in_(request_ids))
            .order_by(SupportMessage.id)
        )
        return (await self.session.scalars(query)).all()

    async def queue(self, limit: int) -> Sequence[SupportRequest]:
        """Unresolved requests: those waiting for support by deadline (the most overdue
        first), then those waiting on the customer."""
        query = (
            select(SupportRequest)
            .where(SupportRequest.status != SupportStatus.resolved)
            .order_by(
                SupportRequest.status == SupportStatus.waiting_on_customer,
                SupportRequest.due_at,
                SupportRequest.id,
            )
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def resolved(self, limit: int) -> Sequence[SupportRequest]:
        query = (
            select(SupportRequest)
            .where(SupportRequest.status == SupportStatus.resolved)
            .order_by(SupportRequest.resolved_at.desc(), SupportRequest.id.desc())
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def set_if(
        self, request: SupportRequest, expected: ColumnElement[bool], **values: Any
    ) -> bool:
        """Compare-and-set on one request, as the database sees it at the write; False when
        another unit of work changed it first (``request`` is reloaded either way)."""
        await self.session.flush()
        return await compare_and_set(self.session, request, expected, values)

    async def counts(self, now: datetime) -> tuple[dict[SupportStatus, int], int]:
        """Requests per state, and how many waiting for support are past their deadline."""
        query = select(SupportRequest.status, func.count()).group_by(SupportRequest.status)
        by_status = {SupportStatus(s): int(n) for s, n in (await self.session.execute(query))}
        overdue = await self.session.scalar(
            select(func.count())
            .select_from(SupportRequest)
            .where(SupportRequest.status == SupportStatus.open, SupportRequest.due_at < now)
        )
        return by_status, int(overdue or 0)

    async def account_by_email(self, email: str) -> Account | None:
        query = select(Account).where(func.lower(Account.email) == email.strip().lower())
        return await self.session.scalar(query.limit(1))

    async def account(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def emails_of(self, account_ids: Sequence[int]) -> dict[int, str]:
        if not account_ids:
            return {}
        query = select(Account.id, Account.email).where(Account.id.in_(set(account_ids)))
        return {int(i): str(e) for i, e in (await self.session.execute(query))}

    async def admins(self) -> list[tuple[int, str]]:
        query = select(Account.id, Account.email).where(Account.is_admin.is_(True))
        return [(int(i), str(e)) for i, e in await self.session.execute(query.order_by(Account.id))]

    async def admin_emails(self) -> Sequence[str]:
        query = select(Account.email).where(Account.is_admin.is_(True)).order_by(Account.id)
        return (await self.session.scalars(query)).all()

    async def erase_for(self, account_id: int, email: str) -> int:
        """Delete the requests (and so their messages) of an account, and those opened
        signed out from its address."""
        result = await self.session.execute(
            delete(SupportRequest)
            .where(
                or_(
                    SupportRequest.account_id == account_id,
                    func.lower(SupportRequest.email) == email.lower(),
                )
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def signed_out_of(self, email: str) -> Sequence[SupportRequest]:
        query = (
            select(SupportRequest)
            .where(
                SupportRequest.account_id.is_(None),
                func.lower(SupportRequest.email) == email.lower(),
            )
            .order_by(SupportRequest.id.desc())
        )
        return (await self.session.scalars(query)).all()
