"""Fixtures of the node API tests: an administrator, and nodes enrolled through the API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from burrow.control.db import unit_of_work
from burrow.control.nodes.schemas import NodeCreate
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.wire import API_PREFIX
from tests.support.factories import create_account, create_session_token, new_public_key


@dataclass
class EnrolledNode:
    id: int
    name: str
    token: str
    public_key: str
    interface_name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


Enroll = Callable[..., Awaitable[EnrolledNode]]


@pytest.fixture
async def admin_headers(runtime: Runtime) -> dict[str, str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        token = await create_session_token(session, admin)
    return {"Authorization": f"Bearer {token}"}


async def new_enrollment_token(runtime: Runtime, name: str) -> str:
    """Create node ``name`` the way an operator does; returns its enrollment token."""
    async with unit_of_work(runtime.sessionmaker) as session:
        data = NodeCreate(
            name=name, country="NL", city="Amsterdam", endpoint_host="vpn.example.net"
        )
        created = await node_service.create(session, runtime, data)
    return created.enrollment.token


@pytest.fixture
def enroll(client: httpx.AsyncClient, runtime: Runtime) -> Enroll:
    """Create a node and enroll it through the node API."""

    async def make(name: str = "ams-1") -> EnrolledNode:
        token = await new_enrollment_token(runtime, name)
        key = new_public_key()
        response = await client.post(
            f"{API_PREFIX}/enroll", json={"token": token, "public_key": key}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return EnrolledNode(
            body["node_id"], body["node_name"], body["node_token"], key, body["interface_name"]
        )

    return make
