"""The live store in Redis, shared by every replica that names the same ``BURROW_REDIS_URL``.

It implements ``LiveStore``. Each ``update`` is one optimistic transaction:
``WATCH k; GET k; fn; MULTI; SET k PX ttl | DEL k; EXEC``, retried when another replica wrote
``k`` between the GET and the EXEC, so two reports on two replicas can never both take the
last slot of an account. ``fn`` is pure, so running it again on a retry is harmless.
``update_indexed`` is one such transaction over an index and the keys it names (``WATCH i; GET
i; WATCH k1 k2 ..; MGET k1 k2 ..; MULTI; EVAL <write them all>; EXEC``): five round trips
however many keys, so a report that renews the leases of fifty accounts costs what one did.

A value is stored as ``<expires_at>\\n<json>``: ``expires_at`` is counted in the store's clock
(wall time, the one clock replicas share; ``-`` for none), so a value is gone at the same
moment for every reader, and tests can move the clock as they do for the in-process store.
Redis's own expiry (``PX``) frees the memory of values nobody reads again.

Redis here must keep nothing on disk under a strict policy (``--save "" --appendonly no``);
``persistence`` tells what a server does, for ``burrow audit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import WatchError

from burrow.control.live.store import Kind

T = TypeVar("T")
IndexT = TypeVar("IndexT")
R = TypeVar("R")

# Redis's own expiry follows the logical one by this much, so a reader whose clock runs a
# little behind another replica's never finds a value gone that it still counts as alive.
_EXPIRY_SLACK_SECONDS = 5.0
# Connections one process opens to Redis at most, and how long a call waits for a free one.
# redis-py's own pool refuses a call outright beyond its limit ("Too many connections"): a
# thousand nodes polling again at once made that a 500. Past the wait: ``LiveStoreBusy``.
MAX_CONNECTIONS = 64
CONNECTION_WAIT_SECONDS = 10.0
_SCAN_BATCH = 500

# A versioned kind's stamp of key k lives at STAMP_PREFIX + k; stamps are drawn from one
# counter, so a stamp is never given twice (a value deleted and written again never shows an
# old stamp). One Redis server, as everything here assumes, not Redis Cluster.
STAMP_PREFIX = "stamp:"
_STAMP_COUNTER = "stamp:counter"

# Writes several keys in one command (inside MULTI/EXEC, after WATCH). KEYS: n value keys, their
# n stamp keys, the stamp counter. ARGV, three per key: the value (empty: delete), its expiry
# in milliseconds (0: none), "1" if it is versioned. Returns each key's new stamp (0: none).
_WRITE_MANY = """
local n = (#KEYS - 1) / 2
local stamps = {}
for i = 1, n do
  local key, value = KEYS[i], ARGV[3 * i - 2]
  local px, versioned = tonumber(ARGV[3 * i - 1]), ARGV[3 * i] == '1'
  stamps[i] = 0
  if value == '' then
    redis.call('DEL', key)
    if versioned then redis.call('DEL', KEYS[n + i]) end
  else
    if px > 0 then
      redis.call('SET', key, value, 'PX', px)
    else
      redis.call('SET', key, value)
    end
    if versioned then
      stamps[i] = redis.call('INCR', KEYS[#KEYS])
      if px > 0 then
        redis.call('SET', KEYS[n + i], stamps[i], 'PX', px)
      else
        redis.call('SET', KEYS[n + i], stamps[i])
      end
    end
  end
end
return stamps
"""

# Gives each of KEYS (but the last, the counter) a new stamp; ARGV[1]: its expiry in
# milliseconds (0: none).
_TOUCH = """
local px = tonumber(ARGV[1])
for i = 1, #KEYS - 1 do
  local stamp = redis.call('INCR', KEYS[#KEYS])
  if px > 0 then
    redis.call('SET', KEYS[i], stamp, 'PX', px)
  else
    redis.call('SET', KEYS[i], stamp)
  end
end
return #KEYS - 1
"""


class RedisLiveStore:
    shared = True

    def __init__(self, client: Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = MAX_CONNECTIONS) -> RedisLiveStore:
        """A store on ``url`` whose calls queue for one of ``max_connections`` connections."""
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=CONNECTION_WAIT_SECONDS
        )
        return cls(Redis.from_pool(pool))

    async def close(self) -> None:
        await self.client.aclose()

    # --- the envelope ----------------------------------------------------------------------

    def _encode(self, kind: Kind[T], value: T, ttl: float | None) -> bytes:
        expires = "-" if ttl is None else repr(self.clock() + ttl)
        return expires.encode() + b"\n" + kind.dump(value)

    def _decode(self, kind: Kind[T], raw: bytes | None) -> T | None:
        if raw is None:
            return None
        head, _, body = raw.partition(b"\n")
        if head != b"-" and float(head) <= self.clock():
            return None
        return kind.load(body)

    @staticmethod
    def _expiry_ms(ttl: float) -> int:
        return max(1, math.ceil((ttl + _EXPIRY_SLACK_SECONDS) * 1000))

    # --- the typed interface (LiveStore) ---------------------------------------------------

    async def read(self, kind: Kind[T], key: str) -> T | None:
        raw = cast("bytes | None", await self.client.get(kind.prefix + key))
        return self._decode(kind, raw)

    async def read_many(self, kind: Kind[T], keys: Sequence[str]) -> list[T | None]:
        if not keys:
            return []
        raws = cast("list[bytes | None]", await self.client.mget([kind.prefix + k for k in keys]))
        return [self._decode(kind, raw) for raw in raws]

    async def put(self, kind: Kind[T], key: str, value: T, *, ttl: float | None) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            self._queue_write(pipe, kind, kind.prefix + key, value, ttl)
            await pipe.execute()

    async def stamps(self, kind: Kind[Any], keys: Sequence[str]) -> list[int]:
        return (await self._stamps_many([(kind, keys)]))[0]

    async def stamps_many(
        self, requests: Sequence[tuple[Kind[Any], Sequence[str]]]
    ) -> list[list[int]]:
        return await self._stamps_many(requests)

    async def _stamps_many(
        self, requests: Sequence[tuple[Kind[Any], Sequence[str]]]
    ) -> list[list[int]]:
        names = [STAMP_PREFIX + kind.prefix + k for kind, keys in requests for k in keys]
        raws = cast("list[bytes | None]", await self.client.mget(names)) if names else []
        found: list[list[int]] = []
        start = 0
        for _kind, keys in requests:
            part = raws[start : start + len(keys)]
            found.append([0 if raw is None else int(raw) for raw in part])
            start += len(keys)
        return found

    async def touch(self, kind: Kind[Any], keys: Sequence[str], *, ttl: float | None) -> None:
        if not keys:
            return
        names = [STAMP_PREFIX + kind.prefix + k for k in keys]
        expiry = 0 if ttl is None else self._expiry_ms(ttl)
        await self.client.eval(_TOUCH, len(names) + 1, *names, _STAMP_COUNTER, expiry)

    def _queue_write(
        self, pipe: Any, kind: Kind[T], full: str, value: T | None, ttl: float | None
    ) -> None:
        """Queue in ``pipe`` the write of one value (None deletes), with its stamp if any."""
        if kind.versioned:
            self._queue_many(pipe, [(kind, full, value)], ttl)
        elif value is None:
            pipe.delete(full)
        elif ttl is None:
            pipe.set(full, self._encode(kind, value, None))
        else:
            pipe.set(full, self._encode(kind, value, ttl), px=self._expiry_ms(ttl))

    def _queue_many(
        self, pipe: Any, writes: Sequence[tuple[Kind[Any], str, Any]], ttl: float | None
    ) -> None:
        """Queue in ``pipe`` the one script that writes ``writes`` (and their stamps)."""
        keys, args = self._script_args(writes, ttl)
        pipe.eval(_WRITE_MANY, len(keys), *keys, *args)

    def _script_args(
        self, writes: Sequence[tuple[Kind[Any], str, Any]], ttl: float | None
    ) -> tuple[list[str], list[bytes | int | str]]:
        expiry = 0 if ttl is None else self._expiry_ms(ttl)
        keys = [full for _kind, full, _value in writes]
        keys += [STAMP_PREFIX + full for full in keys]
        keys.append(_STAMP_COUNTER)
        args: list[bytes | int | str] = []
        for kind, _full, value in writes:
            args += [self._blob(kind, value, ttl), expiry, "1" if kind.versioned else "0"]
        return keys, args

    async def update(
        self,
        kind: Kind[T],
        key: str,
        fn: Callable[[T | None], tuple[T | None, R]],
        *,
        ttl: float | None,
    ) -> R:
        full = kind.prefix + key
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(full)
                    raw = cast("bytes | None", await pipe.get(full))
                    current = self._decode(kind, raw)
                    value, result = fn(current)
                    if value is current:
                        await pipe.reset()  # type: ignore[no-untyped-call]  # nothing to write: UNWATCH
                        return result
                    pipe.multi()  # type: ignore[no-untyped-call]
                    self._queue_write(pipe, kind, full, value, ttl)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue  # another writer came between our read and our write: again

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
        index_full = index.prefix + index_key
        want_stamps = stamps is not None and kind.versioned
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(index_full)
                    found = self._decode(index, cast("bytes | None", await pipe.get(index_full)))
                    names = list(keys(found))
                    fulls = [kind.prefix + key for key in names]
                    raws: list[bytes | None] = []
                    read_stamps: list[bytes | None] = []
                    if fulls:
                        await pipe.watch(*fulls)
                        stamp_keys = [STAMP_PREFIX + full for full in fulls] if want_stamps else []
                        both = cast("list[bytes | None]", await pipe.mget(fulls + stamp_keys))
                        raws, read_stamps = both[: len(fulls)], both[len(fulls) :]
                    current = {
                        key: self._decode(kind, raw) for key, raw in zip(names, raws, strict=True)
                    }
                    new_index, values, result = fn(found, current)
                    writes: list[tuple[Kind[Any], str, Any]] = [(index, index_full, new_index)]
                    for key, value in values.items():
                        if key not in current:
                            raise KeyError(
                                f"update_indexed may only write the keys it read: {key!r}"
                            )
                        writes.append((kind, kind.prefix + key, value))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    self._queue_many(pipe, writes, ttl)
                    new_stamps = cast("list[int]", (await pipe.execute())[0])
                    if stamps is not None and want_stamps:
                        stamps.update(
                            (key, 0 if raw is None else int(raw))
                            for key, raw in zip(names, read_stamps, strict=True)
                        )
                        stamps.update(zip(values, new_stamps[1:], strict=True))
                    return result
                except WatchError:
                    continue  # another writer came between our reads and our writes: again

    def _blob(self, kind: Kind[T], value: T | None, ttl: float | None) -> bytes:
        """What ``_WRITE_MANY`` stores: the envelope, or nothing to delete."""
        return b"" if value is None else self._encode(kind, value, ttl)

    async def scan(self, kind: Kind[Any]) -> list[str]:
        pattern = _glob_escape(kind.prefix) + "*"
        keys: list[bytes] = [k async for k in self.client.scan_iter(pattern, count=_SCAN_BATCH)]
        found: list[str] = []
        size = len(kind.prefix)
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start : start + _SCAN_BATCH]
            values = cast("list[bytes | None]", await self.client.mget(batch))
            now = self.clock()
            for name, raw in zip(batch, values, strict=True):
                if raw is None:
                    continue
                head = raw.partition(b"\n")[0]
                if head == b"-" or float(head) > now:
                    found.append(name.decode()[size:])
        return found

    async def clear(self) -> None:
        """Forget everything in this store's database (tests, between cases)."""
        await self.client.flushdb()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def persistence(url: str) -> list[str]:
    """What the Redis server at ``url`` writes to disk: empty when it keeps nothing there."""
    client: Redis = Redis.from_url(url)
    try:
        config = dict(cast("dict[Any, Any]", await client.config_get("save")))
        config.update(cast("dict[Any, Any]", await client.config_get("appendonly")))
    finally:
        await client.aclose()
    found = []
    config = {_text(k): _text(v) for k, v in config.items()}
    save = config.get("save", "")
    if save.strip():
        found.append(f'RDB snapshots are on (save "{save}")')
    if config.get("appendonly", "no").lower() == "yes":
        found.append("the append-only file is on (appendonly yes)")
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
