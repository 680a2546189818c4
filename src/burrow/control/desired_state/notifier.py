"""Wakes waiting long polls when the desired state moves.

In-process only; pollers also re-read the revision every half second, so a change made
by another process (the CLI, another replica) is seen within a second too.
"""

from __future__ import annotations

import asyncio


class RevisionNotifier:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        # Counts notifications, so a waiter can tell it missed one between looking and waiting.
        self.generation = 0

    def notify(self) -> None:
        # Wake every current waiter, then arm a fresh event for the next round.
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

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
