"""Leases, as types, and the pure step that applies a node report or the passing of time.

A lease is one device connected to one node over one protocol, held in the live store per
account (``AccountLeases``). Everything here is pure: no I/O, no clock (``Moment`` carries
the time in), no mutation (records are frozen; every step returns new ones). The service
reads the inputs, calls a step inside ``LiveStore.update`` (which may call it again), and
carries out the returned ``RecordWrite`` list afterwards. Table-tested like
``burrow.node.reconcile``.

The steps:

- ``apply_report``: one node's report, as it concerns one account: renew what the node
  shows connected, start what is new, end this node's leases it no longer shows, end lapsed
  leases anywhere, decide the limits, count the bytes of admitted connections.
- ``lapse``: end the leases no report renewed in time and decide again.
- ``attach_record``: give an opened connection record's row id to its lease.

May import: the limits decision. Nothing with I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from burrow.control.connections.limits import UNLIMITED, LeaseView, Limits, decide

WIREGUARD = "wireguard"


@dataclass(frozen=True, slots=True)
class NodePlace:
    """The node a lease is on, as connection records and the customer see it."""

    id: int
    name: str
    country: str
    city: str


@dataclass(frozen=True, slots=True)
class OpenRecord:
    """Metered mode only: the admitted stretch of a connection and its connection record.

    ``record_id`` is None while the record's row is being written (its id comes back through
    ``attach_record``). Byte counts are the stretch's totals; ``counted_bytes`` is how much
    of them the usage counters have.
    """

    started: datetime
    flushed_at: datetime
    active_at: datetime | None
    record_id: int | None = None
    rx: int = 0
    tx: int = 0
    counted_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    node: NodePlace
    protocol: str
    public_key: str
    device_id: int
    account_id: int
    subscription_id: int | None
    started: float  # live-store clock
    seq: int  # arrival order within the account
    expires: float  # live-store clock
    since: datetime  # wall time, shown only where the policy records connections
    admitted: bool = False
    reason: str | None = None
    record: OpenRecord | None = None


def peer_key(public_key: str, protocol: str = WIREGUARD) -> str:
    """One connection of a node report: the key alone for WireGuard, else protocol-prefixed."""
    return public_key if protocol == WIREGUARD else f"{protocol}:{public_key}"


def lease_id(node_id: int, public_key: str, protocol: str = WIREGUARD) -> str:
    if protocol == WIREGUARD:
        return f"{node_id}:{public_key}"
    return f"{node_id}:{protocol}:{public_key}"


@dataclass(frozen=True, slots=True)
class AccountLeases:
    """One account's live leases (by lease id, in arrival order) and its plan's limits."""

    leases: Mapping[str, Lease] = field(default_factory=dict)
    limits: Limits = UNLIMITED
    next_seq: int = 1


@dataclass(frozen=True, slots=True)
class Seen:
    """A connected peer of this report whose owner is this account."""

    public_key: str
    device_id: int
    subscription_id: int | None
    rx: int = 0
    tx: int = 0
    protocol: str = WIREGUARD  # OpenVPN and IKEv2 report through the same step


@dataclass(frozen=True, slots=True)
class Moment:
    """Time and the settings a step needs.

    ``alive``: until when (live-store clock) nodes' reports keep their leases alive. A node
    whose report changes nothing renews only that (its steady report), not each lease's own
    ``expires``, so a lease lives until the later of the two. ``others_may_live``: a node
    missing from ``alive`` may still be renewing its leases that way (a report's step knows
    only some nodes): keep its leases; otherwise (the sweep, which reads every node) its
    leases live by their own ``expires``.
    """

    now: float  # live-store clock
    wall: datetime
    ttl: float
    records: bool  # the policy keeps connection records
    flush_seconds: float
    alive: Mapping[int, float] = field(default_factory=dict)
    others_may_live: bool = False


def lapsed(lease: Lease, at: Moment) -> bool:
    """No report renewed the lease in time: neither its own node's nor the lease itself."""
    if lease.expires > at.now:
        return False
    until = at.alive.get(lease.node.id)
    if until is None:
        return not at.others_may_live
    return until <= at.now


class RecordOp(StrEnum):
    open = "open"  # insert a new record row
    update = "update"  # bring record ``record_id`` up to date
    usage_only = "usage_only"  # its row is still being written: count the usage, touch no row


@dataclass(frozen=True, slots=True)
class RecordWrite:
    """A change to a connection record (and the usage counters), done after the step."""

    op: RecordOp
    account_id: int
    lease_id: str
    record_id: int | None
    device_id: int
    node: NodePlace
    started_at: datetime
    seen_until: datetime
    ended: bool
    rx: int
    tx: int
    usage_bytes: int
    usage_sessions: int


Outcome = tuple[AccountLeases | None, list[RecordWrite]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A connection a node refused by itself at connect time (OpenVPN over its per-server
    limit): no lease, only what the customer is shown, until ``expires`` (live-store clock)."""

    device_id: int
    node_name: str
    protocol: str
    reason: str
    expires: float


@dataclass(frozen=True, slots=True)
class AccountRefusals:
    """One account's refusals, by ``lease_id`` (node, protocol, key)."""

    refusals: Mapping[str, Refusal] = field(default_factory=dict)


def note_refusals(
    state: AccountRefusals | None, fresh: Mapping[str, Refusal], now: float
) -> AccountRefusals | None:
    """The account's refusals with ``fresh`` added or renewed and the lapsed ones gone."""
    kept = {k: r for k, r in (state.refusals if state else {}).items() if r.expires > now}
    kept.update(fresh)
    return AccountRefusals(kept) if kept else None


def live_refusals(state: AccountRefusals | None, now: float) -> list[Refusal]:
    """The refusals not lapsed yet, the newest last."""
    alive = [r for r in (state.refusals.values() if state else ()) if r.expires > now]
    return sorted(alive, key=lambda r: r.expires)


# --- the steps ---------------------------------------------------------------------------


def apply_report(
    state: AccountLeases | None,
    *,
    account_id: int,
    node: NodePlace,
    seen: Sequence[Seen],
    idle_bytes: Mapping[str, tuple[int, int]],
    limits: Limits | None,
    at: Moment,
) -> Outcome:
    """One node's report as it concerns one account.

    ``seen``: the account's devices the node shows connected, in the report's order (new
    connections in one report start in that order). ``idle_bytes``: the last byte deltas of
    connections the node shows idle, by ``peer_key``. ``limits``: the account's plan limits,
    None to keep the known.
    """
    state = state or AccountLeases()
    leases = dict(state.leases)
    writes: list[RecordWrite] = []
    mine = {lease_id(node.id, s.public_key, s.protocol): s for s in seen}
    # This node's leases whose device no longer shows as connected here end now.
    for lid, lease in list(leases.items()):
        if lease.node.id == node.id and lid not in mine:
            last = idle_bytes.get(peer_key(lease.public_key, lease.protocol))
            if last is not None:
                lease = _count(lease, last[0], last[1], at)
            writes += _end(leases, lid, lease, at)
    # Leases anywhere that no report renewed in time end too.
    for lid, lease in list(leases.items()):
        if lapsed(lease, at):
            writes += _end(leases, lid, lease, at)
    next_seq = state.next_seq
    expires = at.now + at.ttl
    for lid, owner in mine.items():
        known = leases.get(lid)
        if known is None:
            leases[lid] = Lease(
                node=node,
                protocol=owner.protocol,
                public_key=owner.public_key,
                device_id=owner.device_id,
                account_id=account_id,
                subscription_id=owner.subscription_id,
                started=at.now,
                seq=next_seq,
                expires=expires,
                since=at.wall,
            )
            next_seq += 1
            continue
        subscription = known.subscription_id
        if owner.subscription_id is not None:
            subscription = owner.subscription_id
        leases[lid] = _renewed(known, expires, subscription)
    new_limits = state.limits if limits is None or not mine else limits
    writes += _decide(account_id, leases, new_limits, at)
    # This report's traffic counts for the connections admitted now: a new one was not
    # blocked yet when it moved those bytes.
    for lid, owner in mine.items():
        lease = _count(leases[lid], owner.rx, owner.tx, at)
        if lease.admitted and _flush_due(lease, at):
            lease, flushed = _flush(lease, lid, at, ended=False)
            writes += flushed
        leases[lid] = lease
    return _state(leases, new_limits, next_seq), writes


def lapse(state: AccountLeases | None, *, account_id: int, at: Moment) -> Outcome:
    """End the leases no report renewed in time; admit who may now pass."""
    if state is None:
        return None, []
    leases = dict(state.leases)
    ended = [lid for lid, lease in leases.items() if lapsed(lease, at)]
    if not ended:
        return state, []
    writes: list[RecordWrite] = []
    for lid in ended:
        writes += _end(leases, lid, leases[lid], at)
    writes += _decide(account_id, leases, state.limits, at)
    return _state(leases, state.limits, state.next_seq), writes


def attach_record(state: AccountLeases | None, lid: str, record_id: int) -> AccountLeases | None:
    """Give an opened record's row id to its lease, if that lease still waits for it."""
    if state is None:
        return None
    lease = state.leases.get(lid)
    if lease is None or lease.record is None or lease.record.record_id is not None:
        return state
    leases = dict(state.leases)
    leases[lid] = replace(lease, record=replace(lease.record, record_id=record_id))
    return replace(state, leases=leases)


def live_leases(
    state: AccountLeases | None, now: float, alive: Mapping[int, float] | None = None
) -> list[tuple[str, Lease]]:
    """The leases not lapsed yet, oldest first; ``alive`` as in ``Moment``."""
    if state is None:
        return []
    nodes = alive or {}
    found = [
        (lid, lease)
        for lid, lease in state.leases.items()
        if max(lease.expires, nodes.get(lease.node.id, 0.0)) > now
    ]
    return sorted(found, key=lambda item: item[1].seq)


# --- the parts ---------------------------------------------------------------------------


def _state(leases: dict[str, Lease], limits: Limits, next_seq: int) -> AccountLeases | None:
    return AccountLeases(leases, limits, next_seq) if leases else None


def _renewed(lease: Lease, expires: float, subscription_id: int | None) -> Lease:
    """``replace(lease, expires=..., subscription_id=...)``, which every report does to every
    lease it shows: spelled out, it costs a fifth of ``dataclasses.replace``."""
    return Lease(
        node=lease.node,
        protocol=lease.protocol,
        public_key=lease.public_key,
        device_id=lease.device_id,
        account_id=lease.account_id,
        subscription_id=subscription_id,
        started=lease.started,
        seq=lease.seq,
        expires=expires,
        since=lease.since,
        admitted=lease.admitted,
        reason=lease.reason,
        record=lease.record,
    )


def _view(lid: str, lease: Lease) -> LeaseView:
    return LeaseView(
        id=lid,
        order=(lease.started, lease.seq),
        node_id=lease.node.id,
        node_name=lease.node.name,
        protocol=lease.protocol,
        subscription_id=lease.subscription_id,
        admitted_before=lease.admitted,
        device_id=lease.device_id,
    )


def _decide(
    account_id: int, leases: dict[str, Lease], limits: Limits, at: Moment
) -> list[RecordWrite]:
    decision = decide((_view(lid, lease) for lid, lease in leases.items()), limits)
    writes: list[RecordWrite] = []
    for lid, lease in list(leases.items()):
        refusal = decision.refused.get(lid)
        admitted = refusal is None
        reason = None if refusal is None else refusal.reason
        if admitted == lease.admitted and reason == lease.reason:
            continue  # the usual report: nothing decided differently, no record to touch
        changed = replace(lease, admitted=admitted, reason=reason)
        if at.records and admitted and not lease.admitted:
            changed, opened = _open(account_id, lid, changed, at)
            writes.append(opened)
        elif at.records and not admitted and lease.admitted:
            changed, closed = _flush(changed, lid, at, ended=True)
            writes += closed
            changed = replace(changed, record=None)
        leases[lid] = changed
    return writes


def _end(leases: dict[str, Lease], lid: str, lease: Lease, at: Moment) -> list[RecordWrite]:
    del leases[lid]
    if lease.admitted and at.records:
        return _flush(lease, lid, at, ended=True)[1]
    return []


def _count(lease: Lease, rx: int, tx: int, at: Moment) -> Lease:
    """Add a report's byte deltas to an admitted lease's record (blocked traffic is not
    service; without a record nothing is counted at all)."""
    record = lease.record
    if not lease.admitted or record is None:
        return lease
    active = at.wall if (rx or tx) else record.active_at
    return replace(
        lease, record=replace(record, rx=record.rx + rx, tx=record.tx + tx, active_at=active)
    )


def _open(account_id: int, lid: str, lease: Lease, at: Moment) -> tuple[Lease, RecordWrite]:
    record = OpenRecord(started=at.wall, flushed_at=at.wall, active_at=at.wall)
    write = RecordWrite(
        op=RecordOp.open,
        account_id=account_id,
        lease_id=lid,
        record_id=None,
        device_id=lease.device_id,
        node=lease.node,
        started_at=at.wall,
        seen_until=at.wall,
        ended=False,
        rx=0,
        tx=0,
        usage_bytes=0,
        usage_sessions=1,
    )
    return replace(lease, record=record), write


def _flush_due(lease: Lease, at: Moment) -> bool:
    if lease.record is None or not at.records:
        return False
    age = (at.wall - lease.record.flushed_at).total_seconds()
    return age >= at.flush_seconds


def _flush(lease: Lease, lid: str, at: Moment, *, ended: bool) -> tuple[Lease, list[RecordWrite]]:
    record = lease.record
    if record is None:
        return lease, []
    if record.record_id is None and not ended:
        return lease, []  # its row is being written; the next flush brings it up to date
    # A connection ends when its traffic stopped, not when the idle threshold noticed.
    active = record.active_at
    seen_until = max(record.started, active) if ended and active else at.wall
    total = record.rx + record.tx
    write = RecordWrite(
        # A row still being written is left to the stale-record sweep to close.
        op=RecordOp.usage_only if record.record_id is None else RecordOp.update,
        account_id=lease.account_id,
        lease_id=lid,
        record_id=record.record_id,
        device_id=lease.device_id,
        node=lease.node,
        started_at=record.started,
        seen_until=seen_until,
        ended=ended,
        rx=record.rx,
        tx=record.tx,
        usage_bytes=total - record.counted_bytes,
        usage_sessions=0,
    )
    flushed = replace(record, counted_bytes=total, flushed_at=at.wall)
    return replace(lease, record=flushed), [write]
