"""Both live stores honour the ``LiveStore`` contract: typed, atomic, expiring.

Every test runs on the in-process store and on Redis (``redis-server`` from the test setup).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
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


@dataclass(frozen=True)
class Names:
    keys: tuple[str, ...]


NAMES = Kind("test:names:", Names)


def _named(index: Names | None) -> list[str]:
    return list(index.keys) if index else []


def _add_each(
    index: Names | None, states: Mapping[str, Tally | None]
) -> tuple[Names | None, dict[str, Tally | None], dict[str, int]]:
    new = {key: Tally((state.count if state else 0) + 1) for key, state in states.items()}
    return index, dict(new), {key: tally.count for key, tally in new.items()}


async def _index(store: LiveStore, *keys: str) -> None:
    await store.update(NAMES, "i", lambda _old: (Names(keys), None), ttl=None)


async def test_update_indexed_is_one_atomic_step_over_its_keys(store: LiveStore) -> None:
    await _index(store, "a", "b", "c")
    results = await asyncio.gather(
        *(store.update_indexed(NAMES, "i", TALLY, _named, _add_each, ttl=None) for _ in range(30))
    )
    # Every caller saw all three keys at the same count: no step interleaved with another.
    assert sorted(r["a"] for r in results) == list(range(1, 31))
    assert all(r["a"] == r["b"] == r["c"] for r in results)
    for key in "abc":
        assert await store.read(TALLY, key) == Tally(30)


async def test_update_indexed_reads_what_the_index_names_and_writes_both(
    store: LiveStore,
) -> None:
    clock = Clock()
    store.clock = clock
    await store.update(TALLY, "gone", _add, ttl=None)
    await store.update(TALLY, "kept", _add, ttl=None)
    await store.update(TALLY, "unnamed", _add, ttl=None)
    await _index(store, "gone", "kept", "new")

    def step(
        index: Names | None, states: Mapping[str, Tally | None]
    ) -> tuple[Names | None, dict[str, Tally | None], str]:
        assert index == Names(("gone", "kept", "new"))
        assert states == {"gone": Tally(1), "kept": Tally(1), "new": None}
        return Names(("kept", "new")), {"gone": None, "new": Tally(7)}, "done"

    assert await store.update_indexed(NAMES, "i", TALLY, _named, step, ttl=10) == "done"
    assert await store.read(NAMES, "i") == Names(("kept", "new"))
    assert await store.read(TALLY, "gone") is None
    assert await store.read(TALLY, "kept") == Tally(1)  # left out: untouched, no expiry
    assert await store.read(TALLY, "new") == Tally(7)
    clock.now += 10
    assert await store.read(TALLY, "new") is None
    assert await store.read(NAMES, "i") is None  # the index has the step's lifetime too
    assert await store.read(TALLY, "kept") == Tally(1)

    def stray(
        index: Names | None, _states: Mapping[str, Tally | None]
    ) -> tuple[Names | None, dict[str, Tally | None], None]:
        return index, {"unnamed": Tally(5)}, None

    with pytest.raises(KeyError):
        await store.update_indexed(NAMES, "i", TALLY, _named, stray, ttl=None)
    assert await store.read(TALLY, "unnamed") == Tally(1)

    def drop(
        _index: Names | None, _states: Mapping[str, Tally | None]
    ) -> tuple[Names | None, dict[str, Tally | None], None]:
        return None, {}, None

    await _index(store, "kept")
    await store.update_indexed(NAMES, "i", TALLY, _named, drop, ttl=None)
    assert await store.read(NAMES, "i") is None


async def test_update_indexed_on_redis_replicas_never_loses_an_update(redis_url: str) -> None:
    stores = [RedisLiveStore.from_url(redis_url) for _ in range(5)]
    try:
        await _index(stores[0], "x", "y")
        await asyncio.gather(
            *(
                s.update_indexed(NAMES, "i", TALLY, _named, _add_each, ttl=60)
                for s in stores
                for _ in range(6)
            )
        )
        assert await stores[0].read(TALLY, "x") == Tally(30)
        assert await stores[0].read(TALLY, "y") == Tally(30)
    finally:
        for s in stores:
            await s.close()


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


STAMPED = Kind("test:stamped:", Tally, versioned=True)


def _same(state: Tally | None) -> tuple[Tally | None, None]:
    return state, None


async def test_a_step_returning_the_value_it_was_given_writes_nothing(store: LiveStore) -> None:
    clock = Clock()
    store.clock = clock
    await store.update(STAMPED, "a", _add, ttl=10)
    [before] = await store.stamps(STAMPED, ["a"])
    clock.now += 6
    await store.update(STAMPED, "a", _same, ttl=10)
    assert await store.stamps(STAMPED, ["a"]) == [before]
    clock.now += 6
    # The unchanged value kept its first expiry: the step did not renew it.
    assert await store.read(STAMPED, "a") is None


async def test_every_write_gives_a_versioned_key_a_stamp_never_given_before(
    store: LiveStore,
) -> None:
    assert await store.stamps(STAMPED, ["a", "b"]) == [0, 0]
    await store.update(STAMPED, "a", _add, ttl=None)
    [first, none] = await store.stamps(STAMPED, ["a", "b"])
    assert first > 0
    assert none == 0
    await store.update(STAMPED, "a", _add, ttl=None)
    [second] = await store.stamps(STAMPED, ["a"])
    assert second > first
    await store.update(STAMPED, "a", lambda _s: (None, None), ttl=None)
    assert await store.stamps(STAMPED, ["a"]) == [0]
    await store.update(STAMPED, "a", _add, ttl=None)
    [again] = await store.stamps(STAMPED, ["a"])
    assert again not in (0, first, second)
    # A touch changes the stamp, not the value; a key with no value can be touched too.
    await store.touch(STAMPED, ["a", "b"], ttl=None)
    [touched, b] = await store.stamps(STAMPED, ["a", "b"])
    assert touched not in (0, again)
    assert b not in (0, touched)
    assert await store.read(STAMPED, "a") == Tally(1)
    assert await store.stamps_many([(STAMPED, ["b", "a"]), (TALLY, []), (STAMPED, ["a"])]) == [
        [b, touched],
        [],
        [touched],
    ]
    # Kinds that are not versioned have no stamps.
    await store.update(TALLY, "a", _add, ttl=None)
    assert await store.stamps(TALLY, ["a"]) == [0]


async def test_update_indexed_tells_the_stamps_it_left(store: LiveStore) -> None:
    await store.update(STAMPED, "kept", _add, ttl=None)
    await _index(store, "kept", "new")

    def step(
        index: Names | None, states: Mapping[str, Tally | None]
    ) -> tuple[Names | None, dict[str, Tally | None], None]:
        return index, {"new": Tally(1)}, None

    stamps: dict[str, int] = {}
    await store.update_indexed(NAMES, "i", STAMPED, _named, step, ttl=None, stamps=stamps)
    now = await store.stamps(STAMPED, ["kept", "new"])
    assert stamps == dict(zip(["kept", "new"], now, strict=True))
    assert stamps["new"] > stamps["kept"] > 0


async def test_put_and_read_many(store: LiveStore) -> None:
    clock = Clock()
    store.clock = clock
    await store.put(TALLY, "x", Tally(4), ttl=5)
    await store.put(STAMPED, "y", Tally(5), ttl=None)
    assert await store.read_many(TALLY, ["x", "nothing"]) == [Tally(4), None]
    assert (await store.stamps(STAMPED, ["y"]))[0] > 0
    clock.now += 5
    assert await store.read_many(TALLY, ["x"]) == [None]
    assert await store.read_many(TALLY, []) == []


async def test_more_callers_than_connections_wait_for_one(redis_url: str) -> None:
    """A burst larger than the pool (a thousand nodes polling again at once) queues for a
    connection instead of failing with "Too many connections"."""
    store = RedisLiveStore.from_url(redis_url, max_connections=2)
    try:
        results = await asyncio.gather(
            *(store.update(TALLY, "burst", _add, ttl=60) for _ in range(40)),
            *(store.stamps(STAMPED, ["a", "b"]) for _ in range(40)),
        )
        assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 41))
        assert await store.read(TALLY, "burst") == Tally(40)
    finally:
        await store.close()
