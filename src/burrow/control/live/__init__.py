"""The live store: what is true only right now. In RAM; nothing of it reaches disk.

Connection leases, login throttling counters and node reports live here. ``LiveStore`` is
the typed, async seam (``store.py``); ``MemoryLiveStore`` the in-process default. A Redis
implementation stands behind the same interface when replicas scale out.
"""

from burrow.control.live.memory import MemoryLiveStore
from burrow.control.live.store import Kind, LiveStore

__all__ = ["Kind", "LiveStore", "MemoryLiveStore"]
