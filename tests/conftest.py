"""Fixtures shared by the whole suite.

Every database test runs against SQLite and against PostgreSQL (a server from Debian's
packages started here). The schema is built by the Alembic migrations once per session into a
template, then copied per test. ``BURROW_TEST_DB=sqlite`` (or ``postgres``) narrows the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime
from tests.support import postgres
from tests.support import redis as redis_support
from tests.support.app import running_runtime
from tests.support.memory import memory_backed_dir
from tests.support.smtp import SmtpServer, running_smtp

ROOT = Path(__file__).resolve().parents[1]
STRICT_POLICY = ROOT / "examples" / "policies" / "strict-no-logs.toml"
METERED_POLICY = ROOT / "examples" / "policies" / "metered.toml"
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


# Test files (a copy of the SQLite template per test, PostgreSQL's and Redis's data, browser
# profiles) only live for the run: in memory, where there is room, they cost a third less time
# than on disk (SQLite syncs every commit). Only failed tests' files are kept afterwards
# (tmp_path_retention_policy), so three kept runs stay small.
TEST_FILES_NEED = 4 * 1024**3


def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None:
        parent = memory_backed_dir(TEST_FILES_NEED)
        if parent is not None:
            tempfile.tempdir = str(parent)


def migrate(database_url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "heads")


def _backends() -> list[object]:
    wanted = os.environ.get("BURROW_TEST_DB", "both")
    params: list[object] = []
    if wanted in ("both", "sqlite"):
        params.append("sqlite")
    if wanted in ("both", "postgres"):
        params.append(pytest.param("postgres", marks=pytest.mark.postgres))
    return params


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "burrow.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    reason = postgres.why_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {reason}")
        pytest.skip(reason)
    with postgres.running_postgres() as server:
        server.psql("CREATE DATABASE burrow_template")
        migrate(server.url("burrow_template"))
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[redis_support.RedisServer]:
    """One redis-server (persistence off) for the session; ``redis_url`` empties it per test."""
    reason = redis_support.why_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI: {reason}")
        pytest.skip(reason)
    with redis_support.running_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: redis_support.RedisServer) -> str:
    redis_server.reset()
    return redis_server.url()


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "burrow.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    server: postgres.PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:16]}"
    server.psql(f"CREATE DATABASE {name} TEMPLATE burrow_template")
    try:
        yield server.url(name)
    finally:
        server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with running_smtp() as server:
        yield server


@pytest.fixture
def settings(database_url: str, smtp: SmtpServer) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        policy_path=STRICT_POLICY,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        smtp_port=smtp.port,
        scheduler_enabled=False,
        public_url="http://testserver",
        long_poll_timeout_seconds=5.0,
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with running_runtime(settings) as rt:
        yield rt


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime=runtime)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def session(runtime: Runtime) -> AsyncIterator[AsyncSession]:
    """One unit of work for service tests; committed at the end of the test.

    It takes SQLite's write lock only from its first write to each commit, so a test can
    read with it between the units of work it runs (tasks, the app) without waiting on them.
    """
    async with unit_of_work(runtime.sessionmaker, writes=False) as s:
        yield s
