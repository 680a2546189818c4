"""Wakes waiting long polls when the desired state moves.

In-process only; pollers also re-read the revision every second, so a change made
by another process (the CLI, another replica) is seen within a second too.
"""

from __future__ import annotations

import asyncio


class RevisionNotifier:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        # Wake every current waiter, then arm a fresh event for the next round.
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if something changed meanwhile."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True
