"""Rate limits on the `limits` library: one storage per process, moving windows.

An attempt is counted (``hit``) before the work it guards is done, atomically in the storage,
so twenty requests at once cannot all pass a limit of five. The storage comes from
``Settings.rate_limit_storage_uri``: RAM by default, Redis when several replicas share the
counts. Identifiers are whatever the caller passes; callers pass keyed digests, never an
address or an IP.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


@dataclass(frozen=True)
class Refused:
    """A limit was reached; the next attempt may succeed after ``retry_after`` seconds."""

    retry_after: float

    @property
    def seconds(self) -> int:
        # Rounded up: a client that waits exactly Retry-After must not arrive a moment early.
        return max(1, math.ceil(self.retry_after))


class RateLimits:
    def __init__(self, storage_uri: str = "async+memory://") -> None:
        storage = storage_from_string(storage_uri)
        if not isinstance(storage, Storage):
            raise ValueError(
                f"{storage_uri!r} is not an async rate-limit storage; use async+memory:// or "
                "async+redis://..."
            )
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)

    @staticmethod
    def parse(text: str) -> list[RateLimitItem]:
        return parse_many(text)

    async def hit(self, items: Sequence[RateLimitItem], *identifiers: str) -> Refused | None:
        """Count one attempt against every item; ``Refused`` if any of them was full.

        Each item is counted atomically on its own; an attempt refused by one item is not
        counted by the items after it.
        """
        for item in items:
            if not await self.limiter.hit(item, *identifiers):
                return await self._refusal(item, *identifiers)
        return None

    async def full(self, items: Sequence[RateLimitItem], *identifiers: str) -> Refused | None:
        """Whether an attempt would be refused now, without counting one."""
        for item in items:
            if not await self.limiter.test(item, *identifiers):
                return await self._refusal(item, *identifiers)
        return None

    async def clear(self, items: Sequence[RateLimitItem], *identifiers: str) -> None:
        for item in items:
            await self.limiter.clear(item, *identifiers)

    async def remember(self, key: str, seconds: float) -> None:
        """Mark ``key`` as seen for ``seconds`` (in the same storage, so never on disk)."""
        await self.storage.incr(f"mark/{key}", int(max(1, seconds)))

    async def remembered(self, key: str) -> bool:
        return await self.storage.get(f"mark/{key}") > 0

    async def _refusal(self, item: RateLimitItem, *identifiers: str) -> Refused:
        stats = await self.limiter.get_window_stats(item, *identifiers)
        return Refused(retry_after=max(1.0, stats.reset_time - time.time()))
