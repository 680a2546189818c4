"""``burrow audit``: check the live deployment against the active policy.

Scans every table and column of the database, the log files and the node's state directory
(see ``burrow.control.policy.audit``), prints each finding with where it was found, and exits
1 when anything breaks the policy (0 when nothing does, 3 when it cannot run).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from burrow.cli.common import (
    EXIT_REFUSED,
    EXIT_SETUP,
    fail,
    load_settings,
    refuse_policy,
    require_database,
    run,
)
from burrow.control.config import Settings
from burrow.control.db import create_engine
from burrow.control.policy.addresses import IPNetwork
from burrow.control.policy.audit import AuditReport, AuditTargets, log_paths, run_audit
from burrow.control.policy.schemas import Policy
from burrow.control.policy.service import check_file
from burrow.node.config import DEFAULT_STATE_DIR
from burrow.node.identity import IDENTITY_FILE

_LABELS = {"violation": "VIOLATION", "allowed": "allowed", "note": "note"}


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def _networks(values: list[str]) -> list[IPNetwork]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            fail(f"--allow {value}: not an IP address or network (such as 203.0.113.0/24)", 2)
    return networks


async def _audit(settings: Settings, policy: Policy, targets: AuditTargets) -> AuditReport:
    engine = create_engine(settings.database_url)
    try:
        return await run_audit(engine, policy, settings, targets)
    finally:
        await engine.dispose()


def audit(
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="The policy to audit against (default: BURROW_POLICY_PATH)."),
    ] = None,
    log: Annotated[
        list[Path] | None,
        typer.Option(
            "--log", help="A log file or directory to scan, besides BURROW_LOG_FILE (repeatable)."
        ),
    ] = None,
    node_state_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--node-state-dir",
            help=f"A node agent's state directory (repeatable; default {DEFAULT_STATE_DIR}).",
        ),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="An address or network of your own infrastructure that may appear in logs "
            "(repeatable).",
        ),
    ] = None,
) -> None:
    """Check the database, the logs and the node's disk against the policy."""
    for given in log or []:
        if not given.exists():
            # A mistyped path would otherwise scan nothing and report "nothing breaks".
            fail(f"--log {given}: no such file or directory", 2)
    settings = load_settings()
    path = policy_file or settings.policy_path
    policy, problems = check_file(path)
    if policy is None:
        refuse_policy(path, problems, "fix it before auditing against it")
    targets = AuditTargets(
        log_paths=log_paths(settings, log or []),
        node_state_dirs=list(node_state_dir or [DEFAULT_STATE_DIR]),
        allowed_networks=_networks(allow or []),
        node_expected_files=(IDENTITY_FILE,),
    )
    require_database(settings, schema=False)  # the audit itself says what an empty one lacks
    report = run(_audit(settings, policy, targets))
    if report.tables == 0:
        fail(
            "the database has no tables: point BURROW_DATABASE_URL at the live database "
            "(or run `burrow db upgrade` first)",
            EXIT_SETUP,
        )
    typer.echo(f'burrow audit against {path} (privacy.mode = "{policy.privacy.mode}")')
    for finding in report.findings:
        typer.echo(f"{_LABELS[finding.severity]:<9}  {finding.where}: {finding.what}")
    typer.echo(
        f"scanned {report.tables} tables, {report.columns} columns, {report.values} text "
        f"values; {report.log_files} log files, {report.log_lines} lines; "
        f"{report.node_files} node files; {report.resolvers} running resolvers"
    )
    violations = len(report.violations)
    if violations:
        typer.echo(f"result: {violations} violation{'s' if violations != 1 else ''} of the policy")
        raise typer.Exit(EXIT_REFUSED)
    typer.echo("result: nothing breaks the policy")
