"""The live store: what is true only right now. In RAM; nothing of it reaches disk.

Login throttling counters, node reports and (later) connection leases live here.
A Redis implementation can stand behind the same interface when replicas scale out.
"""

from burrow.control.live.memory import MemoryLiveStore

__all__ = ["MemoryLiveStore"]
