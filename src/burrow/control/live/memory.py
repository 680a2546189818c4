"""An in-process live store. Keys expire; nothing is written anywhere.

It implements ``LiveStore`` (``read``/``update``/``scan``): an ``update`` runs ``fn`` and
stores its answer without awaiting, so in one event loop it is atomic. The values are the
frozen records themselves (nothing is serialised in process). The older untyped methods
(``get``/``set``/``incr``/``ttl``/``delete``/``keys``) serve the sign-in throttle and the
nodes' last reports until those move onto typed keys too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from burrow.control.live.store import Kind

T = TypeVar("T")
IndexT = TypeVar("IndexT")
R = TypeVar("R")


@dataclass
class _Entry:
    value: Any
    expires_at: float | None


class MemoryLiveStore:
    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._data: dict[str, _Entry] = {}
        # Versioned kinds' stamps by full key (and whether a value holds it: then the stamp
        # goes with the value), and the last stamp given.
        self._stamps: dict[str, tuple[int, bool]] = {}
        self._last_stamp = 0

    def _alive(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self.clock():
            del self._data[key]
            if self._stamps.get(key, (0, False))[1]:
                del self._stamps[key]  # a value's stamp goes with it
            return None
        return entry

    # --- the typed interface (LiveStore) -------------------------------------------------

    async def read(self, kind: Kind[T], key: str) -> T | None:
        entry = self._alive(kind.prefix + key)
        return None if entry is None else cast("T", entry.value)

    async def read_many(self, kind: Kind[T], keys: Sequence[str]) -> list[T | None]:
        found: list[T | None] = []
        for key in keys:
            entry = self._alive(kind.prefix + key)
            found.append(None if entry is None else cast("T", entry.value))
        return found

    async def put(self, kind: Kind[T], key: str, value: T, *, ttl: float | None) -> None:
        self._write(kind, kind.prefix + key, value, ttl)

    async def stamps(self, kind: Kind[Any], keys: Sequence[str]) -> list[int]:
        return [self._stamp(kind.prefix + key) for key in keys]

    async def stamps_many(
        self, requests: Sequence[tuple[Kind[Any], Sequence[str]]]
    ) -> list[list[int]]:
        return [[self._stamp(kind.prefix + key) for key in keys] for kind, keys in requests]

    def _stamp(self, full: str) -> int:
        stamp, held = self._stamps.get(full, (0, False))
        if held and self._alive(full) is None:
            return 0  # its value is gone (expired, or removed by hand)
        return stamp

    async def touch(self, kind: Kind[Any], keys: Sequence[str], *, ttl: float | None) -> None:
        # In process a stamp lives as long as the store (or until its value expires).
        for key in keys:
            full = kind.prefix + key
            self._stamps[full] = (self._new_stamp(), self._alive(full) is not None)

    def _new_stamp(self) -> int:
        self._last_stamp += 1
        return self._last_stamp

    def _write(self, kind: Kind[Any], full: str, value: Any, ttl: float | None) -> int:
        """Store (None: delete) a value of ``kind``; its new stamp (0: not versioned)."""
        self._put(full, value, ttl)
        if not kind.versioned:
            return 0
        if value is None:
            self._stamps.pop(full, None)
            return 0
        stamp = self._new_stamp()
        self._stamps[full] = (stamp, True)
        return stamp

    async def update(
        self,
        kind: Kind[T],
        key: str,
        fn: Callable[[T | None], tuple[T | None, R]],
        *,
        ttl: float | None,
    ) -> R:
        full = kind.prefix + key
        entry = self._alive(full)
        current = None if entry is None else cast("T", entry.value)
        value, result = fn(current)
        if value is not current:
            self._write(kind, full, value, ttl)
        return result

    async def update_indexed(
        self,
        index: Kind[IndexT],
        index_key: str,
        kind: Kind[T],
        keys: Callable[[IndexT | None], Sequence[str]],
        fn: Callable[
            [IndexT | None, Mapping[str, T | None]], tuple[IndexT | None, Mapping[str, T | None], R]
        ],
        *,
        ttl: float | None,
        stamps: dict[str, int] | None = None,
    ) -> R:
        entry = self._alive(index.prefix + index_key)
        found = None if entry is None else cast("IndexT", entry.value)
        current: dict[str, T | None] = {}
        for key in keys(found):
            entry = self._alive(kind.prefix + key)
            current[key] = None if entry is None else cast("T", entry.value)
        new_index, values, result = fn(found, current)
        for key in values:
            if key not in current:
                raise KeyError(f"update_indexed wrote a key it did not read: {key!r}")
        written = {key: self._write(kind, kind.prefix + key, v, ttl) for key, v in values.items()}
        self._put(index.prefix + index_key, new_index, ttl)
        if stamps is not None:
            stamps.update({key: self._stamp(kind.prefix + key) for key in current})
            stamps.update(written)
        return result

    def _put(self, key: str, value: Any, ttl: float | None) -> None:
        if value is None:
            self._data.pop(key, None)
        else:
            self.set(key, value, ttl)

    async def scan(self, kind: Kind[Any]) -> list[str]:
        size = len(kind.prefix)
        return [key[size:] for key in self.keys(kind.prefix)]

    # --- untyped values ------------------------------------------------------------------

    def get(self, key: str) -> Any:
        entry = self._alive(key)
        return None if entry is None else entry.value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        expires = None if ttl is None else self.clock() + ttl
        self._data[key] = _Entry(value, expires)

    def incr(self, key: str, ttl: float) -> int:
        """Add one to a counter; a new counter lives ``ttl`` seconds."""
        entry = self._alive(key)
        if entry is None:
            self.set(key, 1, ttl)
            return 1
        entry.value = int(entry.value) + 1
        return int(entry.value)

    def ttl(self, key: str) -> float | None:
        entry = self._alive(key)
        if entry is None or entry.expires_at is None:
            return None
        return max(0.0, entry.expires_at - self.clock())

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        return [k for k in list(self._data) if k.startswith(prefix) and self._alive(k)]

    def purge_expired(self) -> None:
        for key in list(self._data):
            self._alive(key)
