"""The two privacy modes after real traffic through real tunnels, checked by ``burrow audit``.

Each example policy runs in a lab of its own (``conftest.strict_world`` / ``metered_world``)
whose control plane logs to a file (``BURROW_LOG_FILE``) and whose devices count as
disconnected ``SHORT_IDLE_SECONDS`` after their last handshake. Several customers download and
upload through their tunnels, disconnect, and then ``burrow audit`` runs as an operator would
run it: a separate process with the control plane's database URL, policy and log file, and the
nodes' state directories.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.node.netns import unique_name

from .lab import BURROW, SHORT_IDLE_SECONDS, Host, NodeRun, Tunnel, World, fetch, upload, wait_for

UPLOAD_BYTES = 1024 * 1024 + 7
PLANTED_IP = "192.0.2.44"


@dataclass
class Surfer:
    """A customer who connected, downloaded the file and uploaded some bytes."""

    token: str
    device: dict[str, Any]
    node: NodeRun
    host: Host
    tunnel: Tunnel


@pytest.fixture
def tunnels() -> Iterator[list[Tunnel]]:
    made: list[Tunnel] = []
    yield made
    for tunnel in made:
        tunnel.down()


def database(world: World) -> Path:
    return world.tmp / "burrow.db"


def log_file(world: World) -> Path:
    return Path(world.control_extra["BURROW_LOG_FILE"])


def sql(world: World, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """A statement on the lab's SQLite database, as an operator (or an intruder) would run it."""
    with closing(sqlite3.connect(database(world), timeout=10)) as db, db:
        return db.execute(query, params).fetchall()


def row_counts(world: World) -> dict[str, int]:
    tables = [
        name
        for (name,) in sql(world, "SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_")
    ]
    # Names read from sqlite_master, not from input.
    return {table: sql(world, f'SELECT count(*) FROM "{table}"')[0][0] for table in tables}  # noqa: S608


def audit(world: World) -> subprocess.CompletedProcess[str]:
    """``burrow audit`` against the running lab (database, policy, log file, node state)."""
    argv = [BURROW, "audit"]
    for node in world.nodes:
        argv += ["--node-state-dir", str(node.state_dir)]
    return subprocess.run(
        argv,
        env={**os.environ, **world.control_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def findings(result: subprocess.CompletedProcess[str], label: str) -> list[str]:
    """The audit's lines of one kind ("VIOLATION", "allowed", "note")."""
    return [line for line in result.stdout.splitlines() if line.startswith(f"{label} ")]


def scanned_log_lines(result: subprocess.CompletedProcess[str]) -> int:
    found = re.search(r"(\d+) log files, (\d+) lines", result.stdout)
    assert found is not None, result.stdout
    assert int(found.group(1)) >= 1, "the audit scanned no log file"
    return int(found.group(2))


def surf(world: World, tunnels: list[Tunnel], host: Host, node: NodeRun) -> Surfer:
    """A new customer connects through ``node``, downloads the file and uploads some bytes."""
    token = world.new_customer()
    device = world.add_device(token, node.node_id)
    wait_for(lambda: device["public_key"] in node.peers(), 5, "the node to serve the device")
    config = world.config(token, device["id"], node.node_id)
    tunnel = Tunnel(world, host, unique_name("bwc"), "")
    tunnels.append(tunnel)
    tunnel.up(config, device["private_key"])
    inet = world.inet.ipv4
    wait_for(lambda: fetch(host, f"http://{inet}/file", 2) == world.web_file, 10, "a download")
    sent = world.tmp / f"upload-{device['id']}"
    sent.write_bytes(os.urandom(UPLOAD_BYTES))
    assert upload(host, f"http://{inet}/upload", sent) is not None
    return Surfer(token, device, node, host, tunnel)


def connections_end(world: World, surfers: list[Surfer]) -> None:
    """Every tunnel stops; waits until the control plane counts each device as disconnected."""
    for surfer in surfers:
        surfer.tunnel.down()
    assert world.api is not None
    api = world.api

    def gone() -> bool:
        return all(
            api.call("GET", "/api/v1/connections", token=s.token).json()["connections"] == []
            for s in surfers
        )

    wait_for(gone, SHORT_IDLE_SECONDS + 10, "the connections to end", interval=0.5)


def records_of(world: World, surfer: Surfer) -> dict[str, Any]:
    assert world.api is not None
    body: dict[str, Any] = world.api.call(
        "GET", "/api/v1/connections/records", token=surfer.token
    ).json()
    return body


# --- strict ------------------------------------------------------------------------------------


def test_strict_mode_keeps_nothing_and_the_audit_names_a_planted_address(
    strict_world: World, tunnels: list[Tunnel]
) -> None:
    world = strict_world
    first, second = world.nodes
    before = row_counts(world)
    surfers = [
        surf(world, tunnels, world.customers[0], first),
        surf(world, tunnels, world.customers[1], second),
        surf(world, tunnels, world.customers[2], first),
    ]
    # What the sign-ups and devices added, before any connection; then the connections.
    with_customers = row_counts(world)
    assert with_customers != before
    connections_end(world, surfers)
    after = row_counts(world)

    assert after == with_customers, "a table gained rows from connections"
    assert after["connection_records"] == 0
    assert after["usage_counters"] == 0
    for surfer in surfers:
        records = records_of(world, surfer)
        assert records["mode"] == "strict"
        assert records["recorded"] is False
        assert records["records"] == []
        assert records["statement"].startswith("Nothing is recorded")

    log = log_file(world)
    assert log.stat().st_size > 0, "the control plane wrote no log"
    clean = audit(world)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert findings(clean, "VIOLATION") == []
    assert "result: nothing breaks the policy" in clean.stdout
    lines = scanned_log_lines(clean)
    assert lines >= 3

    # Plant a client address in the log and in a table; the audit names both places.
    with log.open("a", encoding="utf-8") as out:
        out.write(f"2026-11-22 10:00:00,000 INFO burrow.test: handshake from {PLANTED_IP}:51820\n")
    number = next(
        n
        for n, line in enumerate(log.read_text(encoding="utf-8").splitlines(), start=1)
        if PLANTED_IP in line
    )
    device_id = surfers[0].device["id"]
    sql(world, "UPDATE devices SET name = ? WHERE id = ?", f"laptop {PLANTED_IP}", device_id)

    caught = audit(world)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    violations = findings(caught, "VIOLATION")
    assert any(f"{log}:{number}: " in line for line in violations), violations
    assert any(f"devices.name row id={device_id}: " in line for line in violations), violations
    assert len(violations) == 2, violations
    assert "result: 2 violations of the policy" in caught.stdout


# --- metered -----------------------------------------------------------------------------------


def test_metered_mode_keeps_exactly_the_records_the_policy_allows(
    metered_world: World, tunnels: list[Tunnel]
) -> None:
    world = metered_world
    first, second = world.nodes
    surfers = [
        surf(world, tunnels, world.customers[0], first),
        surf(world, tunnels, world.customers[1], second),
    ]
    connections_end(world, surfers)

    # Each customer sees the record of their connection: bytes both ways, the server's place.
    places = {
        first.node_id: ("ams-1", "NL", "Amsterdam"),
        second.node_id: ("fra-1", "DE", "Frankfurt"),
    }
    for surfer in surfers:
        answer = records_of(world, surfer)
        assert answer["mode"] == "metered"
        assert answer["recorded"] is True
        assert answer["retention_days"] == 30
        records = answer["records"]
        assert records, "no connection record"
        assert all(r["device_id"] == surfer.device["id"] for r in records)
        assert all(
            (r["node_name"], r["node_country"], r["node_city"]) == places[surfer.node.node_id]
            for r in records
        )
        assert all(r["ended_at"] is not None for r in records)
        # Download: the server sent the file; upload: it received what was uploaded.
        assert sum(r["tx_bytes"] for r in records) >= len(world.web_file)
        assert sum(r["rx_bytes"] for r in records) >= UPLOAD_BYTES
    kept = sql(world, "SELECT count(*) FROM connection_records")[0][0]
    assert kept == sum(len(records_of(world, s)["records"]) for s in surfers)
    counters = sql(world, "SELECT bytes_total, sessions FROM usage_counters")
    assert len(counters) == len(surfers)
    assert all(total >= len(world.web_file) and sessions >= 1 for total, sessions in counters)

    within = f"{kept} connection records within the 30-day retention"
    clean = audit(world)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert findings(clean, "VIOLATION") == []
    assert any(
        line.split(maxsplit=1)[1].startswith(f"connection_records: {within}")
        for line in findings(clean, "allowed")
    ), clean.stdout
    assert scanned_log_lines(clean) >= 3

    # A record older than the retention, as if the purge had missed it: planted while the
    # control plane is down (its purge job runs every second here).
    world.stop_control_plane()
    started_text = sql(world, "SELECT started_at FROM connection_records LIMIT 1")[0][0]
    old = datetime.now(UTC) - timedelta(days=40)
    old_text = old.strftime("%Y-%m-%d %H:%M:%S.%f")
    assert len(old_text) == len(started_text), started_text
    sql(
        world,
        "INSERT INTO connection_records (account_id, device_id, node_name, node_country, "
        "node_city, started_at, ended_at, duration_seconds, rx_bytes, tx_bytes) "
        "SELECT account_id, device_id, node_name, node_country, node_city, ?, ?, 60, 10, 20 "
        "FROM connection_records LIMIT 1",
        old_text,
        old_text,
    )
    (planted,) = sql(world, "SELECT max(id) FROM connection_records")[0]

    caught = audit(world)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert findings(caught, "VIOLATION") == [
        f"VIOLATION  connection_records row id={planted}: a connection record from "
        f"{old.date()}, older than the 30-day retention "
        "(privacy.connection_record_retention_days)"
    ]
    assert within in caught.stdout

    # Back up, the control plane's purge job deletes it, and only it.
    world.start_control_plane()
    wait_for(
        lambda: (
            sql(world, "SELECT count(*) FROM connection_records WHERE id = ?", planted)[0][0] == 0
        ),
        10,
        "the purge job to delete the old record",
        interval=0.2,
    )
    assert sql(world, "SELECT count(*) FROM connection_records")[0][0] == kept
    again = audit(world)
    assert again.returncode == 0, again.stdout + again.stderr
    assert within in again.stdout
