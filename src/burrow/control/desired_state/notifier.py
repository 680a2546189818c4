"""Wakes waiting long polls when the desired state's revision moves.

``RevisionNotifier`` is this process's: long polls wait on it. ``RevisionWatcher`` (one per
replica, started with the app) is what moves it. It reads the current revision once
whenever it is told the revision moved, and wakes the waiting polls with that revision, so a
poll learns "there is something after my revision" without a database session of its own:

- a unit of work of this replica committed a change (``notify``, after commit);
- another replica did (a Redis pub/sub message on ``CHANNEL``; it carries no data, only
  "the revision moved": the polls pull the change itself by revision, from the database);
- or ``fallback_seconds`` passed: a lost message (Redis restarting, a change made by the
  CLI) costs at most that long, never a missed change.

Without a running watcher (tests that drive the app without its lifespan), ``notify`` wakes
the polls directly and they read the revision themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "burrow:revision"
# Deltas shared by the polls of one replica, (since, revision) -> the part every node shares.
_DELTAS_KEPT = 256


class RevisionNotifier:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        # Counts wake-ups, so a waiter can tell it missed one between looking and waiting.
        self.generation = 0
        # The newest revision a running watcher read; None while no watcher runs.
        self.revision: int | None = None
        self._kick: asyncio.Event | None = None
        # Deltas already built on this replica, so a thousand woken polls build one.
        self.deltas: dict[tuple[int, int], asyncio.Future[Any]] = {}

    def notify(self) -> None:
        """This process committed a change of the desired state."""
        if self._kick is not None:
            self._kick.set()  # the watcher reads the revision once, then wakes everyone
            return
        self._wake()

    def advance(self, revision: int) -> None:
        """The watcher read ``revision``: wake the polls if it moved."""
        if revision == self.revision:
            return
        self.revision = revision
        self._wake()

    def _wake(self) -> None:
        # Wake every current waiter, then arm a fresh event for the next round.
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    def remember(self, key: tuple[int, int], delta: asyncio.Future[Any]) -> None:
        self.deltas[key] = delta
        while len(self.deltas) > _DELTAS_KEPT:
            del self.deltas[next(iter(self.deltas))]

    async def wait(self, timeout: float, *, after: int | None = None) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds; True if something changed meanwhile.

        With ``after`` (a ``generation`` read earlier), return at once if a notification
        came since then.
        """
        if after is not None and after != self.generation:
            return True
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class RevisionWatcher:
    """One per replica: "the revision moved" (here, elsewhere, or maybe) -> one read, wake-ups."""

    def __init__(
        self,
        notifier: RevisionNotifier,
        read_revision: Callable[[], Awaitable[int]],
        *,
        redis_url: str | None,
        fallback_seconds: float,
    ) -> None:
        self._notifier = notifier
        self._read = read_revision
        self._redis = Redis.from_url(redis_url) if redis_url else None
        self._fallback = fallback_seconds
        self._kick = asyncio.Event()  # this replica committed a change
        self._heard = asyncio.Event()  # another replica did
        self._tasks: list[asyncio.Task[None]] = []
        self.reads = 0

    async def start(self) -> None:
        self._notifier._kick = self._kick
        await self._look(publish=False)
        self._tasks.append(asyncio.create_task(self._run(), name="burrow-revision-watcher"))
        if self._redis is not None:
            self._tasks.append(asyncio.create_task(self._listen(), name="burrow-revision-pubsub"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._notifier._kick is self._kick:
            self._notifier._kick = None
            self._notifier.revision = None
        if self._redis is not None:
            await self._redis.aclose()

    async def _look(self, *, publish: bool) -> None:
        self.reads += 1
        self._notifier.advance(await self._read())
        if publish and self._redis is not None:
            try:
                await self._redis.publish(CHANNEL, b"")
            except RedisError as exc:
                # The others see it at their next fallback read.
                log.warning("desired_state.publish_failed error=%s", type(exc).__name__)

    async def _run(self) -> None:
        kick, heard = self._kick, self._heard
        while True:
            waiters = [asyncio.ensure_future(kick.wait()), asyncio.ensure_future(heard.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=self._fallback, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            local = kick.is_set()
            # Cleared before reading: a commit during the read sets it again, and we read again.
            kick.clear()
            heard.clear()
            try:
                await self._look(publish=local)
            except Exception:
                log.exception("desired_state.watch_failed; trying again")
                await asyncio.sleep(min(1.0, self._fallback))

    async def _listen(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    # Anything missed while we were not subscribed: look once.
                    self._heard.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._heard.set()
            except RedisError as exc:
                log.warning("desired_state.subscribe_failed error=%s", type(exc).__name__)
                await asyncio.sleep(min(1.0, self._fallback))
