"""Fixtures of the devices tests: customers with a session token, and nodes to connect to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from burrow.control.db import unit_of_work
from burrow.control.models import Account, AccountStatus, Node, NodeStatus
from burrow.control.runtime import Runtime
from tests.support.factories import (
    create_account,
    create_node,
    create_session_token,
    create_subscription,
)


@dataclass
class Customer:
    account: Account
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MakeCustomer = Callable[..., Awaitable[Customer]]
MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
def make_customer(runtime: Runtime) -> MakeCustomer:
    """A committed account with a session token and (unless ``plan_code=None``) a subscription."""

    async def make(
        plan_code: str | None = "personal-monthly",
        status: AccountStatus = AccountStatus.active,
    ) -> Customer:
        async with unit_of_work(runtime.sessionmaker) as session:
            account = await create_account(session, status=status)
            token = await create_session_token(session, account)
            if plan_code is not None:
                await create_subscription(session, account, plan_code=plan_code)
        return Customer(account, token)

    return make


@pytest.fixture
def make_node(runtime: Runtime) -> MakeNode:
    async def make(
        *,
        name: str | None = None,
        endpoint_host: str = "vpn.example.net",
        status: NodeStatus = NodeStatus.active,
        wg_public_key: str | None = "",
        capacity: int = 1000,
        ikev2_host: str | None = None,
        ikev2_ca: str | None = None,
    ) -> Node:
        async with unit_of_work(runtime.sessionmaker) as session:
            return await create_node(
                session,
                name=name,
                endpoint_host=endpoint_host,
                status=status,
                wg_public_key=wg_public_key,
                capacity=capacity,
                ikev2_host=ikev2_host,
                ikev2_ca=ikev2_ca,
            )

    return make
