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

``update_indexed(index, key, kind, keys, fn)`` is the same for an index and the several values
it names, in one atomic step: a node report renews its lease index and the leases of every
account it names at once, not one step per account.

A step that returns the very value it was given (``is``) writes nothing: the value keeps its
expiry and its stamp. ``put`` writes a value no step decides (last writer wins); ``read_many``
reads several at once.

Stamps: a ``versioned`` kind gives a key a new stamp, a number never given before, each time
its value is written or deleted, and ``touch`` gives one without writing the value (to say
"what this value was computed from changed"). ``stamps`` reads them (0: none), so a caller
can tell that nothing it relied on changed without reading, let alone decoding, the values:
a node's steady report checks a hundred accounts in one small read.

The Redis store (``redis.py``) honours it as: ``WATCH k; GET k; fn; MULTI; SET k json PX ttl |
DEL k; EXEC``, retried on ``WatchError`` (``update_indexed``: ``WATCH i; GET i; WATCH k1 k2 ..;
MGET``, then every write in one ``MULTI``/``EXEC``); ``read`` is ``GET``, ``scan`` is ``SCAN
MATCH prefix*``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import TypeAdapter

from burrow.control.errors import Busy

T = TypeVar("T")
IndexT = TypeVar("IndexT")
R = TypeVar("R")


# What ``update_indexed`` runs: (the index, the values it names) -> (the new index, the values
# written, the result).
IndexedStep = Callable[
    [IndexT | None, Mapping[str, T | None]], tuple[IndexT | None, Mapping[str, T | None], R]
]


# How long a caller is asked to wait when the live store cannot answer.
BUSY_RETRY_AFTER_SECONDS = 2.0


class LiveStoreBusy(Busy):
    """The live store (Redis) could not be reached, or had no free connection in time."""

    def __init__(self) -> None:
        super().__init__(
            "We are briefly unable to handle this request; nothing was changed. Please try "
            "again in a few seconds.",
            retry_after=BUSY_RETRY_AFTER_SECONDS,
        )


@dataclass(frozen=True)
class Kind(Generic[T]):
    """A family of keys holding one type: ``prefix`` + a key, values of ``type``."""

    prefix: str
    type: type[T]
    # Every write gives the key a new stamp (``LiveStore.stamps``).
    versioned: bool = False
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
    # Whether other processes see this store (every replica and command line on the same
    # Redis), or only this one (RAM).
    shared: bool

    async def read(self, kind: Kind[T], key: str) -> T | None:
        """The value at ``key``, or None."""
        ...

    async def read_many(self, kind: Kind[T], keys: Sequence[str]) -> list[T | None]:
        """The values at ``keys``, in order (None where there is none)."""
        ...

    async def put(self, kind: Kind[T], key: str, value: T, *, ttl: float | None) -> None:
        """Write ``value`` whatever was there (for values no step decides: last writer wins)."""
        ...

    async def stamps(self, kind: Kind[Any], keys: Sequence[str]) -> list[int]:
        """Each key's stamp, in order: it changes whenever the value is written, deleted or
        touched; 0 for none (never written, deleted, or expired)."""
        ...

    async def stamps_many(
        self, requests: Sequence[tuple[Kind[Any], Sequence[str]]]
    ) -> list[list[int]]:
        """``stamps`` of several kinds in one read: one list per request, in order."""
        ...

    async def touch(self, kind: Kind[Any], keys: Sequence[str], *, ttl: float | None) -> None:
        """Give each key a new stamp, its value unchanged; the stamp lives ``ttl`` seconds."""
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
        """One atomic step over an index and the values of ``kind`` it names.

        ``keys`` (pure) names the keys of ``kind`` the step needs, from the index's value;
        ``fn`` gets the index's value and those keys' values (None when there is none) and
        returns the index's new value (None deletes it), the new values of the keys it changes
        (None deletes; a key left out stays as it is; only keys it was given may be written)
        and its result. The index and every value written get ``ttl``.

        ``stamps`` (a versioned ``kind``): filled with each named key's stamp as this step
        left it, the new stamp of a key it wrote, the one it read of the others.
        """
        ...

    async def scan(self, kind: Kind[Any]) -> list[str]:
        """The keys (without the prefix) that hold a value of ``kind`` now."""
        ...
