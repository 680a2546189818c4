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
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from burrow.control.db import compare_and_set
from burrow.control.models import (
    Account,
    AccountSession,
    AccountStatus,
    Device,
    EmailVerification,
    PasswordReset,
    Plan,
    RecoveryCode,
    Subscription,
    SubscriptionStatus,
)

# A subscription that has not ended (as subscriptions.repository counts the current one).
_CURRENT = (SubscriptionStatus.trialing, SubscriptionStatus.active, SubscriptionStatus.past_due)

_Owned = TypeVar("_Owned", AccountSession, EmailVerification, PasswordReset, RecoveryCode)


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
        self,
        query: str | None,
        status: AccountStatus | None,
        limit: int,
        offset: int,
        plan_code: str | None = None,
    ) -> tuple[Sequence[Account], int]:
        conditions: list[ColumnElement[bool]] = []
        if plan_code:
            on_plan = (
                select(Subscription.account_id)
                .join(Plan, Plan.id == Subscription.plan_id)
                .where(Plan.code == plan_code, Subscription.status.in_(_CURRENT))
            )
            conditions.append(Account.id.in_(on_plan))
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

    async def row_facts(
        self, account_ids: Sequence[int]
    ) -> dict[int, tuple[str | None, datetime | None, int]]:
        """For the operator's list: each account's current plan's name and period end (the
        newest subscription that has not ended) and its number of devices."""
        facts: dict[int, tuple[str | None, datetime | None, int]] = {
            i: (None, None, 0) for i in account_ids
        }
        if not account_ids:
            return facts
        subs = await self.session.execute(
            select(Subscription.account_id, Plan.name, Subscription.current_period_end)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(Subscription.account_id.in_(account_ids), Subscription.status.in_(_CURRENT))
            .order_by(Subscription.id)
        )
        for account_id, name, end in subs.all():
            facts[account_id] = (name, end, 0)
        devices = await self.session.execute(
            select(Device.account_id, func.count(Device.id))
            .where(Device.account_id.in_(account_ids))
            .group_by(Device.account_id)
        )
        for account_id, count in devices.all():
            facts[account_id] = (*facts[account_id][:2], int(count))
        return facts

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

    async def change_status(
        self,
        account: Account,
        *,
        expected: AccountStatus,
        status: AccountStatus,
        reason: str | None,
        at: datetime,
        clause: str | None = None,
    ) -> bool:
        """Move ``account`` from ``expected`` to ``status``; false if it was no longer in
        ``expected``. The database decides (the state is in the UPDATE's WHERE), so of two
        racing changes only one applies."""
        values: dict[str, Any] = {
            "status": status,
            "status_reason": reason,
            "status_changed_at": at,
        }
        if status is AccountStatus.terminated:
            values["terminated_clause"] = clause
        return await self._compare_and_set(account, [Account.status == expected], values)

    async def change_admin(self, account: Account, *, is_admin: bool) -> bool:
        """Grant or take the administrator role; false if it already was so (a racing change)."""
        return await self._compare_and_set(
            account, [Account.is_admin.is_(not is_admin)], {"is_admin": is_admin}
        )

    async def _compare_and_set(
        self, account: Account, conditions: list[ColumnElement[bool]], values: dict[str, Any]
    ) -> bool:
        return await compare_and_set(self.session, account, and_(*conditions), values)

    async def current_status(self, account_id: int) -> tuple[AccountStatus, bool] | None:
        """The status and admin role as the database has them now (after a lost race)."""
        row = (
            await self.session.execute(
                select(Account.status, Account.is_admin).where(Account.id == account_id)
            )
        ).one_or_none()
        return (row[0], row[1]) if row is not None else None

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

    async def delete_expired_sessions(
        self, now: datetime, idle_before: datetime | None = None
    ) -> int:
        """Sessions past their maximum age, and (given ``idle_before``) those unused since."""
        ended: ColumnElement[bool] = AccountSession.expires_at <= now
        if idle_before is not None:
            last_used = func.coalesce(AccountSession.last_used_at, AccountSession.created_at)
            ended = or_(ended, last_used <= idle_before)
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            delete(AccountSession).where(ended)
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

    # Password-reset links.

    async def add_password_reset(self, row: PasswordReset) -> None:
        self.session.add(row)
        await self.session.flush()

    async def get_password_reset(self, token_hash: str) -> PasswordReset | None:
        return (
            await self.session.execute(
                select(PasswordReset).where(PasswordReset.token_hash == token_hash)
            )
        ).scalar_one_or_none()

    async def expire_password_resets(self, account_id: int, now: datetime) -> None:
        """Retire every unused link of the account (a new one was sent, or one was used)."""
        await self.session.execute(
            update(PasswordReset)
            .where(
                PasswordReset.account_id == account_id,
                PasswordReset.used_at.is_(None),
                PasswordReset.expires_at > now,
            )
            .values(expires_at=now)
            .execution_options(synchronize_session=False)
        )

    async def claim_password_reset(self, row: PasswordReset, now: datetime) -> bool:
        """Mark the link used; false if it was used or expired meanwhile (two racing uses)."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(PasswordReset)
            .where(
                PasswordReset.id == row.id,
                PasswordReset.used_at.is_(None),
                PasswordReset.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)

    async def delete_stale_password_resets(self, now: datetime) -> int:
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            delete(PasswordReset).where(PasswordReset.expires_at <= now)
        )
        return int(result.rowcount or 0)

    # Two-factor recovery codes.

    async def replace_recovery_codes(self, account_id: int, code_hashes: list[str]) -> None:
        await self.delete_recovery_codes(account_id)
        self.session.add_all(
            RecoveryCode(account_id=account_id, code_hash=code_hash) for code_hash in code_hashes
        )
        await self.session.flush()

    async def delete_recovery_codes(self, account_id: int) -> None:
        await self.session.execute(
            delete(RecoveryCode).where(RecoveryCode.account_id == account_id)
        )

    async def claim_recovery_code(self, account_id: int, code_hash: str, now: datetime) -> bool:
        """Use one code; false if the account has no such unused code (or a racing request
        used it first)."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(RecoveryCode)
            .where(
                RecoveryCode.account_id == account_id,
                RecoveryCode.code_hash == code_hash,
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)

    async def count_recovery_codes(self, account_id: int) -> int:
        total = await self.session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.account_id == account_id, RecoveryCode.used_at.is_(None))
        )
        return int(total or 0)
