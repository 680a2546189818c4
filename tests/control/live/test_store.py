"""Both live stores honour the ``LiveStore`` contract: typed, atomic, expiring.

Every test runs on the in-process store and on Redis (``redis-server`` from the test setup).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from burrow.control.live import Kind, LiveStore, MemoryLiveStore, RedisLiveStore
from burrow.control.live.redis import persistence
from tests.support.redis import RedisServer, running_redis


@dataclass(frozen=True)
class Tally:
    count: int


TALLY = Kind("test:tally:", Tally)


class Clock:
    now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _add(state: Tally | None) -> tuple[Tally | None, int]:
    new = Tally((state.count if state else 0) + 1)
    return new, new.count


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LiveStore]:
    if request.param == "memory":
        yield MemoryLiveStore()
        return
    redis = RedisLiveStore.from_url(request.getfixturevalue("redis_url"))
    try:
        yield redis
    finally:
        await redis.close()


async def test_update_is_atomic_under_concurrent_callers(store: LiveStore) -> None:
    results = await asyncio.gather(*(store.update(TALLY, "a", _add, ttl=None) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await store.read(TALLY, "a") == Tally(50)


async def test_none_deletes_and_ttl_expires_and_scan_lists_live_keys(store: LiveStore) -> None:
    clock = Clock()
    store.clock = clock
    await store.update(TALLY, "a", _add, ttl=10)
    await store.update(TALLY, "b", _add, ttl=None)
    assert sorted(await store.scan(TALLY)) == ["a", "b"]
    clock.now += 10
    assert await store.read(TALLY, "a") is None
    assert await store.scan(TALLY) == ["b"]
    # An expired value counts as none for the next update too.
    assert await store.update(TALLY, "a", _add, ttl=10) == 1
    assert await store.update(TALLY, "b", lambda _state: (None, "gone"), ttl=None) == "gone"
    assert await store.read(TALLY, "b") is None


async def test_replicas_sharing_redis_never_lose_an_update(redis_url: str) -> None:
    """Ten stores (as ten replicas would) each add to one tally at the same time."""
    stores = [RedisLiveStore.from_url(redis_url) for _ in range(10)]
    try:
        results = await asyncio.gather(
            *(s.update(TALLY, "shared", _add, ttl=60) for s in stores for _ in range(5))
        )
        assert sorted(results) == list(range(1, 51))
        assert await stores[0].read(TALLY, "shared") == Tally(50)
    finally:
        for s in stores:
            await s.close()


async def test_redis_honours_its_own_expiry_too(redis_url: str) -> None:
    """Redis frees a value nobody reads again (PX), a little after its logical expiry."""
    store = RedisLiveStore.from_url(redis_url)
    try:
        await store.update(TALLY, "brief", _add, ttl=0.01)
        ttl_ms = await store.client.pttl(TALLY.prefix + "brief")
        assert 0 < ttl_ms <= 6_000
    finally:
        await store.close()


async def test_persistence_tells_what_a_server_writes_to_disk(
    redis_server: RedisServer,
) -> None:
    assert await persistence(redis_server.url()) == []
    with running_redis("--save", "3600 1", "--appendonly", "yes") as careless:
        found = await persistence(careless.url())
    assert found == [
        'RDB snapshots are on (save "3600 1")',
        "the append-only file is on (appendonly yes)",
    ]


def test_kinds_serialise_their_values_as_json() -> None:
    raw = TALLY.dump(Tally(3))
    assert raw == b'{"count":3}'
    assert TALLY.load(raw) == Tally(3)
