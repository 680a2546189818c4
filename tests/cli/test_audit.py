"""``burrow audit`` from the command line, on a migrated SQLite database."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from burrow.cli.main import app
from tests.conftest import ROOT, STRICT_POLICY, TEST_SECRET
from tests.support.redis import running_redis

CLIENT = "192.0.2.44"


@pytest.fixture
def database(sqlite_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "burrow.db"
    shutil.copyfile(sqlite_template, path)
    return path


@pytest.fixture
def env(database: Path, tmp_path: Path) -> dict[str, str]:
    log = tmp_path / "logs" / "burrow.log"
    log.parent.mkdir()
    log.write_text("INFO burrow: serving on http://127.0.0.1:8080\n")
    return {
        "BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "BURROW_POLICY_PATH": str(STRICT_POLICY),
        "BURROW_SECRET_KEY": TEST_SECRET,
        "BURROW_ENVIRONMENT": "test",
        "BURROW_EMAIL_ENABLED": "false",
        "BURROW_LOG_FILE": str(log),
        "COLUMNS": "250",
    }


def _audit(env: dict[str, str], tmp_path: Path, *args: str) -> Result:
    node_dir = tmp_path / "node"
    node_dir.mkdir(exist_ok=True)
    return CliRunner().invoke(app, ["audit", "--node-state-dir", str(node_dir), *args], env=env)


def _customer(env: dict[str, str]) -> None:
    created = CliRunner().invoke(
        app,
        ["admin", "create", "ops@example.com", "--password-stdin"],
        env=env,
        input="a strong password\n",
    )
    assert created.exit_code == 0, created.output


def test_a_clean_strict_deployment(env: dict[str, str], tmp_path: Path) -> None:
    _customer(env)
    result = _audit(env, tmp_path)
    assert result.exit_code == 0, result.output
    assert "VIOLATION" not in result.stdout
    assert "result: nothing breaks the policy" in result.stdout
    assert "1 log files, 1 lines" in result.stdout


def test_a_planted_client_ip_in_a_table_and_a_log_fails_the_audit(
    env: dict[str, str], database: Path, tmp_path: Path
) -> None:
    _customer(env)
    with sqlite3.connect(database) as db:
        db.execute("UPDATE accounts SET status_reason = ? WHERE id = 1", (f"seen at {CLIENT}",))
    log = Path(env["BURROW_LOG_FILE"])
    rotated = log.with_name("burrow.log.1")
    rotated.write_text(f"old line\nWARNING burrow: login from {CLIENT}\n")
    result = _audit(env, tmp_path)
    assert result.exit_code == 1, result.output
    violations = [line for line in result.stdout.splitlines() if line.startswith("VIOLATION")]
    assert violations == [
        "VIOLATION  accounts.status_reason row id=1: IPv4 address 192.0.2.*: a client address "
        'stored in the database, which privacy.mode = "strict" does not allow',
        f"VIOLATION  {rotated}:2: IPv4 address 192.0.2.*: a client address in a log, which "
        'privacy.mode = "strict" removes from logs',
    ]
    assert "result: 2 violations of the policy" in result.stdout
    assert CLIENT not in result.output


def test_extra_logs_and_own_addresses(env: dict[str, str], tmp_path: Path) -> None:
    extra = tmp_path / "proxy"
    extra.mkdir()
    (extra / "access.log").write_text("GET / from 10.1.2.3 (our load balancer)\n")
    refused = _audit(env, tmp_path, "--log", str(extra))
    assert refused.exit_code == 1
    allowed = _audit(env, tmp_path, "--log", str(extra), "--allow", "10.1.0.0/16")
    assert allowed.exit_code == 0, allowed.output
    bad = _audit(env, tmp_path, "--allow", "not-a-network")
    assert bad.exit_code == 2
    assert "--allow not-a-network" in bad.output


def test_metered_policy_reports_the_missing_records_table(
    env: dict[str, str], database: Path, tmp_path: Path
) -> None:
    db = sqlite3.connect(database)  # a deployment migrated before the table existed
    db.execute("DROP TABLE connection_records")
    db.commit()
    db.close()
    result = _audit(env, tmp_path, "--policy", str(ROOT / "examples" / "policies" / "metered.toml"))
    assert result.exit_code == 0, result.output
    assert "connection_records: the connection-records table does not exist yet" in result.stdout


def test_an_empty_database_is_a_setup_error(env: dict[str, str], tmp_path: Path) -> None:
    empty = {**env, "BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"}
    result = _audit(empty, tmp_path)
    assert result.exit_code == 3
    assert "no tables" in result.output


def test_a_log_path_that_does_not_exist_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "logs" / "burow.log"  # a typo: nothing to scan is not "clean"
    result = _audit(env, tmp_path, "--log", str(missing))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert str(missing) in lines[0]
    assert "no such file" in lines[0]
    assert "nothing breaks the policy" not in result.output


def test_a_strict_policy_needs_redis_to_keep_nothing_on_disk(
    env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    _customer(env)
    clean = _audit({**env, "BURROW_REDIS_URL": redis_url}, tmp_path)
    assert clean.exit_code == 0, clean.output
    with running_redis("--save", "60 1", "--appendonly", "yes") as careless:
        result = _audit({**env, "BURROW_REDIS_URL": careless.url()}, tmp_path)
    assert result.exit_code == 1, result.output
    assert 'VIOLATION  redis: RDB snapshots are on (save "60 1")' in result.stdout
    assert "VIOLATION  redis: the append-only file is on (appendonly yes)" in result.stdout
