"""``burrow audit``: the live deployment checked against the active policy.

Three places are scanned, and every finding says where it is:

- **The database**, every table and column, reflected from the live schema (not from the
  models, so a column added by hand is seen too). Text columns are read row by row for IP
  address literals; columns whose names say "connection time" or "byte counter" in a table
  tied to accounts or devices are flagged when they hold values. The operator's own addresses
  (``nodes.endpoint_host``, ``nodes.egress_ipv4/6``) and the tunnel addresses of devices
  (checked to lie inside the tunnel pools) are the only addresses expected there.
- **The log files**: ``BURROW_LOG_FILE`` and its rotated siblings, plus any path given.
- **The node's state directory** (default ``/var/lib/burrow-node``), which should hold the
  node's identity file and nothing that names a customer.
- **Redis**, when ``BURROW_REDIS_URL`` names one: under a strict policy it must keep the live
  store off disk (no RDB snapshots, no append-only file).

What the policy allows is reported as allowed, not as a violation: in metered mode connection
records younger than the retention, the first order's usage counters, the last-login IP where
``privacy.store_last_login_ip`` is on. A table or column declares that it holds one of these
with ``info={"privacy": ...}`` on its model (``CONNECTION_RECORDS``, ``USAGE_COUNTERS``,
``LOGIN_IP``); a table named ``connection_records`` is taken as connection records.

``run_audit_by`` is the same audit as an operator's action (the admin policy page): it runs,
then writes its row of the admin audit trail in the caller's unit of work.

Imports SQLAlchemy, the models' metadata, the policy and the admin audit trail (a leaf); never
the node agent.
"""

from __future__ import annotations

import gzip
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from redis.exceptions import RedisError
from sqlalchemy import (
    ColumnElement,
    Connection,
    MetaData,
    Table,
    func,
    inspect,
    or_,
    select,
    type_coerce,
)
from sqlalchemy import types as sqltypes
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from burrow.control.audit.service import Actor, admin_audit
from burrow.control.config import Settings
from burrow.control.db import reading
from burrow.control.live.redis import persistence as redis_persistence
from burrow.control.models import Base
from burrow.control.models.base import UTCDateTime
from burrow.control.policy.addresses import (
    ALWAYS_ALLOWED,
    AddressMatch,
    IPNetwork,
    find_addresses,
    is_allowed,
)
from burrow.control.policy.resolver_audit import check_resolvers
from burrow.control.policy.schemas import Policy

Severity = Literal["violation", "allowed", "note"]

# Privacy classes a model may declare in ``info={"privacy": ...}``.
CONNECTION_RECORDS = "connection_records"
USAGE_COUNTERS = "usage_counters"
LOGIN_IP = "login_ip"
ADDRESS_HISTORY = "address_history"

CONNECTION_RECORDS_TABLE = "connection_records"
_RECORD_TIME_COLUMNS = ("started_at", "start", "connected_at", "created_at")

# (table, column) holding the operator's own addresses: never a customer's.
OPERATOR_ADDRESS_COLUMNS = frozenset(
    {
        ("nodes", "endpoint_host"),
        ("nodes", "egress_ipv4"),
        ("nodes", "egress_ipv6"),
        ("nodes", "egress_ipv4_extra"),  # space-separated
    }
)
# (table, column) holding devices' tunnel addresses: must lie inside the tunnel pools.
TUNNEL_ADDRESS_COLUMNS = frozenset(
    {
        ("devices", "ipv4"),
        ("devices", "ipv6"),
        ("served_peers", "ipv4"),
        ("served_peers", "ipv6"),
        ("peer_changes", "ipv4"),
        ("peer_changes", "ipv6"),
        ("address_holdings", "ipv4"),
        ("address_holdings", "ipv6"),
    }
)
SKIPPED_TABLES = frozenset({"alembic_version"})
CUSTOMER_TABLES = frozenset({"accounts", "devices"})
CUSTOMER_KEYS = frozenset({"account_id", "device_id"})

_TIME_NAME = re.compile(
    r"handshake|(^|_)(dis)?connected(_|$)|connection_(start|end|time)|session_(start|end)"
    r"|last_seen|online_(since|at)|(^|_)duration(_seconds|_secs|_s|_ms)?$"
)
_BYTES_NAME = re.compile(
    r"bytes|(^|_)(rx|tx)(_|$)|bandwidth|traffic|transfer|(^|_)(upload|download)(ed)?(_|$)"
    r"|data_used|usage"
)
_IP_NAME = re.compile(r"(^|_)(ip|ip_address|ipaddr|remote_addr|client_addr|source_ip|src_ip)(_|$)")
# Keys of node status that must never be kept on a node's disk.
_NODE_STATUS_KEY = re.compile(
    r"rx_bytes|tx_bytes|last_handshake|handshake_time|bytes_(in|out|up|down|rx|tx)"
    r"|transfer_(rx|tx)|\"endpoint\""
)

MAX_FINDINGS_PER_PLACE = 20


@dataclass(frozen=True)
class Finding:
    severity: Severity
    where: str
    what: str


@dataclass
class AuditTargets:
    log_paths: list[Path] = field(default_factory=list)
    node_state_dirs: list[Path] = field(default_factory=list)
    allowed_networks: list[IPNetwork] = field(default_factory=list)
    # Files the node agent itself keeps in its state directory (its identity).
    node_expected_files: tuple[str, ...] = ()


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    tables: int = 0
    columns: int = 0
    values: int = 0
    log_files: int = 0
    log_lines: int = 0
    node_files: int = 0
    resolvers: int = 0

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "violation"]

    def add(self, severity: Severity, where: str, what: str) -> None:
        self.findings.append(Finding(severity, where, what))


class _Capped:
    """Collects findings of one place (a column, a file), reporting at most a few one by one."""

    def __init__(self, report: AuditReport, place: str) -> None:
        self.report = report
        self.place = place
        self.count = 0

    def add(self, where: str, what: str) -> None:
        self.count += 1
        if self.count <= MAX_FINDINGS_PER_PLACE:
            self.report.add("violation", where, what)

    def close(self) -> None:
        if self.count > MAX_FINDINGS_PER_PLACE:
            more = self.count - MAX_FINDINGS_PER_PLACE
            self.report.add("violation", self.place, f"... and {more} more like the above")


def _mode(policy: Policy) -> str:
    return f'privacy.mode = "{policy.privacy.mode}"'


def _privacy_class(table: str, column: str | None = None) -> str | None:
    model_table = Base.metadata.tables.get(table)
    if model_table is not None:
        if column is not None and column in model_table.c:
            declared = model_table.c[column].info.get("privacy")
            if declared:
                return str(declared)
        declared = model_table.info.get("privacy")
        if declared:
            return str(declared)
    if table == CONNECTION_RECORDS_TABLE:
        return CONNECTION_RECORDS
    return None


def _aware(value: Any) -> datetime | None:
    when: datetime
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _raw(table: Table, name: str) -> ColumnElement[Any]:
    """A column read as the driver returns it: a reflected type's converter must not fail."""
    return type_coerce(table.c[name], sqltypes.NullType())


def _as_network(value: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(value.strip().strip("[]"), strict=False)
    except ValueError:
        return None


class _DatabaseAudit:
    def __init__(
        self,
        conn: Connection,
        policy: Policy,
        settings: Settings,
        report: AuditReport,
        now: datetime,
    ) -> None:
        self.conn = conn
        self.policy = policy
        self.report = report
        self.now = now
        self.pools: tuple[IPNetwork, ...] = (
            ipaddress.ip_network(settings.tunnel_ipv4_pool),
            ipaddress.ip_network(settings.tunnel_ipv6_pool),
        )
        self.operator: list[IPNetwork] = []
        self.metadata = MetaData()

    def _table(self, name: str) -> Table:
        return Table(name, self.metadata, autoload_with=self.conn)

    def operator_networks(self, tables: Iterable[str]) -> list[IPNetwork]:
        """The operator's own addresses, from the columns that hold them."""
        found: list[IPNetwork] = []
        names = set(tables)
        for table_name, column in sorted(OPERATOR_ADDRESS_COLUMNS):
            if table_name not in names:
                continue
            table = self._table(table_name)
            if column not in table.c:
                continue
            query = select(table.c[column]).where(table.c[column].is_not(None))
            for (value,) in self.conn.execute(query):
                for part in str(value).split():
                    network = _as_network(part)
                    if network is not None:
                        found.append(network)
        return found

    def run(self) -> list[IPNetwork]:
        inspector = inspect(self.conn)
        tables = [t for t in inspector.get_table_names() if t not in SKIPPED_TABLES]
        self.operator = self.operator_networks(tables)
        allowed_anywhere = (*ALWAYS_ALLOWED, *self.pools, *self.operator)
        for name in sorted(tables):
            self.report.tables += 1
            table = self._table(name)
            pk = [c.name for c in table.primary_key.columns]
            columns = {c.name for c in table.c}
            foreign = {fk.column.table.name for fk in table.foreign_keys}
            tied = (
                name in CUSTOMER_TABLES
                or bool(columns & CUSTOMER_KEYS)
                or bool(foreign & CUSTOMER_TABLES)
            )
            table_class = _privacy_class(name)
            if table_class == CONNECTION_RECORDS:
                self.connection_records(table)
            if table_class == ADDRESS_HISTORY:
                self.address_history(table)
            for column in table.c:
                self.report.columns += 1
                self.column(table, column.name, pk, tied, table_class, allowed_anywhere)
            self.login_ip_ages(table, pk)
        if CONNECTION_RECORDS_TABLE not in tables and self.policy.privacy.mode == "metered":
            self.report.add(
                "note",
                CONNECTION_RECORDS_TABLE,
                "the connection-records table does not exist yet, so there are no connection "
                "records to check against privacy.connection_record_retention_days",
            )
        return self.operator

    def address_history(self, table: Table) -> None:
        """Which device held which tunnel address: kept only under deterministic NAT, and then
        only until the retention after the device gave the address up."""
        policy = self.policy
        where = table.name
        rows = int(self.conn.execute(select(func.count()).select_from(table)).scalar_one())
        keeps = policy.network.nat == "deterministic" and policy.privacy.mode == "metered"
        if not keeps:
            if rows:
                self.report.add(
                    "violation",
                    where,
                    f"{rows} rows of which device held which tunnel address, which "
                    f'network.nat = "{policy.network.nat}" under {_mode(policy)} does not keep',
                )
            return
        days = policy.privacy.address_history_retention_days or 0
        cutoff = self.now - timedelta(days=days)
        stale = 0
        if "held_until" in table.c:
            for (value,) in self.conn.execute(
                select(_raw(table, "held_until")).where(table.c.held_until.is_not(None))
            ):
                ended = _aware(value)
                if ended is not None and ended < cutoff:
                    stale += 1
        if stale:
            self.report.add(
                "violation",
                where,
                f"{stale} rows of the tunnel address history ended more than {days} days ago, "
                "past privacy.address_history_retention_days",
            )
        if rows - stale:
            self.report.add(
                "allowed",
                where,
                f"{rows - stale} rows of the tunnel address history, allowed by "
                'network.nat = "deterministic" for privacy.address_history_retention_days',
            )

    def _count_values(self, table: Table, column: str) -> int:
        query = select(func.count()).select_from(table).where(table.c[column].is_not(None))
        return int(self.conn.execute(query).scalar_one())

    def _allowed_class(self, privacy_class: str | None) -> str | None:
        """The policy rule that allows data of this class, or None."""
        privacy = self.policy.privacy
        if privacy_class == CONNECTION_RECORDS and privacy.mode == "metered":
            return "privacy.connection_record_retention_days"
        if (
            privacy_class == USAGE_COUNTERS
            and privacy.mode == "metered"
            and privacy.first_order_usage_counters
        ):
            return "privacy.first_order_usage_counters"
        if privacy_class == LOGIN_IP and privacy.store_last_login_ip:
            return "privacy.store_last_login_ip"
        return None

    def column(
        self,
        table: Table,
        name: str,
        pk: list[str],
        tied: bool,
        table_class: str | None,
        allowed_anywhere: tuple[IPNetwork, ...],
    ) -> None:
        where = f"{table.name}.{name}"
        column = table.c[name]
        privacy_class = _privacy_class(table.name, name) or table_class
        allowed_by = self._allowed_class(privacy_class)
        looks_like = None
        if tied and (table.name, name) not in TUNNEL_ADDRESS_COLUMNS:
            if _TIME_NAME.search(name):
                looks_like = "a connection time"
            elif _BYTES_NAME.search(name) and not isinstance(column.type, sqltypes.String):
                looks_like = "a byte counter"
            elif _IP_NAME.search(name):
                looks_like = "a client IP address"
        if looks_like is not None and privacy_class != CONNECTION_RECORDS:
            held = self._count_values(table, name)
            if held and allowed_by:
                self.report.add(
                    "allowed", where, f"{held} values of {looks_like}, allowed by {allowed_by}"
                )
            elif held:
                self.report.add(
                    "violation",
                    where,
                    f"{held} rows hold what looks like {looks_like} tied to a customer, "
                    f"which {_mode(self.policy)} does not allow",
                )
            else:
                self.report.add(
                    "note", where, f"a column named like {looks_like}; it holds no values"
                )
        if isinstance(column.type, sqltypes.String | sqltypes.JSON):
            self.scan_text(table, name, pk, privacy_class, allowed_by, allowed_anywhere)

    def scan_text(
        self,
        table: Table,
        name: str,
        pk: list[str],
        privacy_class: str | None,
        allowed_by: str | None,
        allowed_anywhere: tuple[IPNetwork, ...],
    ) -> None:
        place = f"{table.name}.{name}"
        if (table.name, name) in OPERATOR_ADDRESS_COLUMNS:
            return
        tunnel = (table.name, name) in TUNNEL_ADDRESS_COLUMNS
        keys = [_raw(table, k) for k in pk]
        query = select(*keys, _raw(table, name)).where(table.c[name].is_not(None))
        capped = _Capped(self.report, place)
        allowed_count = 0
        for row in self.conn.execute(query.execution_options(yield_per=1000)):
            self.report.values += 1
            *key, value = row
            text = value if isinstance(value, str) else str(value)
            row_id = ", ".join(f"{k}={v}" for k, v in zip(pk, key, strict=True)) or "(no key)"
            for found in find_addresses(text):
                if tunnel:
                    if not is_allowed(found.address, self.pools):
                        capped.add(
                            f"{place} row {row_id}",
                            f"{found.kind} {found.masked} outside the tunnel pools",
                        )
                    continue
                if is_allowed(found.address, allowed_anywhere):
                    continue
                if allowed_by and privacy_class == LOGIN_IP:
                    allowed_count += 1
                    continue
                capped.add(
                    f"{place} row {row_id}",
                    f"{found.kind} {found.masked}: a client address stored in the database, "
                    f"which {_mode(self.policy)} does not allow",
                )
        capped.close()
        if allowed_count:
            self.report.add(
                "allowed", place, f"{allowed_count} login addresses, allowed by {allowed_by}"
            )

    def login_ip_ages(self, table: Table, pk: list[str]) -> None:
        """Last-login addresses the policy allows must be younger than its retention.

        The model names the columns (``info={"privacy": "login_ip"}``): the address columns
        and the time column beside them. An address without a time cannot be dated, so it is
        a violation too.
        """
        privacy = self.policy.privacy
        model = Base.metadata.tables.get(table.name)
        if not privacy.store_last_login_ip or model is None:
            return
        declared = [c for c in model.c if c.info.get("privacy") == LOGIN_IP and c.name in table.c]
        times = [c.name for c in declared if isinstance(c.type, sqltypes.DateTime | UTCDateTime)]
        addresses = [c.name for c in declared if c.name not in times]
        if not addresses or len(times) != 1:
            return
        days = privacy.last_login_ip_retention_days or 0
        cutoff = self.now - timedelta(days=days)
        held = [table.c[name].is_not(None) for name in addresses]
        query = select(*[_raw(table, k) for k in pk], _raw(table, times[0])).where(or_(*held))
        capped = _Capped(self.report, f"{table.name}.{addresses[0]}")
        for row in self.conn.execute(query.execution_options(yield_per=1000)):
            *key, at = row
            when = _aware(at) if at is not None else None
            if when is not None and when >= cutoff:
                continue
            row_id = ", ".join(f"{k}={v}" for k, v in zip(pk, key, strict=True))
            capped.add(
                f"{table.name}.{addresses[0]} row {row_id}",
                (
                    f"a last-login address from {when.date()}, older than the {days}-day "
                    "retention (privacy.last_login_ip_retention_days)"
                )
                if when is not None
                else f"a last-login address without {times[0]}, so its age cannot be checked "
                "against privacy.last_login_ip_retention_days",
            )
        capped.close()

    def connection_records(self, table: Table) -> None:
        privacy = self.policy.privacy
        rows = int(self.conn.execute(select(func.count()).select_from(table)).scalar_one())
        if privacy.mode == "strict":
            if rows:
                self.report.add(
                    "violation",
                    table.name,
                    f"{rows} connection records, but {_mode(self.policy)} keeps none",
                )
            return
        days = privacy.connection_record_retention_days or 0
        time_column = next((c for c in _RECORD_TIME_COLUMNS if c in table.c), None)
        if time_column is None:
            self.report.add(
                "violation",
                table.name,
                "connection records without a start time, so their age cannot be checked "
                "against privacy.connection_record_retention_days",
            )
            return
        cutoff = self.now - timedelta(days=days)
        pk = [c.name for c in table.primary_key.columns]
        query = select(*[_raw(table, k) for k in pk], _raw(table, time_column))
        capped = _Capped(self.report, table.name)
        within = 0
        for row in self.conn.execute(query.execution_options(yield_per=1000)):
            *key, started = row
            when = _aware(started)
            row_id = ", ".join(f"{k}={v}" for k, v in zip(pk, key, strict=True))
            if when is not None and when >= cutoff:
                within += 1
                continue
            capped.add(
                f"{table.name} row {row_id}",
                f"a connection record from {when.date() if when else started}, older than the "
                f"{days}-day retention (privacy.connection_record_retention_days)",
            )
        capped.close()
        self.report.add(
            "allowed",
            table.name,
            f"{within} connection records within the {days}-day retention "
            "(privacy.connection_record_retention_days)",
        )


def _lines(path: Path) -> Iterator[str]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        yield from handle


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path


def log_paths(settings: Settings, extra: Iterable[Path] = ()) -> list[Path]:
    """``BURROW_LOG_FILE``, its rotated siblings (``burrow.log.1``, ``.gz``), and ``extra``."""
    paths: list[Path] = []
    if settings.log_file is not None:
        log_file = settings.log_file
        paths.append(log_file)
        if log_file.parent.is_dir():
            paths += sorted(log_file.parent.glob(f"{log_file.name}.*"))
    paths += list(extra)
    return paths


def _scan_logs(
    report: AuditReport, policy: Policy, paths: list[Path], allowed: tuple[IPNetwork, ...]
) -> None:
    privacy = policy.privacy
    ips_allowed = privacy.mode == "metered" and privacy.client_ips_in_logs
    if not paths:
        report.add(
            "note",
            "logs",
            "no log file to scan: set BURROW_LOG_FILE (or pass --log) to include the logs",
        )
        return
    for given in paths:
        if not given.exists():
            report.add("note", str(given), "does not exist; nothing to scan")
    for path in _files(paths):
        report.log_files += 1
        capped = _Capped(report, str(path))
        allowed_count = 0
        try:
            for number, line in enumerate(_lines(path), start=1):
                report.log_lines += 1
                for found in find_addresses(line):
                    if is_allowed(found.address, allowed):
                        continue
                    if ips_allowed:
                        allowed_count += 1
                        continue
                    capped.add(f"{path}:{number}", _log_message(found, policy))
        except OSError as exc:
            report.add("note", str(path), f"cannot be read: {exc.strerror or exc}")
        capped.close()
        if allowed_count:
            report.add(
                "allowed",
                str(path),
                f"{allowed_count} client addresses, allowed by privacy.client_ips_in_logs",
            )


def _log_message(found: AddressMatch, policy: Policy) -> str:
    return (
        f"{found.kind} {found.masked}: a client address in a log, which {_mode(policy)} "
        "removes from logs"
    )


def _scan_node_dirs(
    report: AuditReport,
    policy: Policy,
    dirs: list[Path],
    expected: tuple[str, ...],
    allowed: tuple[IPNetwork, ...],
) -> None:
    for directory in dirs:
        if not directory.is_dir():
            report.add(
                "note",
                str(directory),
                "no node state directory here; run `burrow audit --node-state-dir DIR` on "
                "each node",
            )
            continue
        for path in _files([directory]):
            report.node_files += 1
            if path.name not in expected:
                report.add("note", str(path), "a file the node agent does not write")
            capped = _Capped(report, str(path))
            try:
                for number, line in enumerate(_lines(path), start=1):
                    # The identity file names the control plane, the operator's own address.
                    own = path.name in expected and '"control_url"' in line
                    for found in find_addresses(line):
                        if not own and not is_allowed(found.address, allowed):
                            capped.add(
                                f"{path}:{number}",
                                f"{found.kind} {found.masked}: a client address on the node's "
                                f"disk, which {_mode(policy)} does not allow",
                            )
                    if _NODE_STATUS_KEY.search(line):
                        capped.add(
                            f"{path}:{number}",
                            "connection status (handshake times, byte counters or peer "
                            "endpoints) on the node's disk; it belongs in memory only",
                        )
            except OSError as exc:
                report.add("note", str(path), f"cannot be read: {exc.strerror or exc}")
            capped.close()


def _own_addresses(settings: Settings) -> list[IPNetwork]:
    """Where this control plane listens and is reached: the operator's own addresses."""
    from urllib.parse import urlsplit

    found = []
    for value in (settings.host, urlsplit(settings.public_url).hostname or ""):
        network = _as_network(value)
        if network is not None:
            found.append(network)
    return found


async def run_audit(
    engine: AsyncEngine,
    policy: Policy,
    settings: Settings,
    targets: AuditTargets,
    *,
    now: datetime | None = None,
) -> AuditReport:
    """Scan the database, the logs and the node state directories; see the module docstring."""
    report = AuditReport()
    moment = now or datetime.now(UTC)
    async with reading(engine).connect() as conn:
        operator = await conn.run_sync(
            lambda sync: _DatabaseAudit(sync, policy, settings, report, moment).run()
        )
    allowed = (
        *ALWAYS_ALLOWED,
        ipaddress.ip_network(settings.tunnel_ipv4_pool),
        ipaddress.ip_network(settings.tunnel_ipv6_pool),
        *operator,
        *_own_addresses(settings),
        *targets.allowed_networks,
    )
    _scan_logs(report, policy, targets.log_paths, allowed)
    _scan_node_dirs(report, policy, targets.node_state_dirs, targets.node_expected_files, allowed)
    if targets.node_state_dirs:
        _check_resolvers(report)
    if settings.redis_url:
        await _check_redis(report, policy, settings.redis_url)
    return report


async def _check_redis(report: AuditReport, policy: Policy, url: str) -> None:
    """The shared live store holds leases and reports: a strict policy keeps them off disk."""
    strict = policy.privacy.mode == "strict"
    try:
        found = await redis_persistence(url)
    except RedisError as exc:
        severity: Severity = "violation" if strict else "note"
        report.add(severity, "redis", f"could not ask Redis what it writes to disk ({exc})")
        return
    for what in found:
        if strict:
            report.add(
                "violation",
                "redis",
                f"{what}: the live store (who is connected where) would reach the disk, which "
                f'{_mode(policy)} forbids; run redis-server with --save "" --appendonly no',
            )
        else:
            report.add("note", "redis", f"{what}; the live store reaches the disk")


async def run_audit_by(
    session: AsyncSession,
    engine: AsyncEngine,
    policy: Policy,
    settings: Settings,
    actor: Actor,
    targets: AuditTargets,
) -> AuditReport:
    """``run_audit`` on an operator's request, recorded in the admin audit trail.

    The scan runs first: it reads through its own connection, and the caller's unit of work
    takes no write lock (SQLite's) until the trail's row is written after it.
    """
    report = await run_audit(engine, policy, settings, targets)
    await admin_audit.record(
        session,
        actor,
        "policy.audit",
        "policy",
        policy.terms.version,
        None,
        {"violations": len(report.violations), "findings": len(report.findings)},
    )
    return report


def _check_resolvers(report: AuditReport) -> None:
    """The node's resolvers must record no query, whatever the policy's mode (both promise it)."""
    count, problems, notes = check_resolvers()
    report.resolvers = count
    for problem in problems:
        report.add(
            "violation",
            problem.where,
            f"{problem.what}: the resolver records customers' DNS queries, which burrow "
            "never does; turn it off and restart the node agent",
        )
    for note in notes:
        report.add("note", "resolver", note)
