"""The admin audit trail: who did what to what, when and why. A leaf: it imports no domain
(only the models), so every domain can record its actions here.

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
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.repository import ActionFilters, AdminActionRepository
from burrow.control.errors import Forbidden
from burrow.control.models import Account, AdminAction, utcnow


class NotAnAdministrator(Forbidden):
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
