"""The abuse desk: complaints about traffic from a node's shared egress address.

An administrator records a complaint (the clause of the terms it would break, who complained,
the egress address, port and time they saw, the evidence) or many at once from a CSV of plain
``address,port,time`` lines. A trace answers as far as the policy allows:

- deterministic NAT (metered): the port gives the block, the block gives the tunnel address
  (``burrow.wire.nat``, the same arithmetic the node's NAT rules use) and the devices domain's
  history gives the device that held that address at that time, and its account;
- random NAT (strict): every connection gets a random port on a shared address and nothing is
  recorded, so the answer is the reason no trace is possible, in words to send on.

An administrator then warns, suspends or terminates the traced account for the complaint's
clause; the holder gets a notice by email. Every action takes its ``actor`` and writes the
admin audit trail in the same unit of work.

Errors::

    BurrowError
    ├── ComplaintNotFound (404)
    ├── InvalidComplaint (422)       a bad CSV line, a time in the future or without a zone
    ├── UnknownClause (422)          from policy.clauses
    └── NothingToAct (409)           not traced to an account, or already actioned
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.abuse.repository import ComplaintRepository
from burrow.control.abuse.schemas import (
    IMPORT_MAX_LINES,
    ComplaintAct,
    ComplaintImportIn,
    ComplaintIn,
)
from burrow.control.accounts.service.operators import operator_service
from burrow.control.audit.service import Actor, admin_audit, require_administrator
from burrow.control.db import after_commit
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.service import device as device_service
from burrow.control.devices.service import keeps_address_history
from burrow.control.errors import Conflict, InvalidInput, NotFound
from burrow.control.models import (
    AbuseComplaint,
    ComplaintAction,
    ComplaintStatus,
    Node,
    utcnow,
)
from burrow.control.policy.clauses import UnknownClause, terms_clauses
from burrow.control.runtime import Runtime
from burrow.wire.nat import (
    FIRST_DEVICE_OFFSET,
    block_for_offset,
    capacity,
    offset_for_port,
    tunnel_address,
)


class ComplaintNotFound(NotFound):
    def __init__(self, complaint_id: int) -> None:
        super().__init__(f"There is no abuse complaint {complaint_id}.")


class InvalidComplaint(InvalidInput):
    pass


class NothingToAct(Conflict):
    pass


# A complaint may name a time this far ahead of our clock (the complainant's clock may run fast).
CLOCK_SLACK = timedelta(minutes=5)

Outcome = Literal["traced", "not_found", "untraceable"]

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "emails"),
    autoescape=False,  # plain-text mail; nothing here is HTML  # noqa: S701
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Trace:
    complaint: AbuseComplaint
    outcome: Outcome
    reason: str
    account_id: int | None = None
    account_email: str | None = None
    device_id: int | None = None
    device_name: str | None = None
    tunnel_ipv4: str | None = None
    port_block: str | None = None


@dataclass(frozen=True)
class NatCapacity:
    """What a node's port blocks hold under deterministic NAT, for the fleet page."""

    blocks: int
    ports_per_device: int
    refused: int
    message: str | None


def parse_time(text: str) -> datetime:
    """A notice's time: ISO 8601 with a zone (``Z``, ``+01:00`` or `` UTC``), or Unix seconds."""
    value = text.strip()
    if value.isdigit():
        return datetime.fromtimestamp(int(value), UTC)
    if value.upper().endswith(" UTC") or value.upper().endswith(" GMT"):
        value = value[:-4].strip() + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"'{text.strip()}' is not a time; write it as 2026-12-07T05:00:00Z"
        ) from None
    if when.tzinfo is None:
        raise ValueError(
            f"the time '{text.strip()}' has no time zone; add Z for UTC (or its offset)"
        )
    return when.astimezone(UTC)


def parse_notices(text: str) -> list[tuple[str, int, datetime]]:
    """The ``address,port,time`` lines of a CSV; every bad line is named at once."""
    found: list[tuple[str, int, datetime]] = []
    problems: list[str] = []
    lines = text.splitlines()
    if len(lines) > IMPORT_MAX_LINES:
        raise InvalidComplaint(
            f"The file has {len(lines)} lines; import at most {IMPORT_MAX_LINES} at once.",
            field="csv",
        )
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() in {"address", "ip", "ip address", "source ip"}:
            continue  # a header line
        if len(cells) != 3:
            problems.append(f"line {number}: expected address,port,time, found {len(cells)} fields")
            continue
        address, port, when = cells
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            problems.append(f"line {number}: '{address}' is not an IP address")
            continue
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            problems.append(f"line {number}: '{port}' is not a port (1 to 65535)")
            continue
        try:
            found.append((address, int(port), parse_time(when)))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise InvalidComplaint(
            "Nothing was imported. " + "; ".join(problems[:20]), field="csv", lines=problems
        )
    if not found:
        raise InvalidComplaint("The file holds no address,port,time line.", field="csv")
    return found


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class AbuseService:
    # --- recording ----------------------------------------------------------------------------

    async def record(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        data: ComplaintIn,
        now: datetime | None = None,
    ) -> AbuseComplaint:
        complaints = await self._record(
            session,
            runtime,
            actor,
            data.clause,
            data.source,
            data.evidence,
            [(data.egress_ip, data.port, data.seen_at)],
            now,
        )
        return complaints[0]

    async def import_csv(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        data: ComplaintImportIn,
        now: datetime | None = None,
    ) -> list[AbuseComplaint]:
        """One complaint per line; all of them or (on any bad line) none."""
        notices = parse_notices(data.csv)
        return await self._record(
            session, runtime, actor, data.clause, data.source, data.evidence, notices, now
        )

    async def _record(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        clause: str,
        source: str,
        evidence: str,
        notices: Sequence[tuple[str, int, datetime]],
        now: datetime | None,
    ) -> list[AbuseComplaint]:
        require_administrator(actor)
        clause = self._clause(runtime, clause)
        latest = (now or utcnow()) + CLOCK_SLACK
        for _address, _port, seen_at in notices:
            if seen_at > latest:
                raise InvalidComplaint(
                    f"The time {_when(seen_at)} is in the future; check the complaint's time zone.",
                    field="seen_at",
                )
        complaints = [
            AbuseComplaint(
                clause=clause,
                source=source.strip(),
                egress_ip=address,
                port=port,
                seen_at=seen_at,
                evidence=evidence,
                status=ComplaintStatus.open,
            )
            for address, port, seen_at in notices
        ]
        await ComplaintRepository(session).add_all(complaints)
        for complaint in complaints:
            await admin_audit.record(
                session,
                actor,
                "abuse.record",
                "abuse_complaint",
                complaint.id,
                None,
                {"clause": clause, "source": complaint.source},
            )
        return complaints

    @staticmethod
    def _clause(runtime: Runtime, clause: str) -> str:
        clauses = terms_clauses(runtime.policy)
        if clause.strip() not in clauses:
            raise UnknownClause(
                f"'{clause}' is not a clause of the terms (version "
                f"{runtime.policy.terms.version}); pick one of: " + "; ".join(clauses[:40]),
                field="clause",
            )
        return clause.strip()

    # --- reading ------------------------------------------------------------------------------

    async def naming(self, session: AsyncSession, account_id: int) -> Sequence[AbuseComplaint]:
        """The complaints a trace tied to the account (for its data export)."""
        return await ComplaintRepository(session).naming(account_id)

    async def get(self, session: AsyncSession, complaint_id: int) -> AbuseComplaint:
        complaint = await ComplaintRepository(session).get(complaint_id)
        if complaint is None:
            raise ComplaintNotFound(complaint_id)
        return complaint

    async def page(
        self,
        session: AsyncSession,
        status: ComplaintStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[Sequence[AbuseComplaint], int]:
        limit = max(1, min(limit, 200))
        return await ComplaintRepository(session).page(status, limit, max(0, offset))

    # --- tracing ------------------------------------------------------------------------------

    async def trace(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        complaint_id: int,
        now: datetime | None = None,
    ) -> Trace:
        """Find who held the complaint's port then, as far as the policy allows; the complaint
        keeps what was found (or why nothing can be)."""
        require_administrator(actor)
        repository = ComplaintRepository(session)
        complaint = await repository.get(complaint_id, lock=True)
        if complaint is None:
            raise ComplaintNotFound(complaint_id)
        trace = await self._find(session, runtime, complaint, now or utcnow())
        if complaint.status is not ComplaintStatus.actioned:
            complaint.status = ComplaintStatus(trace.outcome)
            complaint.account_id = trace.account_id
            complaint.device_id = trace.device_id
        complaint.finding = trace.reason[:1000]
        await repository.flush()
        await admin_audit.record(
            session,
            actor,
            "abuse.trace",
            "abuse_complaint",
            complaint.id,
            None,
            {"outcome": trace.outcome, "account_id": trace.account_id},
        )
        return trace

    async def _find(
        self, session: AsyncSession, runtime: Runtime, complaint: AbuseComplaint, now: datetime
    ) -> Trace:
        policy = runtime.policy
        address, port, seen = complaint.egress_ip, complaint.port, _when(complaint.seen_at)
        provider = policy.provider.name
        nodes = await ComplaintRepository(session).nodes_with_egress(address)
        if not nodes:
            return Trace(
                complaint,
                "not_found",
                f"{address} is not the egress address of any of {provider}'s servers, so the "
                "traffic did not come from our network.",
            )
        if not keeps_address_history(policy):
            return Trace(complaint, "untraceable", self._impossible(runtime, address, port, seen))
        days = policy.privacy.address_history_retention_days or 0
        if complaint.seen_at < now - timedelta(days=days):
            return Trace(
                complaint,
                "not_found",
                f"The complaint names {seen}, more than {days} days ago. {provider} keeps the "
                f"history of which device used which ports for {days} days only, so nothing is "
                "left to trace it with.",
            )
        for node in nodes:
            found = await self._holder(session, runtime, complaint, node)
            if found is not None:
                return found
        return Trace(
            complaint,
            "not_found",
            f"No device used port {port} of {address} at {seen}: the port lies in no device's "
            "block then.",
        )

    async def _holder(
        self, session: AsyncSession, runtime: Runtime, complaint: AbuseComplaint, node: Node
    ) -> Trace | None:
        network = desired_state_service.network(runtime, node)
        nat = network.nat
        if nat is None or nat.mode != "deterministic":
            return None
        # Which of the node's addresses the complaint names: its blocks follow the earlier ones'.
        addresses = node.egress_ipv4_addresses
        named = complaint.egress_ip
        egress_index = addresses.index(named) if named in addresses else 0  # 0: IPv6's one
        offset = offset_for_port(nat, egress_index, complaint.port)
        if offset is None:
            return None
        block = block_for_offset(nat, offset, max(1, len(addresses)))
        if block is None:
            return None
        ipv4 = tunnel_address(network.tunnel_ipv4, offset)
        holders = await device_service.address_holders(session, ipv4, complaint.seen_at)
        if not holders:
            return None
        if len(holders) > 1:
            return Trace(
                complaint,
                "not_found",
                f"Two devices held tunnel address {ipv4} (the block of port {complaint.port}) "
                f"within the second {_when(complaint.seen_at)}: the complaint's time cannot tell "
                "them apart, so no account is named.",
            )
        holder = holders[0]
        account = await operator_service.get(session, holder.account_id)
        until = _when(holder.held_until) if holder.held_until is not None else "now"
        ports = f"{complaint.egress_ip}:{block.ports}"
        return Trace(
            complaint,
            "traced",
            f"Port {complaint.port} of {complaint.egress_ip} belongs to the port block {ports} "
            f"of tunnel address {ipv4}, which device '{holder.device_name}' (device "
            f"{holder.device_id}) of account {account.id} ({account.email}) held from "
            f"{_when(holder.held_from)} to {until}.",
            account_id=account.id,
            account_email=account.email,
            device_id=holder.device_id,
            device_name=holder.device_name,
            tunnel_ipv4=ipv4,
            port_block=ports,
        )

    @staticmethod
    def _impossible(runtime: Runtime, address: str, port: int, seen: str) -> str:
        provider = runtime.policy.provider.name
        strict = runtime.policy.privacy.mode == "strict"
        promise = (
            " This is what our no-logs promise means: there is no record to hand over."
            if strict
            else ""
        )
        return (
            f"{provider} cannot trace this complaint to a customer, by construction. {address} "
            "is a shared address: every customer of that server leaves through it, and each "
            f"connection gets a random source port, so port {port} at {seen} points at no one. "
            "No record is kept of which customer used which port or tunnel address, or when, so "
            f"there is nothing to look up.{promise}"
        )

    # --- the nodes' port blocks ---------------------------------------------------------------

    async def nat_capacity(
        self, session: AsyncSession, runtime: Runtime, node: Node
    ) -> NatCapacity | None:
        """How many devices ``node``'s blocks hold and how many it refuses; None: the policy's
        NAT has no blocks."""
        nat = desired_state_service.network(runtime, node).nat
        if nat is None or nat.mode != "deterministic":
            return None
        addresses = node.egress_ipv4_addresses
        held = capacity(nat, max(1, len(addresses)))
        refused = await device_service.count_beyond_index(session, FIRST_DEVICE_OFFSET + held)
        message = None
        if refused:
            if len(addresses) > 1:
                where = f"its {len(addresses)} egress addresses ({', '.join(addresses)}) hold"
            elif addresses:
                where = f"{addresses[0]} holds"
            else:
                where = "its interface's address holds"
            message = (
                f"{node.name} refuses {refused} device{'s' if refused != 1 else ''}: each device "
                f"leaves from a block of {nat.ports_per_device} ports of its own, and {where} "
                f"{held} blocks. Their traffic is dropped at the node; another egress address "
                "for it, or fewer ports per device in the policy, give more blocks."
            )
        elif node.egress_ipv4 is None:
            message = (
                f"{node.name} has no egress address on record: its devices leave from fixed "
                "blocks of its interface's address, but a complaint naming that address cannot "
                "be matched to this node."
            )
        return NatCapacity(held, nat.ports_per_device, refused, message)

    # --- acting -------------------------------------------------------------------------------

    async def act(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        complaint_id: int,
        data: ComplaintAct,
    ) -> AbuseComplaint:
        """Warn, suspend or terminate the traced account for the complaint's clause; the holder
        gets a notice once the unit of work commits."""
        require_administrator(actor)
        repository = ComplaintRepository(session)
        complaint = await repository.get(complaint_id, lock=True)
        if complaint is None:
            raise ComplaintNotFound(complaint_id)
        if complaint.status is ComplaintStatus.actioned:
            done = complaint.action.value if complaint.action is not None else "handled"
            raise NothingToAct(
                f"Complaint {complaint.id} was already acted on ({done}); nothing was done."
            )
        if complaint.status is not ComplaintStatus.traced or complaint.account_id is None:
            raise NothingToAct(
                f"Complaint {complaint.id} is not traced to an account, so there is no one to "
                "act on; trace it first."
            )
        action = ComplaintAction(data.action)
        account_id = complaint.account_id
        reason = data.reason.strip()
        shown = f"Abuse complaint {complaint.id} ({complaint.clause}): {reason}"
        if action is ComplaintAction.suspend:
            account = await operator_service.suspend(session, runtime, actor, account_id, shown)
        elif action is ComplaintAction.terminate:
            account = await operator_service.terminate(
                session, runtime, actor, account_id, reason, clause=complaint.clause
            )
        else:
            account = await operator_service.get(session, account_id)
        complaint.status = ComplaintStatus.actioned
        complaint.action = action
        complaint.actioned_at = utcnow()
        await repository.flush()
        await admin_audit.record(
            session,
            actor,
            f"abuse.{action.value}",
            "account",
            account_id,
            reason,
            {"complaint_id": complaint.id, "clause": complaint.clause},
        )
        subject, body = self.notice(runtime, complaint, action, reason)
        to = account.email
        after_commit(session, lambda: runtime.mailer.send(to, subject, body))
        return complaint

    @staticmethod
    def notice(
        runtime: Runtime, complaint: AbuseComplaint, action: ComplaintAction, reason: str
    ) -> tuple[str, str]:
        """The subject and body of the notice the account holder gets."""
        text = _templates.get_template("notice.txt").render(
            provider=runtime.policy.provider.name,
            contact=runtime.policy.provider.contact_email,
            action=action.value,
            clause=complaint.clause,
            reason=reason,
            complaint_id=complaint.id,
        )
        subject, _, body = text.partition("\n")
        return subject.strip(), body


abuse = AbuseService()
