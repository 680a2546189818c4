"""All SQL of the devices domain.

A customer's devices are only ever read through ``_owned``, the one place that scopes a query
to an account. Nodes are read here too (a small, read-only query) so that a config can be
written for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Select, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from burrow.control.db import lock_row, locked
from burrow.control.models import Account, AddressHolding, Device, Node, NodeStatus


class DeviceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- one account's devices -------------------------------------------------------------

    def _owned(self, account_id: int) -> Select[Device]:
        """Tenant scoping: every read of a customer's devices starts here."""
        return select(Device).where(Device.account_id == account_id)

    async def list_for_account(self, account_id: int) -> Sequence[Device]:
        result = await self.session.execute(self._owned(account_id).order_by(Device.id))
        return result.scalars().all()

    async def get_for_account(
        self, account_id: int, device_id: int, *, lock: bool = False
    ) -> Device | None:
        """One of the account's devices; ``lock`` to change it: a concurrent change waits,
        and a device removed meanwhile is not found."""
        query = self._owned(account_id).where(Device.id == device_id)
        result = await self.session.execute(locked(query) if lock else query)
        return result.scalar_one_or_none()

    async def count_for_account(self, account_id: int) -> int:
        query = select(func.count()).select_from(self._owned(account_id).subquery())
        return int((await self.session.execute(query)).scalar_one())

    async def lock_account(self, account: Account) -> None:
        """Serialise device changes of one account until the unit of work ends, and read the
        account again under the lock (it may have been suspended meanwhile)."""
        await lock_row(self.session, Account, account.id)
        await self.session.refresh(account)

    # --- fleet-wide uniqueness -------------------------------------------------------------

    async def public_key_in_use(self, public_key: str) -> bool:
        """A device or a node has this key (every node serves every device: a device with a
        node's own key would break that node)."""
        query = select(
            exists().where(Device.public_key == public_key)
            | exists().where(Node.wg_public_key == public_key)
        )
        return bool((await self.session.execute(query)).scalar_one())

    async def max_address_index(self) -> int | None:
        """The highest index in use; an index lookup, whatever the number of devices."""
        value = (await self.session.execute(select(func.max(Device.address_index)))).scalar_one()
        return None if value is None else int(value)

    async def lowest_free_address_index(self, first: int, last: int) -> int | None:
        """The lowest index in ``first..last`` that no device holds, or None when all are taken.

        A scan of the index (an anti-join); only needed once the pool's end was reached.
        """
        taken_first = select(exists().where(Device.address_index == first))
        if not (await self.session.execute(taken_first)).scalar_one():
            return first
        held, following = aliased(Device), aliased(Device)
        query = select(func.min(held.address_index + 1)).where(
            held.address_index >= first,
            held.address_index + 1 <= last,
            ~exists().where(following.address_index == held.address_index + 1),
        )
        value = (await self.session.execute(query)).scalar_one()
        return None if value is None else int(value)

    async def insert(self, device: Device) -> bool:
        """Insert inside a savepoint; False when a unique constraint refused it (a race)."""
        try:
            async with self.session.begin_nested():
                self.session.add(device)
        except IntegrityError:
            return False
        return True

    async def set_public_key(self, device: Device, public_key: str) -> bool:
        """Re-key inside a savepoint; False when another device holds the key (a race)."""
        try:
            async with self.session.begin_nested():
                device.public_key = public_key
        except IntegrityError:
            return False
        return True

    async def delete(self, device: Device) -> None:
        await self.session.delete(device)
        await self.session.flush()

    async def flush(self) -> None:
        await self.session.flush()

    # --- the history of tunnel addresses (deterministic NAT only) ----------------------------

    async def open_holding(self, device: Device, at: datetime) -> None:
        self.session.add(
            AddressHolding(
                account_id=device.account_id,
                device_id=device.id,
                device_name=device.name,
                ipv4=device.ipv4,
                ipv6=device.ipv6,
                held_from=at,
            )
        )
        await self.session.flush()

    async def close_holdings(self, device_id: int, at: datetime) -> None:
        await self.session.execute(
            update(AddressHolding)
            .where(AddressHolding.device_id == device_id, AddressHolding.held_until.is_(None))
            .values(held_until=at)
        )

    async def holdings_during(
        self, ipv4: str, start: datetime, end: datetime
    ) -> Sequence[AddressHolding]:
        """Who held ``ipv4`` at some moment from ``start`` up to (not including) ``end``."""
        query = (
            select(AddressHolding)
            .where(
                AddressHolding.ipv4 == ipv4,
                AddressHolding.held_from < end,
                or_(AddressHolding.held_until.is_(None), AddressHolding.held_until > start),
            )
            .order_by(AddressHolding.held_from.desc())
        )
        return (await self.session.execute(query)).scalars().all()

    async def holdings_of(self, account_id: int) -> Sequence[AddressHolding]:
        query = (
            select(AddressHolding)
            .where(AddressHolding.account_id == account_id)
            .order_by(AddressHolding.held_from.desc(), AddressHolding.id.desc())
        )
        return (await self.session.execute(query)).scalars().all()

    async def delete_holdings_closed_before(self, before: datetime) -> int:
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            delete(AddressHolding).where(
                AddressHolding.held_until.is_not(None), AddressHolding.held_until < before
            )
        )
        return int(result.rowcount or 0)

    async def delete_all_holdings(self) -> int:
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            delete(AddressHolding)
        )
        return int(result.rowcount or 0)

    async def count_beyond_index(self, index: int) -> int:
        """Devices whose address index is ``index`` or more."""
        query = select(func.count()).select_from(Device).where(Device.address_index >= index)
        return int((await self.session.execute(query)).scalar_one())

    async def most_egress_ipv4(self) -> int:
        """The most IPv4 egress addresses any node not retired has (at least 1: a node without
        one on record leaves from its interface's address)."""
        query = select(Node.egress_ipv4, Node.egress_ipv4_extra).where(
            Node.status != NodeStatus.retired, Node.egress_ipv4.is_not(None)
        )
        rows = (await self.session.execute(query)).all()
        return max((1 + len(extra.split()) for _first, extra in rows), default=1)

    # --- nodes a config can be written for -------------------------------------------------

    @staticmethod
    def _active_nodes() -> Select[Node]:
        return select(Node).where(
            Node.status == NodeStatus.active,
            Node.wg_public_key.is_not(None),
            Node.retired_at.is_(None),
        )

    async def get_active_node(self, node_id: int) -> Node | None:
        result = await self.session.execute(self._active_nodes().where(Node.id == node_id))
        return result.scalar_one_or_none()

    async def nodes_changed_since(self, since: datetime) -> Sequence[Node]:
        """Active nodes whose configurations went out of date after ``since``."""
        query = (
            self._active_nodes()
            .where(Node.config_changed_at.is_not(None), Node.config_changed_at > since)
            .order_by(Node.config_changed_at.desc())
        )
        return (await self.session.execute(query)).scalars().all()

    async def recommended_node(self) -> Node | None:
        """The active node with the most capacity (the oldest among equals)."""
        query = self._active_nodes().order_by(Node.capacity.desc(), Node.id).limit(1)
        return (await self.session.execute(query)).scalar_one_or_none()
