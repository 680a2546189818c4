"""One watcher per replica wakes its long polls; nodes pull the delta by revision.

Replicas here are runtimes on one database and one Redis, each with its ``RevisionWatcher``
running as ``burrow serve``'s lifespan runs it. Database work is counted at the engine's
pool (each checkout is one unit of work).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
from sqlalchemy import event

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.desired_state.notifier import RevisionWatcher
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import Device, Node
from burrow.control.runtime import Runtime
from burrow.wire import DeltaState
from tests.control.desired_state.test_service import paying_customer
from tests.support.app import running_runtime
from tests.support.factories import create_node


class Checkouts:
    """Counts the units of work a runtime's engine hands out."""

    def __init__(self, runtime: Runtime) -> None:
        self.count = 0
        event.listen(runtime.engine.sync_engine, "checkout", self._seen)

    def _seen(self, *_args: object) -> None:
        self.count += 1


@asynccontextmanager
async def replica(
    settings: Settings, fallback: float
) -> AsyncIterator[tuple[Runtime, RevisionWatcher]]:
    async with running_runtime(settings) as rt:
        watcher = RevisionWatcher(
            rt.notifier,
            partial(desired_state_service.read_revision, rt),
            redis_url=settings.redis_url,
            fallback_seconds=fallback,
        )
        await watcher.start()
        try:
            yield rt, watcher
        finally:
            await watcher.stop()


async def _node_and_revision(runtime: Runtime) -> tuple[Node, int]:
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session)
        return node, await desired_state_service.current_revision(session)


async def _add_paying_device(runtime: Runtime) -> Device:
    async with unit_of_work(runtime.sessionmaker) as session:
        account, (device,) = await paying_customer(session)
        await desired_state_service.refresh_account(session, runtime, account.id)
    return device


def _polls(runtime: Runtime, node: Node, since: int, count: int) -> list[asyncio.Task[object]]:
    return [
        asyncio.create_task(desired_state_service.wait_for_changes(runtime, node, since, 20.0))
        for _ in range(count)
    ]


@pytest.fixture
def shared(settings: Settings, redis_url: str) -> Settings:
    return settings.model_copy(update={"redis_url": redis_url})


async def test_a_change_on_one_replica_wakes_polls_on_another_within_a_second(
    shared: Settings,
) -> None:
    # The fallback is long: only the signal through Redis can wake the polls in time.
    async with replica(shared, 30.0) as (a, _), replica(shared, 30.0) as (b, watcher_b):
        node, revision = await _node_and_revision(a)
        polls = _polls(b, node, revision, 20)
        await asyncio.sleep(0.3)
        assert not any(p.done() for p in polls)
        checkouts = Checkouts(b)

        device = await _add_paying_device(a)
        committed = time.monotonic()
        updates = await asyncio.wait_for(asyncio.gather(*polls), 5)

        assert time.monotonic() - committed < 1.0
        for update in updates:
            assert isinstance(update, DeltaState)
            assert [p.public_key for p in update.upserts] == [device.public_key]
        # Replica b read the revision once and built the delta once for all twenty polls.
        assert checkouts.count <= 3, checkouts.count
        assert watcher_b.reads <= 3


async def test_waiting_polls_read_nothing_while_nothing_changes(shared: Settings) -> None:
    async with replica(shared, 30.0) as (rt, watcher):
        node, revision = await _node_and_revision(rt)
        await asyncio.sleep(0.2)  # the watcher's own look after that commit, if any
        checkouts = Checkouts(rt)
        reads = watcher.reads
        polls = _polls(rt, node, revision, 50)
        await asyncio.sleep(2.0)
        # Fifty polls re-reading every half second would have taken 200 units of work.
        assert (checkouts.count, watcher.reads - reads) == (0, 0)
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)


async def test_a_lost_signal_costs_at_most_one_fallback_interval(settings: Settings) -> None:
    """No Redis at all, and the change made by another process (as the CLI does)."""
    async with replica(settings, 0.5) as (rt, _watcher):
        node, revision = await _node_and_revision(rt)
        polls = _polls(rt, node, revision, 5)
        await asyncio.sleep(0.3)
        other = Runtime.build(settings)  # its notifier reaches no one
        try:
            device = await _add_paying_device(other)
        finally:
            await other.close()
        committed = time.monotonic()
        updates = await asyncio.wait_for(asyncio.gather(*polls), 5)
        assert time.monotonic() - committed < 0.5 + 0.5
        for update in updates:
            assert isinstance(update, DeltaState)
            assert [p.public_key for p in update.upserts] == [device.public_key]


async def test_a_node_ahead_of_the_watcher_waits_instead_of_getting_the_full_state(
    shared: Settings,
) -> None:
    async with replica(shared, 30.0) as (a, _), running_runtime(shared) as quiet:
        node, _revision = await _node_and_revision(a)
        # A change a's watcher has not heard of (no watcher on ``quiet`` publishes it).
        await _add_paying_device(quiet)
        ahead = await desired_state_service.read_revision(a)
        poll = asyncio.create_task(desired_state_service.wait_for_changes(a, node, ahead, 0.5))
        update = await asyncio.wait_for(poll, 5)
        assert isinstance(update, DeltaState)
        assert (update.from_revision, update.revision, update.upserts) == (ahead, ahead, ())
