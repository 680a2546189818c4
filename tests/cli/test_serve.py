"""``burrow serve``: what its start-up output tells the operator."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import STRICT_POLICY, TEST_SECRET
from tests.support.server import free_port


def start_up_output(sqlite_template: Path, tmp_path: Path, **env: str) -> str:
    """What ``burrow serve`` prints until it serves, then stops it."""
    database = tmp_path / "burrow.db"
    shutil.copyfile(sqlite_template, database)
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BURROW_") or key == "BURROW_TEST_DB"
    }
    environ.update(
        BURROW_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        BURROW_POLICY_PATH=str(STRICT_POLICY),
        BURROW_SECRET_KEY=TEST_SECRET,
        BURROW_SCHEDULER_ENABLED="false",
        BURROW_PORT=str(free_port()),
        **env,
    )
    burrow = Path(sys.executable).with_name("burrow")
    lines: list[str] = []
    deadline = time.monotonic() + 30
    with subprocess.Popen(
        [str(burrow), "serve"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line.rstrip("\n"))
                if "Application startup complete" in line:
                    break
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    return "\n".join(lines)


def test_start_up_says_in_one_line_where_configs_point(
    sqlite_template: Path, tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("one backend is enough for the start-up output")
    output = start_up_output(sqlite_template, tmp_path)
    notices = [line for line in output.splitlines() if "point at 127.0.0.1" in line]
    assert len(notices) == 1, output
    assert "BURROW_PUBLIC_HOST" in notices[0]

    told = start_up_output(sqlite_template, tmp_path, BURROW_PUBLIC_HOST="vpn.example.net")
    assert "burrow serving" in told
    assert "point at" not in told


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BURROW_PUBLIC_HOST", "https://vpn.example.net", "only a DNS name or an IP address"),
        ("BURROW_PUBLIC_HOST", "vpn.example.net:51820", "no scheme, port or path"),
        ("BURROW_TRUSTED_PROXIES", "caddy", "'caddy' is not an IP address or network"),
    ],
)
def test_a_bad_public_host_or_proxy_list_is_one_line(
    database_url: str, name: str, value: str, message: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("one backend is enough for the command line")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    burrow = Path(sys.executable).with_name("burrow")
    done = subprocess.run(
        [str(burrow), "serve"],
        env={**environ, name: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {name}: ")
    assert message in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_support_desk_listener_that_cannot_start_is_one_line(
    sqlite_template: Path, tmp_path: Path, database_url: str
) -> None:
    """BURROW_INBOUND_SMTP on a taken port (or malformed) stops ``serve`` with one line before
    it says it serves. (The listener itself: tests/control/support/test_inbound.py.)"""
    if not database_url.startswith("sqlite"):
        pytest.skip("one backend is enough for the command line")
    database = tmp_path / "taken.db"
    shutil.copyfile(sqlite_template, database)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    environ.update(
        BURROW_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        BURROW_POLICY_PATH=str(STRICT_POLICY),
        BURROW_SECRET_KEY=TEST_SECRET,
        BURROW_PORT=str(free_port()),
    )
    burrow = Path(sys.executable).with_name("burrow")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        for value, message in [
            (f"127.0.0.1:{taken}", "cannot listen there"),
            ("everywhere", "BURROW_INBOUND_SMTP"),
        ]:
            done = subprocess.run(
                [str(burrow), "serve"],
                env={**environ, "BURROW_INBOUND_SMTP": value},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 3, done.stderr
            assert len(lines) == 1, done.stderr
            assert message in lines[0]
            assert "Traceback" not in done.stdout + done.stderr
            assert "serving on" not in done.stdout
