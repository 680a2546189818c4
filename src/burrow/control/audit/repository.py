"""All SQL of the admin audit trail: add a row, and read rows back with filters.

The trail is only ever added to: there is no update or delete here on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import Account, AdminAction


@dataclass(frozen=True)
class ActionFilters:
    admin_id: int | None = None
    # An exact verb ("account.suspend"), or a family when it has no dot ("account").
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None


class AdminActionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, action: AdminAction) -> AdminAction:
        self.session.add(action)
        await self.session.flush()
        return action

    @staticmethod
    def _conditions(filters: ActionFilters) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if filters.admin_id is not None:
            conditions.append(AdminAction.admin_id == filters.admin_id)
        if filters.action:
            if "." in filters.action:
                conditions.append(AdminAction.action == filters.action)
            else:
                escaped = filters.action.replace("\\", "\\\\").replace("%", "\\%")
                escaped = escaped.replace("_", "\\_")
                conditions.append(AdminAction.action.like(f"{escaped}.%", escape="\\"))
        if filters.target_type:
            conditions.append(AdminAction.target_type == filters.target_type)
        if filters.target_id:
            conditions.append(AdminAction.target_id == filters.target_id)
        return conditions

    async def search(
        self, filters: ActionFilters, limit: int, offset: int
    ) -> tuple[Sequence[tuple[AdminAction, str | None]], int]:
        """Newest first, each row with the administrator's email (None once deleted)."""
        conditions = self._conditions(filters)
        total = await self.session.scalar(
            select(func.count()).select_from(AdminAction).where(*conditions)
        )
        rows = await self.session.execute(
            select(AdminAction, Account.email)
            .outerjoin(Account, Account.id == AdminAction.admin_id)
            .where(*conditions)
            .order_by(AdminAction.at.desc(), AdminAction.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return [(row[0], row[1]) for row in rows.all()], int(total or 0)
