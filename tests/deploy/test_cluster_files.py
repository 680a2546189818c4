"""deploy/cluster/: HAProxy's configuration is valid for Debian's haproxy, and the Redis
configuration keeps nothing on disk when a real redis-server runs with it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from burrow.control.config import Settings
from burrow.control.live.redis import persistence
from tests.conftest import ROOT
from tests.support.redis import running_redis

CLUSTER = ROOT / "deploy" / "cluster"


def test_haproxy_accepts_the_configuration() -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy; `make test` does)")
    out = subprocess.run(
        ["haproxy", "-c", "-f", str(CLUSTER / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # No access log: no client address reaches a disk.
    assert not any(
        line.strip().startswith("log ")
        for line in (CLUSTER / "haproxy.cfg").read_text().splitlines()
    )


async def test_redis_with_the_configuration_keeps_nothing_on_disk() -> None:
    with running_redis(config=CLUSTER / "redis.conf") as server:
        assert await persistence(server.url()) == []


def test_the_replica_settings_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in (CLUSTER / "burrow.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == "redis://10.0.0.10:6379/0"
    assert settings.database_url.startswith("postgresql+asyncpg://")


def test_the_files_are_where_the_readme_says() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("haproxy.cfg", "redis.conf", "burrow.env.example"):
        assert f"deploy/cluster/{name}" in readme
