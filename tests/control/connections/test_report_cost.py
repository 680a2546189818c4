"""What one node report costs the control plane: it must grow with the peers it names, not
with their square.

Wall time on a shared machine is no measure, so the work is counted instead: the lines of
burrow's own code the report runs (``sys.settrace``, which counts every loop iteration), for
reports of 100, 200 and 400 connected devices. A linear path adds as much per extra peer at
400 as at 200; a scan of the node's whole lease index once per account (the cost the issue
measured: 8 ms for 100 peers, 98 ms for 1,000) adds twice as much per peer each time the
report doubles. The figures in seconds live in ``bench/reports.py``.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from burrow.control.connections.service import NODE_STEADY
from burrow.control.connections.service import connection as connection_service
from burrow.control.db import unit_of_work
from burrow.control.live import RedisLiveStore
from burrow.control.models import Account, Node, Plan, ServedPeer, Subscription, utcnow
from burrow.control.models.subscription import SubscriptionStatus
from burrow.control.runtime import Runtime
from burrow.wire import NodeReport, PeerStatus
from tests.control.connections.conftest import FakeClock, MakeCustomer, MakeNode
from tests.support.factories import create_account, create_node
from tests.support.work import LineCounter

pytestmark = pytest.mark.usefixtures("clock")

DEVICES_PER_ACCOUNT = 2


def _key(index: int) -> str:
    return base64.b64encode((7_000_000 + index).to_bytes(32, "big")).decode()


async def _serve(runtime: Runtime, devices: int, first: int) -> list[str]:
    """``devices`` served peers, two per business account with an active subscription."""
    now = utcnow()
    accounts = devices // DEVICES_PER_ACCOUNT
    async with unit_of_work(runtime.sessionmaker) as session:
        plan_id = (
            await session.execute(select(Plan.id).where(Plan.code == "business-monthly"))
        ).scalar_one()
        account_ids = list(
            (
                await session.scalars(
                    insert(Account).returning(Account.id),
                    [
                        {"email": f"cost{first + n}@example.com", "password_hash": "-"}
                        for n in range(accounts)
                    ],
                )
            ).all()
        )
        await session.execute(
            insert(Subscription),
            [
                {
                    "account_id": account_id,
                    "plan_id": plan_id,
                    "status": SubscriptionStatus.active,
                    "current_period_start": now,
                    "current_period_end": now + timedelta(days=30),
                }
                for account_id in account_ids
            ],
        )
        keys = [_key(first + n) for n in range(devices)]
        await session.execute(
            insert(ServedPeer),
            [
                {
                    "device_id": 5_000_000 + first + n,
                    "account_id": account_ids[n // DEVICES_PER_ACCOUNT],
                    "public_key": key,
                    "ipv4": "10.99.0.1",
                    "ipv6": "fd99::1",
                    "revision": 1,
                }
                for n, key in enumerate(keys)
            ],
        )
    return keys


async def _work_of_report(runtime: Runtime, clock: FakeClock, devices: int, first: int) -> int:
    keys = await _serve(runtime, devices, first)
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session)
    peers = tuple(PeerStatus(public_key=k, connected=True, rx_bytes=1, tx_bytes=1) for k in keys)
    # The first report starts every lease; the steady state (renewing them) is what counts.
    for seq in (1, 2):
        report = NodeReport(boot_id="cost", seq=seq, revision=0, peers=peers)
        async with unit_of_work(runtime.sessionmaker) as session:
            node = await session.get_one(Node, node.id)
            clock.advance(5)
            if seq == 1:
                blocked = await connection_service.observe_report(session, runtime, node, report)
                continue
            await _forget_steady(runtime, node.id)
            with LineCounter() as counter:
                blocked = await connection_service.observe_report(session, runtime, node, report)
    # One WireGuard connection per server on these plans: each account's second device waits.
    assert len(blocked.keys) == devices // DEVICES_PER_ACCOUNT
    return counter.lines


async def _forget_steady(runtime: Runtime, node_id: int) -> None:
    """Make the node's next report a full one (a steady one does no lease work at all)."""
    await runtime.live.update(NODE_STEADY, str(node_id), lambda _old: (None, None), ttl=None)


async def test_a_report_costs_in_proportion_to_its_peers(
    runtime: Runtime, clock: FakeClock
) -> None:
    small = await _work_of_report(runtime, clock, 100, 0)
    middle = await _work_of_report(runtime, clock, 200, 1_000)
    large = await _work_of_report(runtime, clock, 400, 2_000)
    assert small > 0
    per_peer_at_200 = (middle - small) / 100
    per_peer_at_400 = (large - middle) / 200
    # Linear: equal (a little noise from dict resizing); quadratic: double.
    assert per_peer_at_400 <= 1.1 * per_peer_at_200, (small, middle, large)


async def test_a_report_does_not_wait_for_the_database_write_lock(
    runtime: Runtime, customer: MakeCustomer, node: MakeNode
) -> None:
    """Leases are decided in the live store; a strict policy's report writes nothing to the
    database, so it must not queue behind SQLite's one write lock (a thousand nodes' reports
    would otherwise run one at a time)."""
    alice = await customer("business-monthly", devices=1)
    ams = await node("ams-1")
    async with unit_of_work(runtime.sessionmaker) as holding:
        # Another request is in the middle of a write and holds the lock.
        await create_account(holding)
        blocked = await asyncio.wait_for(ams.report(alice.key(0)), timeout=5)
    assert blocked == []


def _count_store_calls(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count each call the app makes to the live store's typed interface from now on."""
    calls: Counter[str] = Counter()
    store = runtime.live
    for name in (
        "read",
        "read_many",
        "update",
        "update_indexed",
        "put",
        "stamps",
        "stamps_many",
        "scan",
    ):
        method = getattr(store, name, None)
        if method is None:
            continue

        def counted(
            method: Callable[..., Awaitable[Any]] = method, name: str = name
        ) -> Callable[..., Awaitable[Any]]:
            async def call(*args: Any, **kwargs: Any) -> Any:
                calls[name] += 1
                return await method(*args, **kwargs)

            return call

        monkeypatch.setattr(store, name, counted())
    return calls


async def _redis_commands(runtime: Runtime) -> Counter[str]:
    """Commands the Redis server has run so far, by name (none for the in-process store)."""
    if not isinstance(runtime.live, RedisLiveStore):
        return Counter()
    stats = await runtime.live.client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(e["calls"]) for name, e in stats.items()})


async def test_a_report_talks_to_the_live_store_a_fixed_number_of_times(
    runtime: Runtime, node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full report of 100 connected devices of 50 accounts: a handful of live-store calls
    (and, with Redis, of commands), not one transaction per account. Two SQL statements: the
    node's token and the keys' owners."""
    keys = await _serve(runtime, 100, 3_000)
    ams = await node("ams-1")
    assert len(await ams.report(*keys)) == 50  # every lease starts; one device of each waits
    await _forget_steady(runtime, ams.row.id)
    calls = _count_store_calls(runtime, monkeypatch)
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        commands = await _redis_commands(runtime)
        blocked = await ams.report(*keys)
        commands = await _redis_commands(runtime) - commands
        commands["info"] -= 1  # our own
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert len(blocked) == 50
    # The node token's stamp, the node's report record, its steady record, the node's lease
    # index and every account's leases in one step, the node's liveness, the accounts' access
    # stamps, the new steady record: none of them once per account.
    assert sum(calls.values()) <= 8, calls
    assert len(statements) <= 2, statements
    if isinstance(runtime.live, RedisLiveStore):
        # Each step one WATCH .. MULTI .. EXEC of its keys (three round trips), never one per
        # account; every value written once (the several writes of a step in one script).
        # A versioned value's write is three commands inside that script (the value, a new
        # stamp from the counter, the stamp).
        writes = commands["set"] + commands["del"] + commands["incr"]
        assert commands.total() - writes <= 20, commands
        assert writes <= 3 * 50 + 4, commands
