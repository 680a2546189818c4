"""Fixtures of the connections tests: customers with served devices, nodes with tokens, a
fake clock on the live store, and a helper that sends node reports through the node API.

Every test here runs on both live stores: this process's RAM and Redis (``live`` param)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.connections import service as connections_module
from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.live import MemoryLiveStore, RedisLiveStore
from burrow.control.models import Account, Device, Node, utcnow
from burrow.control.refunds.usage import service as usage_module
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token
from burrow.wire import API_PREFIX
from tests.support.factories import (
    create_account,
    create_device,
    create_node,
    create_session_token,
    create_subscription,
)

REPORT = f"{API_PREFIX}/report"


@pytest.fixture(params=["memory", "redis"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "memory":
        return settings
    url: str = request.getfixturevalue("redis_url")
    return settings.model_copy(update={"redis_url": url})


async def forget_live(runtime: Runtime) -> None:
    """Empty the live store, as a restart of every replica (and of Redis) would."""
    if isinstance(runtime.live, RedisLiveStore):
        await runtime.live.clear()
    else:
        assert isinstance(runtime.live, MemoryLiveStore)
        runtime.live._data.clear()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(runtime: Runtime) -> FakeClock:
    fake = FakeClock()
    runtime.live.clock = fake
    return fake


class Wall:
    """The wall clock of records, moved by hand together with the live store's clock."""

    def __init__(self, live: FakeClock) -> None:
        self.now = utcnow().replace(microsecond=0)
        self.live = live

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.live.advance(seconds)


@pytest.fixture
def wall(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Wall:
    fake = Wall(clock)
    monkeypatch.setattr(connections_module, "_utcnow", fake)
    monkeypatch.setattr(usage_module, "_utcnow", fake)
    return fake


@dataclass
class Customer:
    account: Account
    devices: list[Device]
    headers: dict[str, str]

    def key(self, index: int) -> str:
        return self.devices[index].public_key


@dataclass
class ReportingNode:
    """A node with a token, reporting through ``POST /node-api/v1/report``."""

    row: Node
    headers: dict[str, str]
    client: httpx.AsyncClient
    seq: int = 0
    boot_id: str = "boot-1"
    sent: list[dict[str, object]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.row.name

    async def report(
        self,
        *connected: str,
        idle: tuple[str, ...] = (),
        bytes_each: tuple[int, int] = (0, 0),
        idle_bytes: tuple[int, int] = (0, 0),
    ) -> list[str]:
        """Report these keys connected (each with ``bytes_each`` rx, tx); returns blocked."""
        self.seq += 1
        rx, tx = bytes_each
        peers = [
            {"public_key": key, "connected": True, "rx_bytes": rx, "tx_bytes": tx}
            for key in connected
        ] + [
            {
                "public_key": key,
                "connected": False,
                "rx_bytes": idle_bytes[0],
                "tx_bytes": idle_bytes[1],
            }
            for key in idle
        ]
        body = {"boot_id": self.boot_id, "seq": self.seq, "revision": 0, "peers": peers}
        response = await self.client.post(REPORT, json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        ack = response.json()
        assert ack["accepted"] is True
        return list(ack["blocked"])


MakeCustomer = Callable[..., Awaitable[Customer]]
MakeNode = Callable[..., Awaitable[ReportingNode]]


@pytest.fixture
def customer(runtime: Runtime) -> MakeCustomer:
    async def make(plan_code: str = "personal-monthly", devices: int = 3) -> Customer:
        async with unit_of_work(runtime.sessionmaker) as session:
            account = await create_account(session)
            await create_subscription(session, account, plan_code=plan_code)
            rows = [
                await create_device(session, account, name=f"Device {n}") for n in range(devices)
            ]
            await desired_state_service.refresh_account(session, runtime, account.id)
            token = await create_session_token(session, account)
        return Customer(account, rows, {"Authorization": f"Bearer {token}"})

    return make


@pytest.fixture
def node(runtime: Runtime, client: httpx.AsyncClient) -> MakeNode:
    async def make(name: str, uplink_mbit: int | None = None) -> ReportingNode:
        token = new_token("bwn_")
        async with unit_of_work(runtime.sessionmaker) as session:
            row = await create_node(session, name=name)
            row.node_token_hash = hash_token(token)
            row.city = "Berlin"
            row.country = "DE"
            row.uplink_mbit = uplink_mbit
        return ReportingNode(row, {"Authorization": f"Bearer {token}"}, client)

    return make
