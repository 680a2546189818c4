"""Nodes: the VPN servers, their enrollment and their tokens. (to be built)"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.errors import NotAuthenticated
from burrow.control.models import Node


class NodeService:
    async def authenticate(self, session: AsyncSession, token: str) -> Node:
        raise NotAuthenticated("Unknown node token.")


node = NodeService()
