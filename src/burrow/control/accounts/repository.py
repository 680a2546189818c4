"""All SQL of the accounts domain: accounts, their sessions and their verification links.

Rows that belong to one account (sessions, links) are reached through ``_of_account`` only,
so that no query can touch another account's rows by mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from burrow.control.models import Account, AccountSession, AccountStatus, EmailVerification

_Owned = TypeVar("_Owned", AccountSession, EmailVerification)


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # Accounts.

    async def get(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def get_by_email(self, email: str) -> Account | None:
        result = await self.session.execute(select(Account).where(Account.email == email))
        return result.scalar_one_or_none()

    async def add(self, account: Account) -> Account:
        """Insert now, so that a duplicate email fails here and not at commit."""
        self.session.add(account)
        await self.session.flush()
        return account

    async def search(
        self, query: str | None, status: AccountStatus | None, limit: int, offset: int
    ) -> tuple[Sequence[Account], int]:
        conditions: list[ColumnElement[bool]] = []
        if query:
            text = query.strip().lower()
            matches: list[ColumnElement[bool]] = [
                Account.email.like(_like_pattern(text), escape="\\")
            ]
            if text.isdigit() and len(text) < 19:
                matches.append(Account.id == int(text))
            conditions.append(or_(*matches))
        if status is not None:
            conditions.append(Account.status == status)
        total = await self.session.scalar(
            select(func.count()).select_from(Account).where(*conditions)
        )
        rows = await self.session.execute(
            select(Account).where(*conditions).order_by(Account.id).limit(limit).offset(offset)
        )
        return rows.scalars().all(), int(total or 0)

    async def claim_totp_step(self, account: Account, step: int) -> bool:
        """Record ``step`` as used if it is newer than the last one; false if it was not.

        One conditional UPDATE, so two requests racing with the same code cannot both win.
        """
        statement = (
            update(Account)
            .where(
                Account.id == account.id,
                or_(Account.totp_last_step.is_(None), Account.totp_last_step < step),
            )
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        result: CursorResult[Any] = await self.session.execute(statement)  # type: ignore[assignment]
        if not result.rowcount:
            return False
        set_committed_value(account, "totp_last_step", step)
        return True

    # Rows that belong to one account.

    @staticmethod
    def _of_account(model: type[_Owned], account_id: int) -> Select[_Owned]:
        return select(model).where(model.account_id == account_id)

    # Sessions.

    async def add_session(self, row: AccountSession) -> None:
        self.session.add(row)
        await self.session.flush()

    async def get_session(self, token_hash: str) -> tuple[AccountSession, Account] | None:
        result = await self.session.execute(
            select(AccountSession, Account)
            .join(Account, Account.id == AccountSession.account_id)
            .where(AccountSession.token_hash == token_hash)
        )
        row = result.first()
        return None if row is None else (row[0], row[1])

    async def delete_session(self, account_id: int, token_hash: str) -> None:
        await self.session.execute(
            delete(AccountSession).where(
                AccountSession.id.in_(
                    self._of_account(AccountSession, account_id)
                    .where(AccountSession.token_hash == token_hash)
                    .with_only_columns(AccountSession.id)
                )
            )
        )

    async def delete_session_by_id(self, account_id: int, session_id: int) -> bool:
        """End one session of the account; false if it has none with that id."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            delete(AccountSession).where(
                AccountSession.id.in_(
                    self._of_account(AccountSession, account_id)
                    .where(AccountSession.id == session_id)
                    .with_only_columns(AccountSession.id)
                )
            )
        )
        return bool(result.rowcount)

    async def touch_session(self, row: AccountSession, now: datetime, before: datetime) -> None:
        """Set the session's last use to ``now`` unless it was set since ``before``."""
        statement = (
            update(AccountSession)
            .where(
                AccountSession.id == row.id,
                or_(
                    AccountSession.last_used_at.is_(None),
                    AccountSession.last_used_at <= before,
                ),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)
        set_committed_value(row, "last_used_at", now)

    async def delete_sessions(self, account_id: int, *, keep_hash: str | None = None) -> None:
        owned = self._of_account(AccountSession, account_id).with_only_columns(AccountSession.id)
        if keep_hash is not None:
            owned = owned.where(AccountSession.token_hash != keep_hash)
        await self.session.execute(delete(AccountSession).where(AccountSession.id.in_(owned)))

    async def delete_expired_sessions(self, now: datetime) -> int:
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            delete(AccountSession).where(AccountSession.expires_at <= now)
        )
        return int(result.rowcount or 0)

    async def sessions_of(self, account_id: int) -> Sequence[AccountSession]:
        query = self._of_account(AccountSession, account_id).order_by(AccountSession.id)
        return (await self.session.scalars(query)).all()

    async def count_sessions(self, account_id: int) -> int:
        statement = self._of_account(AccountSession, account_id).with_only_columns(
            func.count(AccountSession.id)
        )
        return int(await self.session.scalar(statement) or 0)

    # Verification links.

    async def add_verification(self, row: EmailVerification) -> None:
        self.session.add(row)
        await self.session.flush()

    async def verifications_of(self, account_id: int) -> Sequence[EmailVerification]:
        query = self._of_account(EmailVerification, account_id).order_by(EmailVerification.id)
        return (await self.session.scalars(query)).all()

    async def get_verification(self, token_hash: str) -> EmailVerification | None:
        result = await self.session.execute(
            select(EmailVerification).where(EmailVerification.token_hash == token_hash)
        )
        return result.scalar_one_or_none()

    async def expire_verifications(self, account_id: int, now: datetime) -> None:
        """Unused links of an account stop working once a newer one is sent."""
        unused = (
            self._of_account(EmailVerification, account_id)
            .where(EmailVerification.used_at.is_(None))
            .with_only_columns(EmailVerification.id)
        )
        await self.session.execute(
            update(EmailVerification)
            .where(EmailVerification.id.in_(unused))
            .values(expires_at=now)
            .execution_options(synchronize_session=False)
        )

    async def delete_stale_verifications(self, now: datetime) -> int:
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            delete(EmailVerification).where(EmailVerification.expires_at <= now)
        )
        return int(result.rowcount or 0)
