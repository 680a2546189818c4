"""All SQL about nodes. Nodes belong to the operator, not to a customer: no tenant scope."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import Device, Node, NodeStatus

# Built once: every node request (a thousand nodes' reports and polls) runs it.
_BY_NODE_TOKEN_HASH = select(Node).where(Node.node_token_hash == bindparam("token_hash"))


class NodeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, node_id: int) -> Node | None:
        return await self.session.get(Node, node_id)

    async def _one(self, where: ColumnElement[bool]) -> Node | None:
        query = select(Node).where(where)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def get_by_name(self, name: str) -> Node | None:
        return await self._one(Node.name == name)

    async def get_by_node_token_hash(self, token_hash: str) -> Node | None:
        found = await self.session.execute(_BY_NODE_TOKEN_HASH, {"token_hash": token_hash})
        return found.scalar_one_or_none()

    async def get_by_enrollment_hash(self, token_hash: str) -> Node | None:
        return await self._one(Node.enrollment_token_hash == token_hash)

    async def get_by_public_key(self, public_key: str) -> Node | None:
        return await self._one(Node.wg_public_key == public_key)

    async def device_holds_key(self, public_key: str) -> bool:
        """A customer's device has this WireGuard key (a node must not take it)."""
        query = select(exists().where(Device.public_key == public_key))
        return bool((await self.session.execute(query)).scalar_one())

    async def list_all(self) -> Sequence[Node]:
        return (await self.session.execute(select(Node).order_by(Node.id))).scalars().all()

    async def list_active(self) -> Sequence[Node]:
        query = (
            select(Node)
            .where(Node.status == NodeStatus.active, Node.wg_public_key.is_not(None))
            .order_by(Node.country, Node.city, Node.name, Node.id)
        )
        return (await self.session.execute(query)).scalars().all()

    async def save(self, node: Node) -> bool:
        """Write ``node``; False if a unique column (name, key, token) clashed.

        After False the transaction is spoiled: the caller must raise, so it rolls back.
        """
        self.session.add(node)
        try:
            await self.session.flush()
        except IntegrityError:
            return False
        return True

    async def clear_enrollments_expired_before(self, moment: datetime) -> int:
        result = await self.session.execute(
            update(Node)
            .where(Node.enrollment_expires_at < moment)
            .values(enrollment_token_hash=None, enrollment_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
