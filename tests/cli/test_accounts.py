"""``burrow admin create`` and ``burrow account ...`` against a migrated SQLite database."""

from __future__ import annotations

import getpass
import json
import shutil
import sqlite3
from importlib import metadata
from pathlib import Path
from typing import Protocol

import pytest
from typer.testing import CliRunner, Result

from burrow.cli.main import app
from burrow.control.security import hash_token
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

    piped = burrow(
        "admin", "create", "ops@example.com", "--password-stdin", input="another strong one!\n"
    )
    assert piped.exit_code == 0, piped.output

    shown = burrow("account", "show", "ROOT@example.com")
    assert shown.exit_code == 0, shown.output
    assert "administrator" in shown.output
    assert "yes" in shown.output

    again = burrow(
        "admin", "create", "root@example.com", "--password-stdin", input="whatever it takes 1234\n"
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


def test_promote_an_existing_account(burrow: Burrow, cli_env: dict[str, str]) -> None:
    burrow("admin", "create", "first@example.com", "--password-stdin", input="a strong password\n")
    burrow("admin", "demote", "first@example.com", "--yes")
    # Promoting asks first; "no" changes nothing.
    declined = burrow("admin", "create", "first@example.com", "--promote", input="n\n")
    assert declined.exit_code == 1
    assert "administrator" in declined.output
    assert "nothing changed" in declined.output
    assert "administrator  no" in " ".join(
        burrow("account", "show", "first@example.com").output.split("  ")
    )
    promoted = burrow("admin", "create", "first@example.com", "--promote", input="y\n")
    assert promoted.exit_code == 0, promoted.output
    missing = burrow("admin", "create", "ghost@example.com", "--promote", "--yes")
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


def _trail(cli_env: dict[str, str]) -> list[tuple[int | None, str, str, str, dict[str, object]]]:
    database = cli_env["BURROW_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT admin_id, action, target_id, reason, detail FROM admin_actions ORDER BY id"
        ).fetchall()
    return [
        (a, action, target, reason, json.loads(detail))
        for a, action, target, reason, detail in rows
    ]


def _id_of(cli_env: dict[str, str], email: str) -> str:
    database = cli_env["BURROW_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as db:
        (found,) = db.execute("SELECT id FROM accounts WHERE email = ?", (email,)).fetchone()
    return str(found)


def test_every_cli_admin_action_leaves_a_row_naming_the_operator(
    burrow: Burrow, cli_env: dict[str, str]
) -> None:
    operator = {"via": "cli", "operator": getpass.getuser()}
    created = burrow(
        "admin", "create", "boss@example.com", "--password-stdin", input="a strong password\n"
    )
    assert created.exit_code == 0, created.output
    burrow("admin", "create", "eve@example.com", "--password-stdin", input="a strong password\n")
    promoted = burrow("admin", "create", "eve@example.com", "--promote", "--yes")
    assert promoted.exit_code == 0, promoted.output
    boss, eve = _id_of(cli_env, "boss@example.com"), _id_of(cli_env, "eve@example.com")

    assert burrow("account", "suspend", eve, "--reason", "chargeback").exit_code == 0
    assert burrow("account", "unsuspend", eve, "--reason", "paid").exit_code == 0
    clause = "Prohibited activities: spam or unsolicited bulk messaging"
    ended = burrow("account", "terminate", eve, "--reason", "bulk mail", "--clause", clause, "-y")
    assert ended.exit_code == 0, ended.output
    shown = burrow("account", "show", eve).output
    assert f"Terminated for breaking the terms ({clause}): bulk mail" in " ".join(shown.split())
    plain = burrow("account", "terminate", boss, "--reason", "closing the company", "--yes")
    assert plain.exit_code == 0, plain.output

    trail = _trail(cli_env)
    assert [(action, target) for _, action, target, _, _ in trail] == [
        ("account.create_admin", boss),
        ("account.create_admin", eve),
        ("account.promote_admin", eve),
        ("account.suspend", eve),
        ("account.unsuspend", eve),
        ("account.terminate", eve),
        ("account.terminate", boss),
    ]
    assert all(admin_id is None for admin_id, *_ in trail)
    assert all({**detail, **operator} == detail for *_, detail in trail)
    assert trail[3][3] == "chargeback"
    assert trail[5][4] == {
        **operator,
        "clause": clause,
        "terms_version": trail[5][4]["terms_version"],
    }
    assert trail[6][4] == operator  # no clause named: a termination not for a violation


def test_terminate_refuses_a_clause_the_terms_do_not_have(
    burrow: Burrow, cli_env: dict[str, str]
) -> None:
    burrow("admin", "create", "zed@example.com", "--password-stdin", input="a strong password\n")
    zed = _id_of(cli_env, "zed@example.com")
    refused = burrow("account", "terminate", zed, "--reason", "x", "--clause", "Rule 99", "-y")
    assert refused.exit_code == 1
    assert "is not a clause of the terms" in refused.output
    assert "Traceback" not in refused.output
    assert "active" in burrow("account", "show", zed).output
    assert [action for _, action, *_ in _trail(cli_env)] == ["account.create_admin"]


def test_version(burrow: Burrow) -> None:
    shown = burrow("--version")
    assert shown.exit_code == 0, shown.output
    assert shown.output.strip() == f"burrow {metadata.version('burrow')}"


def _row(cli_env: dict[str, str], query: str, *params: object) -> tuple[object, ...]:
    database = cli_env["BURROW_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as db:
        found: tuple[object, ...] = db.execute(query, params).fetchone()
    return found


def test_a_locked_out_admin_is_recovered_from_the_command_line(
    burrow: Burrow, cli_env: dict[str, str]
) -> None:
    operator = {"via": "cli", "operator": getpass.getuser()}
    burrow("admin", "create", "lost@example.com", "--password-stdin", input="a strong password\n")
    lost = _id_of(cli_env, "lost@example.com")
    database = cli_env["BURROW_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as db:  # two-factor on, a session and two recovery codes
        db.execute("UPDATE accounts SET totp_enabled = 1, totp_secret = 'JBSWY3DPEHPK3PXP'")
        db.execute(
            "INSERT INTO account_sessions (account_id, token_hash, expires_at, "
            "needs_second_factor, created_at) VALUES (?, 'x', '2999-01-01', 0, '2026-01-01')",
            (lost,),
        )
        db.execute(
            "INSERT INTO recovery_codes (account_id, code_hash, created_at) "
            "VALUES (?, 'h1', '2026-01-01'), (?, 'h2', '2026-01-01')",
            (lost, lost),
        )

    reset = burrow("admin", "reset-2fa", "lost@example.com", "--reason", "lost phone")
    assert reset.exit_code == 0, reset.output
    assert "two-factor sign-in is off" in reset.output
    assert _row(cli_env, "SELECT totp_enabled, totp_secret FROM accounts WHERE id = ?", lost) == (
        0,
        None,
    )
    assert _row(cli_env, "SELECT count(*) FROM account_sessions") == (0,)
    assert _row(cli_env, "SELECT count(*) FROM recovery_codes") == (0,)
    again = burrow("admin", "reset-2fa", "lost@example.com")
    assert again.exit_code == 1
    assert "no two-factor sign-in to reset" in again.output

    link = burrow("admin", "reset-password", "lost@example.com")
    assert link.exit_code == 0, link.output
    url = link.output.strip().splitlines()[-1]
    assert url.startswith("http")
    assert "/reset-password?token=" in url
    token = url.split("token=", 1)[1]
    stored = _row(
        cli_env,
        "SELECT account_id, expires_at, used_at FROM password_resets WHERE token_hash = ?",
        hash_token(token),
    )
    assert stored[0] == int(lost)
    assert stored[2] is None
    assert token not in json.dumps(_trail(cli_env))  # the link is printed, never recorded

    burrow("admin", "create", "other@example.com", "--password-stdin", input="a strong password\n")
    declined = burrow("admin", "demote", "other@example.com", input="n\n")
    assert declined.exit_code == 1
    demoted = burrow("admin", "demote", "other@example.com", "--yes", "--reason", "left the team")
    assert demoted.exit_code == 0, demoted.output
    other = _id_of(cli_env, "other@example.com")
    assert _row(cli_env, "SELECT is_admin FROM accounts WHERE id = ?", other) == (0,)
    twice = burrow("admin", "demote", "other@example.com", "--yes")
    assert twice.exit_code == 1
    assert "not an administrator" in twice.output
    nobody = burrow("admin", "reset-password", "nobody@example.com")
    assert nobody.exit_code == 1
    assert "There is no account" in nobody.output
    assert "Traceback" not in reset.output + link.output + demoted.output + nobody.output

    trail = _trail(cli_env)
    assert [(action, target, reason) for _, action, target, reason, _ in trail][-4:] == [
        ("account.reset_2fa", lost, "lost phone"),
        ("account.reset_password", lost, ""),
        ("account.create_admin", other, ""),
        ("account.demote", other, "left the team"),
    ]
    assert all(detail == operator for *_, detail in trail[-4:])
