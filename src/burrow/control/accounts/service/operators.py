"""What operators do to accounts: find and search them, suspend, reinstate, terminate, and
make administrators. Callers: the admin endpoints and pages, and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import TypeAdapter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.schemas import Email, normalise_email
from burrow.control.accounts.service.errors import AccountNotFound, EmailTaken, StatusChangeRefused
from burrow.control.accounts.service.passwords import check_password, new_password_hash, parse_email
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.errors import Conflict, InvalidInput
from burrow.control.models import Account, AccountStatus, utcnow
from burrow.control.runtime import Runtime


@dataclass(frozen=True)
class AccountSearch:
    items: list[Account]
    total: int


_email_adapter: TypeAdapter[str] = TypeAdapter(Email)


class OperatorService:
    async def get(self, session: AsyncSession, account_id: int) -> Account:
        account = await AccountRepository(session).get(account_id)
        if account is None:
            raise AccountNotFound(f"There is no account {account_id}.")
        return account

    async def find(self, session: AsyncSession, ref: str) -> Account:
        """An account by id (digits) or by email address."""
        ref = ref.strip()
        if ref.isdigit() and len(ref) < 19:
            return await self.get(session, int(ref))
        account = await AccountRepository(session).get_by_email(str(normalise_email(ref)))
        if account is None:
            raise AccountNotFound(f"There is no account with the email address {ref}.")
        return account

    async def search(
        self,
        session: AsyncSession,
        query: str | None = None,
        status: AccountStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> AccountSearch:
        limit = max(1, min(limit, 500))
        items, total = await AccountRepository(session).search(
            query or None, status, limit, max(0, offset)
        )
        return AccountSearch(items=list(items), total=total)

    async def suspend(
        self, session: AsyncSession, runtime: Runtime, account_id: int, reason: str
    ) -> Account:
        """The account may still sign in (to read why) but loses VPN access at once."""
        account = await self.get(session, account_id)
        self._refuse_erased(account)
        if account.status is AccountStatus.terminated:
            raise StatusChangeRefused(
                f"Account {account_id} is terminated; a terminated account cannot be suspended."
            )
        self._set_status(account, AccountStatus.suspended, reason)
        await desired_state_service.refresh_account(session, runtime, account.id)
        return account

    async def unsuspend(
        self, session: AsyncSession, runtime: Runtime, account_id: int, reason: str | None = None
    ) -> Account:
        account = await self.get(session, account_id)
        if account.status is not AccountStatus.suspended:
            raise StatusChangeRefused(
                f"Account {account_id} is {account.status.value}, not suspended; only a "
                "suspended account can be reinstated."
            )
        self._set_status(account, AccountStatus.active, reason)
        await desired_state_service.refresh_account(session, runtime, account.id)
        return account

    async def terminate(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account_id: int,
        reason: str,
        *,
        clause: str | None = None,
    ) -> Account:
        """For good: every session ends and VPN access ends at once.

        ``clause`` names the clause of the terms that was broken (the admin domain checks it
        against the policy); the customer reads it in the status reason.
        """
        if not reason.strip():
            raise InvalidInput("Give the reason for the termination.", field="reason")
        account = await self.get(session, account_id)
        self._refuse_erased(account)
        if account.status is AccountStatus.terminated:
            raise StatusChangeRefused(f"Account {account_id} is already terminated.")
        if clause is not None:
            reason = f"Terminated for breaking the terms ({clause}): {reason.strip()}"
        self._set_status(account, AccountStatus.terminated, reason)
        account.terminated_clause = clause
        await AccountRepository(session).delete_sessions(account.id)
        await desired_state_service.refresh_account(session, runtime, account.id)
        return account

    @staticmethod
    def _refuse_erased(account: Account) -> None:
        if account.status is AccountStatus.erased:
            raise StatusChangeRefused(
                f"Account {account.id} was erased at its owner's request; it has no status "
                "left to change."
            )

    @staticmethod
    def _set_status(account: Account, status: AccountStatus, reason: str | None) -> None:
        account.status = status
        account.status_reason = reason.strip() if reason and reason.strip() else None
        account.status_changed_at = utcnow()

    async def create_admin(
        self, session: AsyncSession, email: str, password: str | None, *, promote: bool = False
    ) -> Account:
        """A verified administrator; ``promote`` makes an existing account one instead.

        Promoting keeps the account's password; a new account needs ``password``.
        """
        email = parse_email(email)
        repo = AccountRepository(session)
        existing = await repo.get_by_email(email)
        if existing is not None:
            if not promote:
                raise Conflict(
                    f"An account with the email {email} already exists; pass --promote to make "
                    "it an administrator.",
                    field="email",
                )
            if existing.status is AccountStatus.terminated:
                raise StatusChangeRefused("A terminated account cannot become an administrator.")
            existing.is_admin = True
            return existing
        if password is None:
            raise InvalidInput(
                f"There is no account with the email {email} to promote; give a password to "
                "create a new administrator.",
                field="password",
            )
        check_password(password, email)
        now = utcnow()
        account = Account(
            email=email,
            password_hash=await new_password_hash(password),
            status=AccountStatus.active,
            is_admin=True,
            totp_enabled=False,
            email_verified_at=now,
            created_at=now,
        )
        try:
            await repo.add(account)
        except IntegrityError as exc:
            raise EmailTaken() from exc
        return account


operator_service = OperatorService()
