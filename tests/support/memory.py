"""Where tests keep files that only need to live for the run: memory, when there is room."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MEMORY_DIR = Path("/dev/shm")


def memory_backed_dir(needed_bytes: int) -> Path | None:
    """A memory-backed directory with at least ``needed_bytes`` free, or None (then the
    system's temporary directory serves)."""
    try:
        usage = shutil.disk_usage(MEMORY_DIR)
    except OSError:
        return None
    if not os.access(MEMORY_DIR, os.W_OK | os.X_OK) or usage.free < needed_bytes:
        return None
    return MEMORY_DIR
