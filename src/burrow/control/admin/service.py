"""The admin audit trail, and the admin actions on accounts that go through it.

``admin_audit.record`` is called in the unit of work of every action an administrator takes
(through the API, the admin panel or the ``burrow`` command line), so the row and the change
commit or roll back together. Customers' own activity is never recorded: ``record`` refuses a
caller who is not an administrator. May import the accounts service (status changes) and the
policy schemas.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.service import account as account_service
from burrow.control.admin.repository import ActionFilters, AdminActionRepository
from burrow.control.admin.schemas import CLAUSE_MAX
from burrow.control.errors import Forbidden, InvalidInput
from burrow.control.models import Account, AdminAction, utcnow
from burrow.control.policy.schemas import Policy
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import SubscriptionDetails
from burrow.control.subscriptions.service import subscription as subscription_service

_BULLET = re.compile(r"^\s*[-*]\s+(.+?)\s*$")


class NotAnAdministrator(Forbidden):
    pass


class UnknownClause(InvalidInput):
    pass


@dataclass(frozen=True)
class CliOperator:
    """Someone at the server's shell running ``burrow``: no account, named by the OS user.

    Whoever can run the command line already holds the database and the secret key, so the
    trail records who it was (``detail`` says ``{"via": "cli", "operator": name}``, the row has
    no ``admin_id``) rather than refusing them.
    """

    name: str


# Who an admin action is recorded for: an administrator's account, or the command line.
Actor = Account | CliOperator


@dataclass(frozen=True)
class AuditEntry:
    action: AdminAction
    admin_email: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEntry]
    total: int


def terms_clauses(policy: Policy) -> list[str]:
    """The clauses an account can be terminated for breaking, from the policy's own terms.

    Each of the operator's sections is a clause, and so is each item of a list inside one
    ("Prohibited activities: spam or unsolicited bulk messaging"), so that the finding names
    the very rule. Terms without prose sections have one clause: the terms as a whole.
    """
    clauses: list[str] = []
    for section in policy.terms.sections:
        title = section.title.strip()
        clauses.append(title[:CLAUSE_MAX])
        for line in section.body.splitlines():
            match = _BULLET.match(line)
            if match:
                clauses.append(f"{title}: {match.group(1)}"[:CLAUSE_MAX])
    if not clauses:
        clauses.append(f"Terms of service, version {policy.terms.version}"[:CLAUSE_MAX])
    return list(dict.fromkeys(clauses))


def _detail_text(detail: dict[str, Any] | None) -> str:
    # default=str: datetimes, enums and Decimals become their text rather than an error.
    return json.dumps(detail or {}, sort_keys=True, default=str, ensure_ascii=False)


class AdminAuditService:
    async def record(
        self,
        session: AsyncSession,
        admin: Actor,
        action: str,
        target_type: str,
        target_id: int | str,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AdminAction:
        """Add one row to the trail in the caller's unit of work.

        ``detail`` is a small JSON object of what changed; never a client's IP address or
        connection data.
        """
        admin_id: int | None
        if isinstance(admin, CliOperator):
            admin_id = None
            detail = {**(detail or {}), "via": "cli", "operator": admin.name}
        elif admin.is_admin:
            admin_id = admin.id
        else:
            raise NotAnAdministrator("Only an administrator's actions are recorded here.")
        return await AdminActionRepository(session).add(
            AdminAction(
                admin_id=admin_id,
                action=action,
                target_type=target_type,
                target_id=str(target_id),
                reason=(reason or "").strip(),
                detail=_detail_text(detail),
                at=utcnow(),
            )
        )

    async def search(
        self,
        session: AsyncSession,
        filters: ActionFilters | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> AuditPage:
        """The trail newest first."""
        limit = max(1, min(limit, 500))
        rows, total = await AdminActionRepository(session).search(
            filters or ActionFilters(), limit, max(0, offset)
        )
        items = [
            AuditEntry(action=row, admin_email=email, detail=_parse(row.detail))
            for row, email in rows
        ]
        return AuditPage(items=items, total=total)


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}


class AdminAccountService:
    """Account status changes by an administrator, each with its row in the trail."""

    async def suspend(
        self, session: AsyncSession, runtime: Runtime, admin: Actor, account_id: int, reason: str
    ) -> Account:
        account = await account_service.suspend(session, runtime, account_id, reason)
        await admin_audit.record(session, admin, "account.suspend", "account", account.id, reason)
        return account

    async def unsuspend(
        self,
        session: AsyncSession,
        runtime: Runtime,
        admin: Actor,
        account_id: int,
        reason: str | None = None,
    ) -> Account:
        account = await account_service.unsuspend(session, runtime, account_id, reason)
        await admin_audit.record(session, admin, "account.unsuspend", "account", account.id, reason)
        return account

    async def terminate(
        self,
        session: AsyncSession,
        runtime: Runtime,
        admin: Actor,
        account_id: int,
        clause: str | None,
        reason: str,
    ) -> Account:
        """Terminate for a named violation: ``clause`` must be one of ``terms_clauses``.

        The API and the panel always name the clause; only the command line may leave it out
        (``None``), for a termination that is not for breaking the terms.
        """
        if clause is None:
            account = await account_service.terminate(session, runtime, account_id, reason)
            await admin_audit.record(
                session, admin, "account.terminate", "account", account.id, reason
            )
            return account
        clauses = terms_clauses(runtime.policy)
        if clause.strip() not in clauses:
            raise UnknownClause(
                f"'{clause}' is not a clause of the terms (version "
                f"{runtime.policy.terms.version}); pick one of: " + "; ".join(clauses[:40]),
                field="clause",
            )
        clause = clause.strip()
        account = await account_service.terminate(
            session, runtime, account_id, reason, clause=clause
        )
        await admin_audit.record(
            session,
            admin,
            "account.terminate",
            "account",
            account.id,
            reason,
            {"clause": clause, "terms_version": runtime.policy.terms.version},
        )
        return account

    async def make_admin(
        self,
        session: AsyncSession,
        admin: Actor,
        email: str,
        password: str | None,
        *,
        promote: bool = False,
    ) -> Account:
        """Create an administrator, or with ``promote`` make an existing account one."""
        made = await account_service.create_admin(session, email, password, promote=promote)
        await session.flush()  # a new account gets its id here, for the trail
        action = "account.promote_admin" if promote else "account.create_admin"
        await admin_audit.record(session, admin, action, "account", made.id)
        return made

    async def grant(
        self,
        session: AsyncSession,
        runtime: Runtime,
        admin: Actor,
        account_id: int,
        plan_code: str,
        *,
        months: int | None = None,
        days: int | None = None,
        reason: str | None = None,
    ) -> SubscriptionDetails:
        """Give or extend a paid period (the admin panel's "grant time")."""
        details = await subscription_service.grant(
            session, runtime, account_id, plan_code, months=months, days=days
        )
        await admin_audit.record(
            session,
            admin,
            "subscription.grant",
            "account",
            account_id,
            reason,
            {
                "plan_code": plan_code,
                "months": months,
                "days": days,
                "subscription_id": details.subscription.id,
                "period_end": details.subscription.current_period_end,
            },
        )
        return details


admin_audit = AdminAuditService()
admin_accounts = AdminAccountService()
