"""The live store's seam: typed keys and an atomic read-modify-write.

``LiveStore`` is what the connection broker (and, in time, everything live) talks to. Values
are typed, frozen records that pydantic turns into JSON and back (``Kind.adapter``), so a
store out of process (Redis, with persistence off) can hold them. The one write is
``update(kind, key, fn)``: ``fn`` gets the current value (None when there is none) and
returns ``(new value or None to delete, result)``; the store applies it atomically and hands
back the result. ``fn`` must be pure (no I/O, no clock, no mutation of its argument): a store
may call it more than once, for example a Redis store retrying after a WATCHed key changed
between its GET and its MULTI/EXEC, or running the same step in a Lua script. Time and other
inputs are read before ``update`` and closed over.

``update_many(kind, keys, fn)`` is the same for several keys of one kind at once: ``fn`` gets
every key's value and returns the new values of the keys it changes, all applied in one atomic
step (a node report renews the leases of every account it names in one step, not one per
account).

The Redis store (``redis.py``) honours it as: ``WATCH k; GET k; fn; MULTI; SET k json PX ttl |
DEL k; EXEC``, retried on ``WatchError`` (``update_many``: ``WATCH k1 k2 ..; MGET``, then every
``SET``/``DEL`` in one ``MULTI``/``EXEC``); ``read`` is ``GET``, ``scan`` is ``SCAN MATCH
prefix*``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import TypeAdapter

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Kind(Generic[T]):
    """A family of keys holding one type: ``prefix`` + a key, values of ``type``."""

    prefix: str
    type: type[T]
    adapter: TypeAdapter[T] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", TypeAdapter(self.type))

    def dump(self, value: T) -> bytes:
        return self.adapter.dump_json(value)

    def load(self, raw: bytes | str) -> T:
        return self.adapter.validate_json(raw)


class LiveStore(Protocol):
    """What is true only right now, shared by every replica that uses the same store."""

    # The store's clock (seconds) that lease times are counted in; one all replicas share.
    clock: Callable[[], float]

    async def read(self, kind: Kind[T], key: str) -> T | None:
        """The value at ``key``, or None."""
        ...

    async def update(
        self,
        kind: Kind[T],
        key: str,
        fn: Callable[[T | None], tuple[T | None, R]],
        *,
        ttl: float | None,
    ) -> R:
        """Atomically replace the value by ``fn``'s (None deletes it); returns its result.

        ``ttl`` (seconds) is the new value's lifetime, None for no expiry.
        """
        ...

    async def update_many(
        self,
        kind: Kind[T],
        keys: Sequence[str],
        fn: Callable[[Mapping[str, T | None]], tuple[Mapping[str, T | None], R]],
        *,
        ttl: float | None,
    ) -> R:
        """``update`` of several keys in one atomic step.

        ``fn`` gets every key of ``keys`` with its value (None when there is none) and returns
        the new values of the keys it changes (None deletes; a key left out stays as it is;
        only keys of ``keys`` may be written) and its result.
        """
        ...

    async def scan(self, kind: Kind[Any]) -> list[str]:
        """The keys (without the prefix) that hold a value of ``kind`` now."""
        ...
