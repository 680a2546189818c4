"""``burrow node create|token|list`` against a migrated SQLite database."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Protocol

import pytest
from typer.testing import CliRunner, Result

from burrow.cli.main import app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.nodes.service import EnrollmentTokenInvalid
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.wire import EnrollRequest
from tests.conftest import STRICT_POLICY, TEST_SECRET
from tests.support.factories import new_public_key

COMMAND = re.compile(r"burrow node enroll --control (\S+) --token (bwe_\S+)")


@pytest.fixture
def cli_env(sqlite_template: Path, tmp_path: Path) -> dict[str, str]:
    database = tmp_path / "burrow.db"
    shutil.copyfile(sqlite_template, database)
    return {
        "BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "BURROW_POLICY_PATH": str(STRICT_POLICY),
        "BURROW_SECRET_KEY": TEST_SECRET,
        "BURROW_ENVIRONMENT": "test",
        "BURROW_PUBLIC_URL": "https://control.example.net",
        "COLUMNS": "60",  # narrow: the enrollment command must still come out on one line
    }


class Burrow(Protocol):
    def __call__(self, *args: str) -> Result: ...


@pytest.fixture
def burrow(cli_env: dict[str, str]) -> Burrow:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=cli_env)

    return invoke


def enroll_with(cli_env: dict[str, str], token: str) -> str:
    """Enroll through the service, as the node API would; returns the node's name."""
    settings = Settings(
        database_url=cli_env["BURROW_DATABASE_URL"],
        policy_path=Path(cli_env["BURROW_POLICY_PATH"]),
        environment="test",
    )

    async def work() -> str:
        runtime = Runtime.build(settings)
        try:
            async with unit_of_work(runtime.sessionmaker) as session:
                request = EnrollRequest(token=token, public_key=new_public_key())
                return (await node_service.enroll(session, runtime, request)).node_name
        finally:
            await runtime.close()

    return asyncio.run(work())


def test_create_prints_a_working_enrollment_command(
    burrow: Burrow, cli_env: dict[str, str]
) -> None:
    result = burrow(
        "node", "create", "ams-1", "--country", "nl", "--city", "Amsterdam",
        "--endpoint", "ams-1.vpn.example.net:51820", "--egress-ipv4", "203.0.113.7",
        "--capacity", "250",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    found = COMMAND.search(result.output)
    assert found is not None, result.output
    assert found.group(1) == "https://control.example.net"
    assert enroll_with(cli_env, found.group(2)) == "ams-1"
    with pytest.raises(EnrollmentTokenInvalid):
        enroll_with(cli_env, found.group(2))  # one time only

    listed = burrow("node", "list")
    assert listed.exit_code == 0, listed.output
    assert "ams-1" in listed.output
    assert "active" in listed.output


def test_token_makes_a_new_enrollment_token(burrow: Burrow, cli_env: dict[str, str]) -> None:
    created = burrow(
        "node", "create", "fra-1", "--country", "DE", "--city", "Frankfurt",
        "--endpoint", "[2001:db8::1]:51820",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    first = COMMAND.search(created.output)
    assert first is not None

    renewed = burrow("node", "token", "FRA-1")

    assert renewed.exit_code == 0, renewed.output
    second = COMMAND.search(renewed.output)
    assert second is not None
    assert second.group(2) != first.group(2)
    with pytest.raises(EnrollmentTokenInvalid):
        enroll_with(cli_env, first.group(2))
    assert enroll_with(cli_env, second.group(2)) == "fra-1"

    # Both are admin actions from the shell: in the trail, the tokens themselves are not.
    database = cli_env["BURROW_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT admin_id, action, detail FROM admin_actions ORDER BY id"
        ).fetchall()
    assert [action for _, action, _ in rows] == ["node.create", "node.enrollment_token"]
    assert all(admin_id is None for admin_id, _, _ in rows)
    assert all(json.loads(detail)["via"] == "cli" for _, _, detail in rows)
    assert first.group(2) not in str(rows)
    assert second.group(2) not in str(rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--country", "XX", "--city", "A", "--endpoint", "h:1"], "--country"),
        (["--country", "NL", "--city", "A", "--endpoint", "nope"], "--endpoint"),
        (["--country", "NL", "--city", "A", "--endpoint", "2001:db8::1:5"], "brackets"),
        (["--country", "NL", "--city", "A", "--endpoint", "h:1", "--egress-ipv4", "x"], "IPv4"),
        (["--country", "NL", "--city", "A", "--endpoint", "h:1", "--capacity", "0"], "capacity"),
    ],
)
def test_create_refuses_bad_input_in_one_line(
    burrow: Burrow, args: list[str], message: str
) -> None:
    result = burrow("node", "create", "ams-1", *args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_duplicates_and_unknown_nodes_are_clear_errors(burrow: Burrow) -> None:
    args = ["--country", "NL", "--city", "Amsterdam", "--endpoint", "vpn.example.net:51820"]
    assert burrow("node", "create", "ams-1", *args).exit_code == 0
    again = burrow("node", "create", "ams-1", *args)
    assert again.exit_code == 1
    assert "exists already" in again.output
    unknown = burrow("node", "token", "nowhere-1")
    assert unknown.exit_code == 1
    assert "no node" in unknown.output


def test_list_without_nodes(burrow: Burrow) -> None:
    result = burrow("node", "list")
    assert result.exit_code == 0, result.output
    assert "no nodes yet" in result.output


def test_update_sets_several_egress_addresses(burrow: Burrow, cli_env: dict[str, str]) -> None:
    created = burrow(
        "node", "create", "ams-1", "--country", "NL", "--city", "Amsterdam",
        "--endpoint", "127.0.0.1:51820", "--egress-ipv4", "203.0.113.7",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    result = burrow(
        "node", "update", "ams-1", "--egress-ipv4", "203.0.113.7, 203.0.113.8,203.0.113.9"
    )
    assert result.exit_code == 0, result.output
    database = cli_env["BURROW_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT egress_ipv4, egress_ipv4_extra FROM nodes").fetchone()
    assert row == ("203.0.113.7", "203.0.113.8 203.0.113.9")
    bad = burrow("node", "update", "ams-1", "--egress-ipv4", "203.0.113.7,nope")
    assert bad.exit_code != 0
    assert "--egress-ipv4" in bad.output
    assert "not an IPv4 address" in bad.output
    assert "Traceback" not in bad.output


def test_update_changes_endpoint_location_and_capacity(
    burrow: Burrow, cli_env: dict[str, str]
) -> None:
    created = burrow(
        "node", "create", "ams-1", "--country", "NL", "--city", "Amsterdam",
        "--endpoint", "127.0.0.1:51820",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    found = COMMAND.search(created.output)
    assert found is not None
    enroll_with(cli_env, found.group(2))

    result = burrow(
        "node", "update", "ams-1", "--endpoint", "ams-1.vpn.example.net:51821",
        "--country", "de", "--city", "Berlin", "--capacity", "40",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "127.0.0.1 -> ams-1.vpn.example.net" in result.output
    assert "download the configuration for ams-1 again" in result.output
    database = cli_env["BURROW_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as db:
        changed = db.execute(
            "SELECT config_changed_at, capacity, endpoint_host, endpoint_port, city, country "
            "FROM nodes"
        ).fetchone()
        action = db.execute(
            "SELECT detail FROM admin_actions WHERE action = 'node.update'"
        ).fetchone()
    assert changed[0] is not None
    assert changed[1:] == (40, "ams-1.vpn.example.net", 51821, "Berlin", "DE")
    assert json.loads(action[0])["before"]["endpoint_host"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to change"),
        (["--endpoint", "nope"], "--endpoint"),
        (["--country", "XX"], "--country"),
        (["--capacity", "0"], "--capacity"),
        (["--city", "a\tb"], "--city"),
    ],
)
def test_update_refuses_bad_input_in_one_line(
    burrow: Burrow, args: list[str], message: str
) -> None:
    args_create = ["--country", "NL", "--city", "Amsterdam", "--endpoint", "vpn.example.net:1"]
    assert burrow("node", "create", "ams-1", *args_create).exit_code == 0
    result = burrow("node", "update", "ams-1", *args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    unknown = burrow("node", "update", "nowhere-1", "--city", "Paris")
    assert unknown.exit_code == 1
    assert "no node" in unknown.output
