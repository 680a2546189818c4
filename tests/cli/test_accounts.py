"""``burrow admin create`` and ``burrow account ...`` against a migrated SQLite database."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

import pytest
from typer.testing import CliRunner, Result

from burrow.cli.main import app
from tests.conftest import STRICT_POLICY, TEST_SECRET


@pytest.fixture
def cli_env(sqlite_template: Path, tmp_path: Path) -> dict[str, str]:
    database = tmp_path / "burrow.db"
    shutil.copyfile(sqlite_template, database)
    return {
        "BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "BURROW_POLICY_PATH": str(STRICT_POLICY),
        "BURROW_SECRET_KEY": TEST_SECRET,
        "BURROW_ENVIRONMENT": "test",
        "BURROW_EMAIL_ENABLED": "false",
        "COLUMNS": "200",
    }


class Burrow(Protocol):
    def __call__(self, *args: str, input: str | None = None) -> Result: ...


@pytest.fixture
def burrow(cli_env: dict[str, str]) -> Burrow:
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), env=cli_env, input=input)

    return invoke


def test_admin_create_with_prompt_and_stdin(burrow: Burrow) -> None:
    created = burrow("admin", "create", "Root@Example.com", input="a strong password\n" * 2)
    assert created.exit_code == 0, created.output
    assert "root@example.com" in created.output
    assert "a strong password" not in created.output

    piped = burrow("admin", "create", "ops@example.com", "--password-stdin", input="another one!\n")
    assert piped.exit_code == 0, piped.output

    shown = burrow("account", "show", "ROOT@example.com")
    assert shown.exit_code == 0, shown.output
    assert "administrator" in shown.output
    assert "yes" in shown.output

    again = burrow(
        "admin", "create", "root@example.com", "--password-stdin", input="whatever1234\n"
    )
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert "Traceback" not in again.output


def test_admin_create_refuses_weak_password_and_bad_email(burrow: Burrow) -> None:
    weak = burrow("admin", "create", "x@example.com", "--password-stdin", input="short\n")
    assert weak.exit_code == 1
    assert "at least 10" in weak.output
    bad = burrow("admin", "create", "nope", "--password-stdin", input="a strong password\n")
    assert bad.exit_code == 1
    assert "email" in bad.output
    assert "Traceback" not in weak.output + bad.output


def test_promote_an_existing_account(burrow: Burrow) -> None:
    burrow("admin", "create", "first@example.com", "--password-stdin", input="a strong password\n")
    promoted = burrow("admin", "create", "first@example.com", "--promote")
    assert promoted.exit_code == 0, promoted.output
    missing = burrow("admin", "create", "ghost@example.com", "--promote")
    assert missing.exit_code == 1
    assert "no account" in missing.output


def test_list_show_suspend_unsuspend_terminate(burrow: Burrow) -> None:
    for email in ("alpha@example.com", "beta@example.com"):
        result = burrow("admin", "create", email, "--password-stdin", input="a strong password\n")
        assert result.exit_code == 0, result.output

    listed = burrow("account", "list")
    assert listed.exit_code == 0, listed.output
    assert "alpha@example.com" in listed.output
    assert "beta@example.com" in listed.output
    assert "2 account(s)" in listed.output

    only_beta = burrow("account", "list", "--query", "beta")
    assert "alpha@example.com" not in only_beta.output
    assert "beta@example.com" in only_beta.output

    suspended = burrow("account", "suspend", "beta@example.com", "--reason", "chargeback")
    assert suspended.exit_code == 0, suspended.output
    assert "suspended" in suspended.output
    by_status = burrow("account", "list", "--status", "suspended")
    assert "beta@example.com" in by_status.output
    assert "alpha@example.com" not in by_status.output
    shown = burrow("account", "show", "beta@example.com")
    assert "chargeback" in shown.output

    back = burrow("account", "unsuspend", "beta@example.com")
    assert back.exit_code == 0, back.output
    twice = burrow("account", "unsuspend", "beta@example.com")
    assert twice.exit_code == 1
    assert "not suspended" in twice.output

    refused = burrow("account", "terminate", "beta@example.com", "--reason", "abuse", input="n\n")
    assert refused.exit_code != 0
    assert "active" in burrow("account", "show", "beta@example.com").output
    ended = burrow("account", "terminate", "beta@example.com", "--reason", "abuse", "--yes")
    assert ended.exit_code == 0, ended.output
    assert "terminated" in burrow("account", "show", "beta@example.com").output


def test_errors_are_one_line(burrow: Burrow) -> None:
    missing = burrow("account", "show", "424242")
    assert missing.exit_code == 1
    assert "no account 424242" in missing.output
    assert "Traceback" not in missing.output
    no_reason = burrow("account", "suspend", "1")
    assert no_reason.exit_code == 2  # usage: --reason is required
    bad_status = burrow("account", "list", "--status", "sleeping")
    assert bad_status.exit_code == 2


def test_missing_schema_is_a_setup_error(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"}
    result = CliRunner().invoke(app, ["account", "list"], env=env)
    assert result.exit_code == 3
    assert "burrow db upgrade" in result.output
