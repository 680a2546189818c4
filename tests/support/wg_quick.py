"""wg-quick's own reading of a config file, for tests of what customers download."""

from __future__ import annotations

import subprocess
from pathlib import Path


def wg_quick_strip(directory: Path, filename: str, text: str) -> subprocess.CompletedProcess[str]:
    """Save ``text`` as ``directory/filename`` (owner-only, as wg-quick wants) and run
    ``wg-quick strip`` on it, which refuses a file name it cannot take as an interface name."""
    path = directory / filename
    path.write_text(text)
    path.chmod(0o600)
    return subprocess.run(
        ["wg-quick", "strip", str(path)], capture_output=True, text=True, check=False
    )
