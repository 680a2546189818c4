"""Steady reports: a node whose report changes nothing costs no SQL and no lease step, and
still every change reaches it, whoever made it.

A node reports every 5 seconds; almost always the same devices are connected as last time.
Such a report only renews the node's liveness and repeats its last answer. Each test here
shows one way that shortcut could answer wrongly (a lease elsewhere that lapsed or ended, an
account whose access changed, a node gone silent, a change missed for good), and that it
does not. Every test runs on the in-process store and on Redis.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from burrow.control.connections.repository import ConnectionRepository
from burrow.control.connections.service import STEADY_MAX_AGE_SECONDS
from burrow.control.connections.service import connection as connection_service
from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import Subscription
from burrow.control.models.subscription import SubscriptionStatus
from burrow.control.runtime import Runtime
from tests.control.connections.conftest import FakeClock, MakeCustomer, MakeNode

pytestmark = pytest.mark.usefixtures("clock")


class Statements:
    """The SQL statements the app runs while this is open."""

    def __init__(self, runtime: Runtime) -> None:
        self.engine = runtime.engine.sync_engine
        self.seen: list[str] = []

    def _note(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._note)
        return self.seen

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._note)


@pytest.fixture
def statements(runtime: Runtime) -> Statements:
    return Statements(runtime)


def _owner_queries(seen: list[str]) -> int:
    return sum("served_peers" in statement for statement in seen)


async def _sweep(runtime: Runtime) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        return await connection_service.end_lapsed_leases(session, runtime)


async def test_a_steady_report_reads_no_owners(
    customer: MakeCustomer, node: MakeNode, statements: Statements, clock: FakeClock
) -> None:
    alice = await customer("personal-monthly", devices=2)
    ams = await node("ams-1")
    assert await ams.report(alice.key(0), alice.key(1)) == [alice.key(1)]
    clock.advance(5)
    with statements as seen:
        assert await ams.report(alice.key(0), alice.key(1)) == [alice.key(1)]
    # Nothing: the node's token was checked a moment ago (its stamp stands), and no owners
    # are looked up, no leases read or written.
    assert seen == []
    clock.advance(5)
    with statements as seen:
        # One device fewer: a full report, which ends that lease.
        assert await ams.report(alice.key(0)) == []
    assert _owner_queries(seen) == 1


async def test_steady_reports_keep_leases_alive_and_a_silent_node_frees_them(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, clock: FakeClock
) -> None:
    bob = await customer("business-monthly", devices=2)
    ams, fra = await node("ams-1"), await node("fra-1")
    ttl = runtime.settings.connection_lease_ttl_seconds
    await ams.report(bob.key(0))
    assert await fra.report(bob.key(1)) == [bob.key(1)]
    # Four lease lifetimes of steady reports: ams's lease (renewed through the node only)
    # still holds bob's one connection; neither fra's reports nor the sweep end it.
    for _ in range(int(4 * ttl / 5)):
        clock.advance(5)
        assert await ams.report(bob.key(0)) == []
        assert await fra.report(bob.key(1)) == [bob.key(1)]
        assert await _sweep(runtime) == 0
    # ams falls silent: when its liveness lapses, fra's next (steady) report admits bob.
    clock.advance(ttl - 1)
    assert await fra.report(bob.key(1)) == [bob.key(1)]
    clock.advance(2)
    assert await fra.report(bob.key(1)) == []
    assert await _sweep(runtime) == 0  # fra's full report ended ams's lease already


async def test_the_sweep_ends_the_leases_of_a_node_that_fell_silent_after_steady_reports(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, clock: FakeClock
) -> None:
    carol = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    ttl = runtime.settings.connection_lease_ttl_seconds
    await ams.report(carol.key(0))
    for _ in range(4):
        clock.advance(ttl / 2)
        await ams.report(carol.key(0))
    assert await _sweep(runtime) == 0
    clock.advance(ttl + 1)
    assert await _sweep(runtime) == 1


async def test_a_lease_ended_on_another_node_reaches_a_steady_node_at_its_next_report(
    customer: MakeCustomer, node: MakeNode, clock: FakeClock
) -> None:
    bob = await customer("business-monthly", devices=2)
    ams, fra = await node("ams-1"), await node("fra-1")
    await ams.report(bob.key(0))
    assert await fra.report(bob.key(1)) == [bob.key(1)]
    clock.advance(5)
    assert await fra.report(bob.key(1)) == [bob.key(1)]
    assert await ams.report(bob.key(0)) == []
    # bob's first device disconnects from ams: its slot frees, fra admits the second.
    clock.advance(5)
    assert await ams.report(idle=(bob.key(0),)) == []
    assert await fra.report(bob.key(1)) == []


async def test_an_access_change_reaches_a_steady_node_at_its_next_report(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, clock: FakeClock
) -> None:
    dave = await customer("personal-monthly", devices=2)
    ams = await node("ams-1")
    assert await ams.report(dave.key(0), dave.key(1)) == [dave.key(1)]
    clock.advance(5)
    assert await ams.report(dave.key(0), dave.key(1)) == [dave.key(1)]
    # Dave's subscription ends: his devices are no longer served, so no lease of his counts
    # and nothing of his is blocked, even before the node has removed his peers.
    async with unit_of_work(runtime.sessionmaker) as session:
        subscription = (
            await session.scalars(
                select(Subscription).where(Subscription.account_id == dave.account.id)
            )
        ).one()
        subscription.status = SubscriptionStatus.expired
        await desired_state_service.refresh_account(session, runtime, dave.account.id)
    clock.advance(5)
    assert await ams.report(dave.key(0), dave.key(1)) == []


async def test_a_steady_node_makes_a_full_report_within_the_maximum_age(
    customer: MakeCustomer, node: MakeNode, statements: Statements, clock: FakeClock
) -> None:
    erin = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    await ams.report(erin.key(0))
    full = 0
    with statements as seen:
        for _ in range(int(STEADY_MAX_AGE_SECONDS / 5)):
            clock.advance(5)
            assert await ams.report(erin.key(0)) == []
        full = _owner_queries(seen)
    # Whatever a race between a commit and its stamp let slip is seen within that age.
    assert full == 1


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The keys each owners' query of the app asks for."""
    calls: list[list[str]] = []
    original = ConnectionRepository.peer_owners

    async def spy(self: ConnectionRepository, keys: Sequence[str], now: datetime) -> Any:
        calls.append(sorted(keys))
        return await original(self, keys, now)

    monkeypatch.setattr(ConnectionRepository, "peer_owners", spy)
    return calls


async def test_a_report_works_only_on_the_accounts_whose_connections_changed(
    customer: MakeCustomer, node: MakeNode, clock: FakeClock, asked: list[list[str]]
) -> None:
    people = [await customer("personal-monthly", devices=2) for _ in range(5)]
    ams = await node("ams-1")
    everyone = [c.key(i) for c in people for i in (0, 1)]
    second = sorted(c.key(1) for c in people)
    assert await ams.report(*everyone) == second
    assert asked == [sorted(everyone)]
    # One customer's blocked device disconnects: only that customer is looked up and decided
    # again; everyone else's answer is the one the node had.
    clock.advance(5)
    asked.clear()
    leaving = people[2].key(1)
    assert await ams.report(*(k for k in everyone if k != leaving)) == [
        k for k in second if k != leaving
    ]
    assert asked == [[people[2].key(0)]]
    # It connects again: a new key of a customer with a connection here, so both of that
    # customer's keys are looked up, and the limit blocks it again.
    clock.advance(5)
    asked.clear()
    assert await ams.report(*everyone) == second
    assert sorted(k for keys in asked for k in keys) == sorted(people[2].key(i) for i in (0, 1))


async def test_keys_no_account_owns_are_looked_up_once(
    customer: MakeCustomer, node: MakeNode, clock: FakeClock, asked: list[list[str]]
) -> None:
    fay = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    stranger = base64.b64encode(b"s" * 32).decode()
    assert await ams.report(fay.key(0), stranger) == []
    clock.advance(5)
    asked.clear()
    assert await ams.report(fay.key(0), stranger) == []
    assert asked == []
    other = base64.b64encode(b"t" * 32).decode()
    clock.advance(5)
    assert await ams.report(fay.key(0), stranger, other) == []
    assert asked == [sorted([stranger, other])]
