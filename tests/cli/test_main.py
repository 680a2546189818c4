"""A careless operator: the real ``burrow`` program, run as the operator runs it, answers a
database or policy it cannot use with one line that says what to do and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from burrow.cli.main import app
from burrow.control.db import create_engine
from tests.conftest import STRICT_POLICY, TEST_SECRET
from tests.support.postgres import PostgresServer
from tests.support.server import free_port

BURROW = str(Path(sys.executable).with_name("burrow"))

# Every command that reads the database or the policy, with harmless arguments.
COMMANDS: list[tuple[str, ...]] = [
    ("serve",),
    ("db", "upgrade"),
    ("account", "list"),
    ("account", "show", "nobody@example.com"),
    ("account", "suspend", "nobody@example.com", "--reason", "test"),
    ("admin", "create", "ops@example.com", "--password-stdin"),
    ("node", "list"),
    (
        "node",
        "create",
        "ams-9",
        "--country",
        "NL",
        "--city",
        "Paris",
        "--endpoint",
        "vpn.test:51820",
    ),
    ("node", "token", "ams-9"),
    ("audit",),
]


def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    env.update(
        {
            "BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'burrow.db'}",
            "BURROW_POLICY_PATH": str(STRICT_POLICY),
            "BURROW_SECRET_KEY": TEST_SECRET,
            "BURROW_ENVIRONMENT": "test",
            "BURROW_EMAIL_ENABLED": "false",
            "BURROW_PORT": str(free_port()),
            "COLUMNS": "300",
        }
    )
    env.update(overrides)
    return env


def _burrow(
    args: tuple[str, ...], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BURROW, *args],
        env=env,
        cwd=cwd,
        input="a strong password for ops\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _unmigrated(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "empty.db").touch()
    return {"BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"}


def _garbage_url(_tmp_path: Path) -> dict[str, str]:
    return {"BURROW_DATABASE_URL": "this is not a url"}


def _unreachable(_tmp_path: Path) -> dict[str, str]:
    # A loopback port nobody listens on: connection refused at once.
    return {"BURROW_DATABASE_URL": f"postgresql+asyncpg://burrow:pw@127.0.0.1:{free_port()}/b"}


def _unwritable_sqlite(tmp_path: Path) -> dict[str, str]:
    # Tests run as root, which file modes do not stop: a path under a regular file cannot be
    # made by anyone.
    (tmp_path / "a-file").write_text("not a directory")
    return {"BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'a-file' / 'burrow.db'}"}


def _deep_policy(tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "deep.toml"
    policy.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    return {"BURROW_POLICY_PATH": str(policy)}


CASES: dict[str, tuple[Callable[[Path], dict[str, str]], str]] = {
    "unmigrated": (_unmigrated, "burrow db upgrade"),
    "garbage-url": (_garbage_url, "BURROW_DATABASE_URL"),
    "unreachable": (_unreachable, "start it or fix BURROW_DATABASE_URL"),
    "unwritable-sqlite": (_unwritable_sqlite, "writable place in BURROW_DATABASE_URL"),
    "deep-policy": (_deep_policy, "nested too deeply"),
}


@pytest.fixture
def migrated(sqlite_template: Path, tmp_path: Path) -> Path:
    shutil.copyfile(sqlite_template, tmp_path / "burrow.db")
    return tmp_path


def _skip_what_does_not_apply(case: str, command: tuple[str, ...]) -> None:
    if command[:2] == ("db", "upgrade") and case in ("unmigrated", "deep-policy"):
        pytest.skip("migrating is what `db upgrade` is for, and it reads no policy")


def _assert_one_line(code: int, stdout: str, stderr: str, advice: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code not in (0, None), (stdout, stderr)
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: ")
    assert advice in lines[0]
    assert "Traceback" not in stdout + stderr
    assert "serving on" not in stdout


@pytest.mark.parametrize("case", list(CASES))
def test_serve_refuses_in_one_line_before_it_says_serving(migrated: Path, case: str) -> None:
    """The real program, as a subprocess, once per case."""
    make, advice = CASES[case]
    result = _burrow(("serve",), _env(migrated, **make(migrated)), migrated)
    _assert_one_line(result.returncode, result.stdout, result.stderr, advice)


@pytest.mark.parametrize(
    ("case", "command"),
    [("unreachable", ("account", "list")), ("garbage-url", ("node", "list"))],
)
def test_other_commands_as_subprocesses(
    migrated: Path, case: str, command: tuple[str, ...]
) -> None:
    make, advice = CASES[case]
    result = _burrow(command, _env(migrated, **make(migrated)), migrated)
    _assert_one_line(result.returncode, result.stdout, result.stderr, advice)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", COMMANDS[1:], ids=lambda c: "-".join(c[:2]))
def test_every_command_in_one_line(
    migrated: Path, case: str, command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command and case, in this process (a subprocess each would take minutes)."""
    _skip_what_does_not_apply(case, command)
    make, advice = CASES[case]
    env = _env(migrated, **make(migrated))
    monkeypatch.chdir(migrated)
    result = CliRunner().invoke(app, list(command), env=env, input="a strong password!\n")
    _assert_one_line(result.exit_code, result.stdout, result.stderr, advice)


def _serve_until_up(env: dict[str, str], cwd: Path) -> tuple[str, str]:
    """Start `burrow serve`, wait until it says it serves, stop it; its stdout and stderr."""
    process = subprocess.Popen(
        [BURROW, "serve"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        up = False
        while time.monotonic() < deadline and process.poll() is None:
            if _listening(int(env["BURROW_PORT"])):
                up = True
                break
            time.sleep(0.1)
        assert up, "burrow serve did not start"
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    return stdout, stderr


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_placeholder_secret_is_warned_about_on_every_start(migrated: Path) -> None:
    env = _env(migrated, BURROW_ENVIRONMENT="development")
    del env["BURROW_SECRET_KEY"]
    for _ in range(2):
        stdout, stderr = _serve_until_up(env, migrated)
        assert "serving on" in stdout
        assert "warning: BURROW_SECRET_KEY is the development placeholder" in stderr


def test_a_real_secret_starts_without_the_warning(migrated: Path) -> None:
    stdout, stderr = _serve_until_up(_env(migrated), migrated)
    assert "serving on" in stdout
    assert "placeholder" not in stderr


async def _stamp(database_url: str, revision: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )
    finally:
        await engine.dispose()


def test_serve_on_a_schema_from_an_older_burrow(database_url: str, tmp_path: Path) -> None:
    """Both databases: a schema some migrations behind is named, with the command to run."""
    asyncio.run(_stamp(database_url, "0001"))
    result = _burrow(("serve",), _env(tmp_path, BURROW_DATABASE_URL=database_url), tmp_path)
    _assert_one_line(result.returncode, result.stdout, result.stderr, "run `burrow db upgrade`")
    assert "revision 0001" in result.stderr


@pytest.mark.postgres
def test_serve_on_an_empty_or_missing_postgres_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if os.environ.get("BURROW_TEST_DB", "both") not in ("both", "postgres"):
        pytest.skip("PostgreSQL not selected (BURROW_TEST_DB)")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"empty_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name}")
    try:
        empty = _burrow(("serve",), _env(tmp_path, BURROW_DATABASE_URL=server.url(name)), tmp_path)
        _assert_one_line(empty.returncode, empty.stdout, empty.stderr, "burrow db upgrade")
    finally:
        server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    missing = _burrow(
        ("account", "list"), _env(tmp_path, BURROW_DATABASE_URL=server.url(name)), tmp_path
    )
    _assert_one_line(missing.returncode, missing.stdout, missing.stderr, "createdb")
