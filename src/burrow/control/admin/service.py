"""The admin audit trail: who did what to what, when and why. A leaf: it imports no domain
(only the models and the policy schemas), so every domain can record its actions here.

The actor mechanism, for any domain's operator actions: the service method takes
``actor: Actor`` (an administrator's ``Account`` from the API or panel, or ``CliOperator`` from
the command line) and, in the same unit of work as the change, calls
``admin_audit.record(session, actor, "<domain>.<verb>", "<target type>", target_id, reason,
detail)``. The edges only pass the actor on; the row and the change commit or roll back
together. Customers' own activity is never recorded: ``record`` refuses an actor who is not an
administrator.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.admin.repository import ActionFilters, AdminActionRepository
from burrow.control.errors import Forbidden, InvalidInput
from burrow.control.models import Account, AdminAction, utcnow
from burrow.control.policy.schemas import Policy

# The length of accounts.terminated_clause (admin.schemas.CLAUSE_MAX says the same to the API;
# not imported from there, because the schemas use the accounts domain's text types).
CLAUSE_MAX = 200
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


def require_administrator(actor: Actor) -> None:
    """Refuse an actor whose action the trail would refuse; for an action with an effect
    outside the database (money sent back), checked before that effect."""
    if isinstance(actor, Account) and not actor.is_admin:
        raise NotAnAdministrator("Only an administrator's actions are recorded here.")


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
        require_administrator(admin)
        admin_id: int | None
        if isinstance(admin, CliOperator):
            admin_id = None
            detail = {**(detail or {}), "via": "cli", "operator": admin.name}
        else:
            admin_id = admin.id
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


admin_audit = AdminAuditService()
