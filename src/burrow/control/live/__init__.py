"""The live store: what is true only right now. In RAM; nothing of it reaches disk.

Connection leases, login throttling counters and node reports live here. ``LiveStore`` is
the typed, async seam (``store.py``); ``MemoryLiveStore`` the in-process default;
``RedisLiveStore`` (``BURROW_REDIS_URL``) the one several replicas share.
"""

from burrow.control.live.memory import MemoryLiveStore
from burrow.control.live.redis import RedisLiveStore
from burrow.control.live.store import Kind, LiveStore

__all__ = ["Kind", "LiveStore", "MemoryLiveStore", "RedisLiveStore"]
