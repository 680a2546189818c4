"""All SQL of device credentials.

A customer's credentials are read only through their device, which the devices service has
already found within the customer's account.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import Device, DeviceCredential, Node, NodeStatus


class CredentialRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_for_device(self, device_id: int) -> Sequence[DeviceCredential]:
        query = (
            select(DeviceCredential)
            .where(DeviceCredential.device_id == device_id)
            .order_by(DeviceCredential.protocol)
        )
        return (await self.session.execute(query)).scalars().all()

    async def of_account(self, account_id: int) -> Sequence[DeviceCredential]:
        query = (
            select(DeviceCredential)
            .join(Device, Device.id == DeviceCredential.device_id)
            .where(Device.account_id == account_id)
            .order_by(DeviceCredential.id)
        )
        return (await self.session.execute(query)).scalars().all()

    async def get(self, device_id: int, protocol: str) -> DeviceCredential | None:
        query = select(DeviceCredential).where(
            DeviceCredential.device_id == device_id, DeviceCredential.protocol == protocol
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def username_taken(self, protocol: str, username: str) -> bool:
        query = select(DeviceCredential.id).where(
            DeviceCredential.protocol == protocol, DeviceCredential.username == username
        )
        return (await self.session.execute(query)).first() is not None

    async def insert(self, credential: DeviceCredential) -> bool:
        """False when a unique rule refused it (a concurrent insert won)."""
        try:
            async with self.session.begin_nested():
                self.session.add(credential)
                await self.session.flush()
        except IntegrityError:
            return False
        return True

    async def get_active_node(self, node_id: int) -> Node | None:
        query = select(Node).where(
            Node.id == node_id, Node.status == NodeStatus.active, Node.wg_public_key.is_not(None)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def flush(self) -> None:
        await self.session.flush()

    async def remove(self, device_id: int, protocol: str) -> bool:
        result = await self.session.execute(
            delete(DeviceCredential).where(
                DeviceCredential.device_id == device_id, DeviceCredential.protocol == protocol
            )
        )
        return bool(getattr(result, "rowcount", 0))
