"""``burrow audit`` (the scan itself): a clean strict deployment, planted violations, and the
metered retention, on both databases."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.repository import ActionFilters
from burrow.control.audit.service import NotAnAdministrator, admin_audit
from burrow.control.db import unit_of_work
from burrow.control.models import Account, RefundedPerson, RefundedPersonKind, utcnow
from burrow.control.policy.audit import AuditReport, AuditTargets, run_audit, run_audit_by
from burrow.control.policy.schemas import Policy
from burrow.control.policy.service import load_policy
from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest
from tests.conftest import ROOT
from tests.support import factories

CLIENT = "192.0.2.44"


@pytest.fixture
async def deployment(session: AsyncSession, tmp_path: Path) -> AuditTargets:
    """What a running strict deployment holds: customers, devices, nodes, a log, a node disk."""
    for _ in range(3):
        account = await factories.create_account(session)
        await factories.create_subscription(session, account)
        await factories.create_device(session, account)
        await factories.create_session_token(session, account)
    node = await factories.create_node(session, endpoint_host="198.51.100.20")
    node.egress_ipv4 = "203.0.113.10"
    node.egress_ipv6 = "2001:db8:ffff::10"
    node.egress_ipv4_extra = "203.0.113.11 203.0.113.12"
    await session.commit()
    log = tmp_path / "burrow.log"
    log.write_text(
        "INFO uvicorn.error: Uvicorn running on http://127.0.0.1:8080\n"
        "INFO burrow.control.nodes: node enrolled, endpoint 198.51.100.20:51820\n"
        "INFO burrow.control.devices: device got 10.64.0.9 and fd42:b0::9\n"
        "INFO burrow.control.accounts: sign-in from [ip removed]\n"
        "INFO burrow: started at 12:30:45, version 1.2.3\n"
    )
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "identity.json").write_text(
        json.dumps({"control_url": "http://203.0.113.1:8080", "node_id": 1}, indent=1)
    )
    return AuditTargets(
        log_paths=[log], node_state_dirs=[node_dir], node_expected_files=("identity.json",)
    )


async def _audit(
    runtime: Runtime, targets: AuditTargets, policy: Policy | None = None
) -> AuditReport:
    return await run_audit(runtime.engine, policy or runtime.policy, runtime.settings, targets)


def _violations(report: AuditReport) -> list[tuple[str, str]]:
    return [(f.where, f.what) for f in report.violations]


async def test_a_strict_deployment_breaks_nothing(
    runtime: Runtime, deployment: AuditTargets
) -> None:
    report = await _audit(runtime, deployment)
    assert _violations(report) == []
    assert report.tables >= 10
    assert report.values > 0
    assert (report.log_files, report.log_lines, report.node_files) == (1, 5, 1)


async def test_a_planted_client_ip_is_named_in_the_table_and_the_log(
    runtime: Runtime, session: AsyncSession, deployment: AuditTargets
) -> None:
    account = await factories.create_account(session)
    account.status_reason = f"chargeback; customer wrote from {CLIENT}"
    await session.commit()
    log = deployment.log_paths[0]
    with log.open("a") as handle:
        handle.write(f"WARNING burrow.somewhere: handshake from {CLIENT}:41234\n")
    report = await _audit(runtime, deployment)
    assert _violations(report) == [
        (
            f"accounts.status_reason row id={account.id}",
            "IPv4 address 192.0.2.*: a client address stored in the database, which "
            'privacy.mode = "strict" does not allow',
        ),
        (
            f"{log}:6",
            'IPv4 address 192.0.2.*: a client address in a log, which privacy.mode = "strict" '
            "removes from logs",
        ),
    ]
    # The report locates the address without copying it.
    assert all(CLIENT not in f.what for f in report.findings)


async def test_columns_that_look_like_connection_data_are_flagged_when_they_hold_values(
    runtime: Runtime, session: AsyncSession, deployment: AuditTargets
) -> None:
    account = await factories.create_account(session)
    await session.commit()
    async with runtime.engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE device_stats (id INTEGER PRIMARY KEY, account_id INTEGER, "
                "last_handshake_at TIMESTAMP, rx_bytes BIGINT, peer_ip VARCHAR(45))"
            )
        )
    empty = await _audit(runtime, deployment)
    assert _violations(empty) == []
    notes = {(f.where, f.what) for f in empty.findings if f.severity == "note"}
    assert (
        "device_stats.rx_bytes",
        "a column named like a byte counter; it holds no values",
    ) in notes
    async with runtime.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO device_stats (id, account_id, last_handshake_at, rx_bytes, peer_ip) "
                "VALUES (1, :account, :at, 12345, '198.51.100.77')"
            ).bindparams(bindparam("at", type_=DateTime(timezone=True))),
            {"account": account.id, "at": utcnow()},
        )
    report = await _audit(runtime, deployment)
    where = [w for w, _ in _violations(report)]
    assert where == [
        "device_stats.last_handshake_at",
        "device_stats.rx_bytes",
        "device_stats.peer_ip",
        "device_stats.peer_ip row id=1",
    ]


async def test_a_tunnel_address_outside_the_pools_is_a_violation(
    runtime: Runtime, session: AsyncSession, deployment: AuditTargets
) -> None:
    account = await factories.create_account(session)
    device = await factories.create_device(session, account)
    device.ipv4 = "192.0.2.200"
    await session.commit()
    report = await _audit(runtime, deployment)
    assert _violations(report) == [
        (f"devices.ipv4 row id={device.id}", "IPv4 address 192.0.2.* outside the tunnel pools")
    ]


async def test_the_node_disk_holds_only_the_identity(
    runtime: Runtime, deployment: AuditTargets
) -> None:
    node_dir = deployment.node_state_dirs[0]
    (node_dir / "peers.json").write_text(
        json.dumps({"peer": "abc=", "endpoint": f"{CLIENT}:51820", "rx_bytes": 10}, indent=1)
    )
    report = await _audit(runtime, deployment)
    stray = node_dir / "peers.json"
    # Line 3 holds a client's address and a peer endpoint; line 4 a byte counter.
    assert [w for w, _ in _violations(report)] == [f"{stray}:3", f"{stray}:3", f"{stray}:4"]
    assert (str(stray), "a file the node agent does not write") in {
        (f.where, f.what) for f in report.findings
    }


async def test_missing_places_are_noted_not_passed_silently(
    runtime: Runtime, tmp_path: Path
) -> None:
    report = await _audit(runtime, AuditTargets(node_state_dirs=[tmp_path / "absent"]))
    notes = [f.where for f in report.findings if f.severity == "note"]
    assert "logs" in notes
    assert str(tmp_path / "absent") in notes
    assert report.violations == []


# Metered mode.


@pytest.fixture
def metered() -> Policy:
    return load_policy(ROOT / "examples" / "policies" / "metered.toml")


async def test_metered_without_a_connection_records_table_says_so(
    runtime: Runtime, deployment: AuditTargets, metered: Policy
) -> None:
    async with runtime.engine.begin() as conn:  # a deployment from before the table existed
        await conn.execute(text("DROP TABLE connection_records"))
    report = await _audit(runtime, deployment, metered)
    assert report.violations == []
    assert any(
        f.where == "connection_records" and "does not exist yet" in f.what for f in report.findings
    )


async def test_metered_allows_records_within_the_retention_and_flags_older_ones(
    runtime: Runtime, session: AsyncSession, deployment: AuditTargets, metered: Policy
) -> None:
    account: Account = await factories.create_account(session)
    await session.commit()
    async with runtime.engine.begin() as conn:
        # A hand-made table of another shape in place of the model's.
        await conn.execute(text("DROP TABLE connection_records"))
        await conn.execute(
            text(
                "CREATE TABLE connection_records (id INTEGER PRIMARY KEY, account_id INTEGER, "
                "started_at TIMESTAMP WITH TIME ZONE, duration_seconds INTEGER, node_city "
                "VARCHAR(100), bytes_up BIGINT, bytes_down BIGINT)"
            )
        )
        now = utcnow()
        insert = text(
            "INSERT INTO connection_records VALUES (:id, :account, :at, 60, 'Amsterdam', 10, 20)"
        ).bindparams(bindparam("at", type_=DateTime(timezone=True)))
        for record_id, age in (
            (1, timedelta(days=1)),
            (2, timedelta(days=29)),
            (3, timedelta(days=31)),
        ):
            await conn.execute(insert, {"id": record_id, "account": account.id, "at": now - age})
    report = await _audit(runtime, deployment, metered)
    assert [w for w, _ in _violations(report)] == ["connection_records row id=3"]
    assert "older than the 30-day retention" in report.violations[0].what
    allowed = [(f.where, f.what) for f in report.findings if f.severity == "allowed"]
    assert (
        "connection_records",
        "2 connection records within the 30-day retention "
        "(privacy.connection_record_retention_days)",
    ) in allowed

    # The same records under the strict policy are all a violation.
    strict = await _audit(runtime, deployment)
    assert (
        "connection_records",
        '3 connection records, but privacy.mode = "strict" keeps none',
    ) in (_violations(strict))


# The last-login IP (privacy.store_last_login_ip).


async def test_a_login_ip_is_allowed_by_a_policy_that_keeps_it_and_flagged_when_old(
    runtime: Runtime, session: AsyncSession, deployment: AuditTargets
) -> None:
    # The strict example keeps the last-login IP for 30 days (fraud prevention).
    assert runtime.policy.privacy.store_last_login_ip
    fresh = await factories.create_account(session)
    fresh.last_login_ip, fresh.last_login_ip_at = CLIENT, utcnow() - timedelta(days=29)
    await session.commit()
    report = await _audit(runtime, deployment)
    assert _violations(report) == []
    allowed = {(f.where, f.what) for f in report.findings if f.severity == "allowed"}
    assert (
        "accounts.last_login_ip",
        "1 login addresses, allowed by privacy.store_last_login_ip",
    ) in allowed

    old = await factories.create_account(session)
    old.last_login_ip, old.last_login_ip_at = "2001:db8::77", utcnow() - timedelta(days=31)
    undated = await factories.create_account(session)
    undated.last_login_ip = "198.51.100.9"
    await session.commit()
    report = await _audit(runtime, deployment)
    assert sorted(_violations(report)) == sorted(
        [
            (
                f"accounts.last_login_ip row id={old.id}",
                f"a last-login address from {(utcnow() - timedelta(days=31)).date()}, older "
                "than the 30-day retention (privacy.last_login_ip_retention_days)",
            ),
            (
                f"accounts.last_login_ip row id={undated.id}",
                "a last-login address without last_login_ip_at, so its age cannot be checked "
                "against privacy.last_login_ip_retention_days",
            ),
        ]
    )
    assert all(CLIENT not in f.what for f in report.findings)


async def test_a_login_ip_under_a_policy_that_keeps_none_is_a_violation(
    runtime: Runtime, session: AsyncSession, deployment: AuditTargets, metered: Policy
) -> None:
    assert not metered.privacy.store_last_login_ip
    account = await factories.create_account(session)
    account.last_login_ip, account.last_login_ip_at = CLIENT, utcnow()
    await session.commit()
    report = await _audit(runtime, deployment, metered)
    assert sorted(_violations(report)) == [
        (
            "accounts.last_login_ip",
            "1 rows hold what looks like a client IP address tied to a customer, which "
            'privacy.mode = "metered" does not allow',
        ),
        (
            f"accounts.last_login_ip row id={account.id}",
            "IPv4 address 192.0.2.*: a client address stored in the database, which "
            'privacy.mode = "metered" does not allow',
        ),
        (
            "accounts.last_login_ip_at",
            "1 rows hold what looks like a client IP address tied to a customer, which "
            'privacy.mode = "metered" does not allow',
        ),
    ]


async def test_refunded_persons_digests_are_not_taken_for_addresses(
    runtime: Runtime, session: AsyncSession, deployment: AuditTargets, metered: Policy
) -> None:
    # What an erasure under one_per_person keeps: keyed digests (hex), never an address, even
    # of values that hold one (a fingerprint is the provider's word, it could be anything).
    secret = runtime.settings.secret_key.get_secret_value()
    for n in range(40):
        session.add(
            RefundedPerson(
                kind=RefundedPersonKind.email,
                digest=keyed_digest(secret, f"refunded-email:p{n}@example.org"),
            )
        )
        session.add(
            RefundedPerson(
                kind=RefundedPersonKind.fingerprint,
                digest=keyed_digest(secret, f"refunded-fingerprint:{CLIENT}:{n}"),
            )
        )
    await session.commit()
    report = await _audit(runtime, deployment, metered)
    assert _violations(report) == []
    assert [f for f in report.findings if f.where.startswith("refunded_persons")] == []


async def test_an_operators_audit_records_itself_and_refuses_a_customer(
    runtime: Runtime, tmp_path: Path
) -> None:
    targets = AuditTargets(log_paths=[tmp_path / "none.log"])
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await factories.create_account(session, admin=True)
        customer = await factories.create_account(session)
        report = await run_audit_by(
            session, runtime.engine, runtime.policy, runtime.settings, admin, targets
        )
        [row] = (await admin_audit.search(session, ActionFilters(action="policy.audit"))).items
    assert (row.action.admin_id, row.action.target_id) == (admin.id, runtime.policy.terms.version)
    assert row.detail == {"violations": len(report.violations), "findings": len(report.findings)}
    with pytest.raises(NotAnAdministrator):
        async with unit_of_work(runtime.sessionmaker) as session:
            await run_audit_by(
                session, runtime.engine, runtime.policy, runtime.settings, customer, targets
            )


async def test_the_tunnel_address_history_is_checked_against_the_nat_and_its_retention(
    runtime: Runtime, session: AsyncSession, deployment: AuditTargets
) -> None:
    from burrow.control.models import AddressHolding

    account = await factories.create_account(session)
    device = await factories.create_device(session, account)
    now = utcnow()
    for held_until in (None, now - timedelta(days=5), now - timedelta(days=40)):
        session.add(
            AddressHolding(
                account_id=account.id,
                device_id=device.id,
                device_name=device.name,
                ipv4=device.ipv4,
                ipv6=device.ipv6,
                held_from=now - timedelta(days=60),
                held_until=held_until,
            )
        )
    await session.commit()
    metered = load_policy(ROOT / "examples" / "policies" / "metered.toml")
    report = await _audit(runtime, deployment, metered)
    assert _violations(report) == [
        (
            "address_holdings",
            "1 rows of the tunnel address history ended more than 30 days ago, past "
            "privacy.address_history_retention_days",
        )
    ]
    assert any(f.where == "address_holdings" and f.severity == "allowed" for f in report.findings)

    strict = await _audit(runtime, deployment)
    assert _violations(strict) == [
        (
            "address_holdings",
            '3 rows of which device held which tunnel address, which network.nat = "random" '
            'under privacy.mode = "strict" does not keep',
        )
    ]
