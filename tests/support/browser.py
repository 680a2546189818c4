"""Debian's chromium driven by Playwright's async API, for the browser journeys.

Never a downloaded browser: ``executable_path`` is the system's chromium (``make test`` installs
it). ``launch(..., netns=...)`` starts it inside a network namespace of the e2e lab, so a page
can be used from where the lab's control plane is reachable. Every step of a journey can be
photographed with a ``Shooter`` into ``test-output/screenshots/<test>/<NN>-<step>.png``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("BURROW_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = ROOT / "test-output" / "screenshots"

# Headless, and quiet: without the background-networking flags Chromium tries to reach Google
# at start (tests only ever talk to loopback or to namespaces they made). --no-sandbox because
# tests run as root; /dev/shm may be small in containers.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# A step that waits longer than this is a bug, not a slow machine: fail fast, with a picture.
STEP_TIMEOUT_MS = 10_000
# A navigation waits for the app (in a thread of the test's own process, sharing its two cores
# with chromium) to render a page and for every asset to load: CI saw a first /login take over
# ten seconds on a loaded machine. Still a bound, never a wait without end.
NAVIGATION_TIMEOUT_MS = 30_000


def why_no_browser() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "needs playwright (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"needs chromium at {CHROMIUM} (apt-get install chromium)"
    return None


async def launch(
    playwright: Playwright,
    *,
    netns: str | None = None,
    tmp: Path,
    home: Path | None = None,
) -> Browser:
    """Chromium with a fresh temporary profile (Playwright makes one per launch).

    With ``netns``, chromium runs inside that namespace: Playwright talks to it over a pipe, so
    only the browser's own connections move there. With ``home``, chromium runs with that
    ``HOME``, whose NSS database (``.pki/nssdb``) holds the certificate authorities it trusts
    besides the system's (``trust_ca_in_nssdb``).
    """
    executable = CHROMIUM
    if netns is not None:
        executable = tmp / "chromium-in-netns"
        executable.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {CHROMIUM} "$@"\n')
        executable.chmod(0o755)
    env = None if home is None else {**os.environ, "HOME": str(home)}
    return await playwright.chromium.launch(
        executable_path=str(executable), args=CHROMIUM_ARGS, headless=True, env=env
    )


def trust_ca_in_nssdb(home: Path, ca_certificate: Path, nickname: str) -> None:
    """Make ``home/.pki/nssdb`` trust ``ca_certificate`` for TLS servers, as a person who
    imported it in chromium's settings would (needs ``certutil``, Debian's libnss3-tools)."""
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True, exist_ok=True)
    where = f"sql:{database}"
    subprocess.run(["certutil", "-d", where, "-N", "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-d", where, "-A", "-t", "C,,", "-n", nickname, "-i", str(ca_certificate)],
        check=True,
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


class Shooter:
    """Numbers a test's screenshots in the order they are taken: ``await shot(page, "step")``."""

    def __init__(self, test_name: str) -> None:
        self.directory = SCREENSHOTS / _slug(test_name)
        self.count = len(list(self.directory.glob("*.png"))) if self.directory.exists() else 0

    @classmethod
    def fresh(cls, test_name: str) -> Shooter:
        """A shooter whose folder holds this run's pictures only."""
        shutil.rmtree(SCREENSHOTS / _slug(test_name), ignore_errors=True)
        return cls(test_name)

    async def __call__(self, page: Page, name: str) -> Path:
        self.count += 1
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.count:02d}-{_slug(name)}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path
