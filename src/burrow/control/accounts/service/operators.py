"""What operators do to accounts: find and search them, suspend, reinstate, terminate, make
and unmake administrators, reset a lost second factor or password.

Every action takes its ``actor`` (an administrator's ``Account``, or a ``CliOperator`` at the
server's shell) and writes its row of the admin audit trail itself, in the caller's unit of
work, so no edge (API, panel, command line) can forget it. State changes are compare-and-set:
the state the change starts from is in the UPDATE's WHERE, so of two racing changes one wins and
the other gets ``StateChanged`` (409) saying what the account became.

Two rules keep one stolen session from locking the operators out: an administrator never acts on
their own account (suspend, terminate, demote), and terminating or demoting another
administrator is refused to a session (the web or the API): it takes the server's command line,
that is, a second person with shell access.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import TypeAdapter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.schemas import Email, normalise_email
from burrow.control.accounts.service.errors import (
    AccountNotFound,
    AlreadyVerified,
    EmailTaken,
    SecondAdminNeeded,
    SelfActionRefused,
    StateChanged,
    StatusChangeRefused,
)
from burrow.control.accounts.service.passwords import check_password, new_password_hash, parse_email
from burrow.control.accounts.service.recovery import recovery_service
from burrow.control.accounts.service.registration import registration_service
from burrow.control.audit.service import Actor, CliOperator, admin_audit
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.errors import Conflict, InvalidInput
from burrow.control.models import Account, AccountStatus, utcnow
from burrow.control.policy.clauses import UnknownClause, terms_clauses
from burrow.control.runtime import Runtime


@dataclass(frozen=True)
class AccountSearch:
    items: list[Account]
    total: int


@dataclass(frozen=True)
class AccountRow:
    """One line of the operator's accounts list."""

    account: Account
    plan: str | None
    period_end: datetime | None
    devices: int


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
        plan_code: str | None = None,
    ) -> AccountSearch:
        limit = max(1, min(limit, 500))
        items, total = await AccountRepository(session).search(
            query or None, status, limit, max(0, offset), plan_code or None
        )
        return AccountSearch(items=list(items), total=total)

    async def rows(self, session: AsyncSession, accounts: list[Account]) -> list[AccountRow]:
        """The list's lines: plan, period end and devices of each account."""
        facts = await AccountRepository(session).row_facts([a.id for a in accounts])
        return [AccountRow(a, *facts[a.id]) for a in accounts]

    async def suspend(
        self, session: AsyncSession, runtime: Runtime, actor: Actor, account_id: int, reason: str
    ) -> Account:
        """The account may still sign in (to read why) but loses VPN access at once."""
        account = await self.get(session, account_id)
        self._refuse_self(actor, account, "suspend")
        self._refuse_erased(account)
        if account.status is AccountStatus.terminated:
            raise StatusChangeRefused(
                f"Account {account_id} is terminated; a terminated account cannot be suspended."
            )
        if account.status is AccountStatus.suspended:
            raise StatusChangeRefused(f"Account {account_id} is already suspended.")
        await self._change_status(session, account, AccountStatus.suspended, reason)
        await desired_state_service.refresh_account(session, runtime, account.id)
        await admin_audit.record(session, actor, "account.suspend", "account", account.id, reason)
        return account

    async def unsuspend(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        account_id: int,
        reason: str | None = None,
    ) -> Account:
        account = await self.get(session, account_id)
        if account.status is not AccountStatus.suspended:
            raise StatusChangeRefused(
                f"Account {account_id} is {account.status.value}, not suspended; only a "
                "suspended account can be reinstated."
            )
        await self._change_status(session, account, AccountStatus.active, reason)
        await desired_state_service.refresh_account(session, runtime, account.id)
        await admin_audit.record(session, actor, "account.unsuspend", "account", account.id, reason)
        return account

    async def terminate(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        account_id: int,
        reason: str,
        *,
        clause: str | None = None,
    ) -> Account:
        """For good: every session ends and VPN access ends at once.

        ``clause`` names the clause of the terms that was broken, one of ``terms_clauses``; the
        customer reads it in the status reason. The API and the panel always name one; only
        the command line may leave it out, for a termination that is not for a violation.
        """
        if not reason.strip():
            raise InvalidInput("Give the reason for the termination.", field="reason")
        if clause is not None:
            clauses = terms_clauses(runtime.policy)
            if clause.strip() not in clauses:
                raise UnknownClause(
                    f"'{clause}' is not a clause of the terms (version "
                    f"{runtime.policy.terms.version}); pick one of: " + "; ".join(clauses[:40]),
                    field="clause",
                )
            clause = clause.strip()
        account = await self.get(session, account_id)
        self._refuse_self(actor, account, "terminate")
        self._refuse_erased(account)
        if account.status is AccountStatus.terminated:
            raise StatusChangeRefused(f"Account {account_id} is already terminated.")
        self._refuse_one_admin_against_another(actor, account, "terminate")
        shown = reason
        if clause is not None:
            shown = f"Terminated for breaking the terms ({clause}): {reason.strip()}"
        await self._change_status(session, account, AccountStatus.terminated, shown, clause=clause)
        await AccountRepository(session).delete_sessions(account.id)
        await desired_state_service.refresh_account(session, runtime, account.id)
        detail = (
            {"clause": clause, "terms_version": runtime.policy.terms.version}
            if clause is not None
            else None
        )
        await admin_audit.record(
            session, actor, "account.terminate", "account", account.id, reason, detail
        )
        return account

    async def demote(
        self, session: AsyncSession, actor: Actor, account_id: int, reason: str | None = None
    ) -> Account:
        """Take the administrator role away (the account stays as a customer's)."""
        account = await self.get(session, account_id)
        self._refuse_self(actor, account, "demote")
        if not account.is_admin:
            raise StatusChangeRefused(f"Account {account_id} is not an administrator.")
        self._refuse_one_admin_against_another(actor, account, "demote")
        if not await AccountRepository(session).change_admin(account, is_admin=False):
            await self._lost_race(session, account)
        await admin_audit.record(session, actor, "account.demote", "account", account.id, reason)
        return account

    async def reset_two_factor(
        self, session: AsyncSession, actor: Actor, account_id: int, reason: str | None = None
    ) -> Account:
        """Turn two-factor sign-in off for someone who lost their app and their codes; their
        sessions end, and they sign in with the password alone until they enrol again."""
        account = await self.get(session, account_id)
        self._refuse_erased(account)
        if not account.totp_enabled and account.totp_secret is None:
            raise StatusChangeRefused(f"Account {account_id} has no two-factor sign-in to reset.")
        account.totp_enabled = False
        account.totp_secret = None
        account.totp_last_step = None
        repo = AccountRepository(session)
        await repo.delete_recovery_codes(account.id)
        await repo.delete_sessions(account.id)
        await admin_audit.record(session, actor, "account.reset_2fa", "account", account.id, reason)
        return account

    async def resend_verification_by(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        account_id: int,
        reason: str | None = None,
    ) -> Account:
        """Send the owner a new link to verify their address (the older links stop working)."""
        account = await self.get(session, account_id)
        self._refuse_erased(account)
        if account.status is AccountStatus.terminated:
            raise StatusChangeRefused(
                f"Account {account_id} is terminated; it gets no more email from us."
            )
        if account.email_verified_at is not None:
            raise AlreadyVerified(f"The email address of account {account_id} is verified already.")
        await registration_service.send_verification(session, runtime, account)
        await admin_audit.record(
            session, actor, "account.resend_verification", "account", account.id, reason
        )
        return account

    async def reset_password_link(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        account_id: int,
        reason: str | None = None,
    ) -> tuple[Account, str]:
        """A one-time link (one hour) to set a new password, for the operator to hand over."""
        account = await self.get(session, account_id)
        self._refuse_erased(account)
        if account.status is AccountStatus.terminated:
            raise StatusChangeRefused(
                f"Account {account_id} is terminated; it cannot be signed in to."
            )
        link = await recovery_service.operator_reset_link(session, runtime, account)
        await admin_audit.record(
            session, actor, "account.reset_password", "account", account.id, reason
        )
        return account, link

    @staticmethod
    def _refuse_self(actor: Actor, account: Account, verb: str) -> None:
        if isinstance(actor, Account) and actor.id == account.id:
            raise SelfActionRefused(
                f"You cannot {verb} your own account; ask another administrator."
            )

    @staticmethod
    def _refuse_one_admin_against_another(actor: Actor, account: Account, verb: str) -> None:
        # One stolen admin session must not be able to lock every other operator out.
        if isinstance(actor, Account) and account.is_admin:
            raise SecondAdminNeeded(
                f"Account {account.id} is an administrator. To {verb} an administrator, a second "
                "person is needed: an operator with access to the server's command line does it "
                "there."
            )

    @staticmethod
    def _refuse_erased(account: Account) -> None:
        if account.status is AccountStatus.erased:
            raise StatusChangeRefused(
                f"Account {account.id} was erased at its owner's request; it has no status "
                "left to change."
            )

    async def _change_status(
        self,
        session: AsyncSession,
        account: Account,
        status: AccountStatus,
        reason: str | None,
        *,
        clause: str | None = None,
    ) -> None:
        changed = await AccountRepository(session).change_status(
            account,
            expected=account.status,
            status=status,
            reason=reason.strip() if reason and reason.strip() else None,
            at=utcnow(),
            clause=clause,
        )
        if not changed:
            await self._lost_race(session, account)

    @staticmethod
    async def _lost_race(session: AsyncSession, account: Account) -> None:
        now = await AccountRepository(session).current_status(account.id)
        status, is_admin = now if now is not None else (None, False)
        what = f"it is now {status.value}" if status is not None else "it no longer exists"
        role = " and an administrator" if is_admin else ""
        raise StateChanged(
            f"Account {account.id} was changed by someone else a moment ago ({what}{role}); "
            "nothing was done. Look at it again before you act.",
            current_status=status.value if status is not None else None,
        )

    async def create_admin(
        self,
        session: AsyncSession,
        actor: Actor,
        email: str,
        password: str | None,
        *,
        promote: bool = False,
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
            if existing.status in (AccountStatus.terminated, AccountStatus.erased):
                raise StatusChangeRefused(
                    f"A {existing.status.value} account cannot become an administrator."
                )
            if not existing.is_admin and not await repo.change_admin(existing, is_admin=True):
                await self._lost_race(session, existing)
            await admin_audit.record(
                session, actor, "account.promote_admin", "account", existing.id
            )
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
        await admin_audit.record(session, actor, "account.create_admin", "account", account.id)
        return account


operator_service = OperatorService()

__all__ = ["AccountSearch", "Actor", "CliOperator", "OperatorService", "operator_service"]
