"""The in-process live store honours the ``LiveStore`` contract: typed, atomic, expiring."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from burrow.control.live import Kind, LiveStore, MemoryLiveStore


@dataclass(frozen=True)
class Tally:
    count: int


TALLY = Kind("test:tally:", Tally)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _add(state: Tally | None) -> tuple[Tally | None, int]:
    new = Tally((state.count if state else 0) + 1)
    return new, new.count


async def test_update_is_atomic_under_concurrent_callers() -> None:
    store: LiveStore = MemoryLiveStore()
    results = await asyncio.gather(*(store.update(TALLY, "a", _add, ttl=None) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await store.read(TALLY, "a") == Tally(50)


async def test_none_deletes_and_ttl_expires_and_scan_lists_live_keys() -> None:
    clock = Clock()
    store = MemoryLiveStore(clock=clock)
    await store.update(TALLY, "a", _add, ttl=10)
    await store.update(TALLY, "b", _add, ttl=None)
    assert sorted(await store.scan(TALLY)) == ["a", "b"]
    clock.now = 10
    assert await store.read(TALLY, "a") is None
    assert await store.scan(TALLY) == ["b"]
    assert await store.update(TALLY, "b", lambda _state: (None, "gone"), ttl=None) == "gone"
    assert await store.read(TALLY, "b") is None


def test_kinds_serialise_their_values_as_json() -> None:
    raw = TALLY.dump(Tally(3))
    assert raw == b'{"count":3}'
    assert TALLY.load(raw) == Tally(3)
