"""Connections: live leases, connection limits across the fleet, and metered-mode records.

A lease is one device connected to one node over one protocol. It lives only in the RAM live
store (``runtime.live``), renewed by every node report that shows the device connected, and
ends when a report shows it idle or when no report renews it for
``connection_lease_ttl_seconds``. After every report the account's leases go through
``limits.decide``; the refused ones form the node's blocked set, which the node API returns in
``ReportAck.blocked`` until the lease frees or a slot opens.

Privacy: under ``privacy.mode = "strict"`` nothing of a connection leaves RAM, and nothing is
logged. Under ``"metered"`` each admitted connection gets a ``connection_records`` row (opened
at admission, brought up to date every ``connection_record_flush_seconds``, closed at the end)
and, where a refund rule needs them, the account's usage counters grow (they belong to the
refunds domain: ``burrow.control.refunds.usage``).

Fair use (shaping the heaviest users of a busy node) is not done here: the node agent
measures its peers in its own RAM and shapes them itself (``burrow.node.fairuse``), so no
per-customer rate ever needs to reach the control plane for it.

Live store (``LiveStore``, typed and frozen values; ``leases.py`` holds the types):
``connections:account:{id}`` -> ``AccountLeases``: its leases by lease id and its limits
``connections:node:{id}``    -> ``NodeIndex``: public key -> account id of the node's leases
``connections:refused:{id}`` -> ``AccountRefusals``: connections nodes refused by themselves
(an OpenVPN client over its per-server limit), shown on the device until no report renews
them for ``connection_lease_ttl_seconds``; a device key, protocol, node and reason, no more
``connections:alive:{id}``   -> until when the node's reports keep its leases alive
``connections:steady:{id}``  -> ``Steady``: what the node's last full report found and answered

Every change to an account's leases is one atomic live-store step whose function is pure
(``leases.apply_report`` / ``lapse`` / ``attach_record``), so two reports touching one account
never lose each other's changes, in process or across replicas. A node report is one such
step for all it touches (``LiveStore.update_indexed``: the node's index and every account it
names, one Redis transaction), so its cost in round trips does not grow with its accounts.

Steady reports. Almost every report shows the same devices connected as the node's last one.
Such a report (same connected set and plans, no connection records kept) skips the owners'
query and the lease step when nothing it relied on changed since the last full report: the
accounts' lease values (their stamps: ``LiveStore.stamps``; every write of one gives it a new
stamp), their access (``ACCESS_STAMPS``, renewed by ``desired_state.refresh_account`` after
each commit that changes what the account's devices are served) and the liveness of the
other nodes their leases are on. It renews only the node's liveness and repeats the last
answer. A lease therefore lives until the later of its own ``expires`` and its node's
liveness (``leases.lapsed``). At least every ``STEADY_MAX_AGE_SECONDS`` a report is a full one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.connections.leases import (
    AccountLeases,
    AccountRefusals,
    Lease,
    Moment,
    NodePlace,
    RecordOp,
    RecordWrite,
    Refusal,
    Seen,
    apply_report,
    attach_record,
    lapse,
    lease_id,
    live_leases,
    live_refusals,
    note_refusals,
    peer_key,
)
from burrow.control.connections.limits import Limits, node_refusal_reason
from burrow.control.connections.repository import ConnectionRepository, PeerOwner
from burrow.control.connections.schemas import (
    ConnectionList,
    ConnectionRead,
    ConnectionRecordList,
    ConnectionRecordRead,
    ConnectionState,
)
from burrow.control.desired_state.service import ACCESS_STAMPS
from burrow.control.live import Kind, LiveStore
from burrow.control.models import Account, ConnectionRecord, Node, utcnow
from burrow.control.refunds.usage.service import OpenBytes
from burrow.control.refunds.usage.service import usage as usage_service
from burrow.control.runtime import Runtime
from burrow.wire import WIREGUARD, BlockedConnection, NodeReport, PeerStatus

# A backstop only: the sweep job and the reports end leases on time; this frees the RAM of an
# account no report mentions any more even when the scheduler is off.
STATE_BACKSTOP_SECONDS = 3600.0
# An open record not brought up to date for this many flush intervals was left by a crash.
STALE_FLUSHES = 2


# A node's steady reports skip the work for at most this long: then one report does it all
# again (renewing each lease's own expiry and its state's backstop, and bounding how long a
# change missed by a race between a commit and its stamp can go unseen).
STEADY_MAX_AGE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class NodeIndex:
    """The leases a node holds: public key -> account id."""

    keys: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Mark:
    """One account as the node's last report that worked on it left it.

    ``keys``: its connections on this node (``peer_key``), sorted. ``leases`` and ``access``:
    the stamps of its leases and of its access (``ACCESS_STAMPS``) then. ``blocked`` and
    ``cuts``: its share of the node's answer. ``elsewhere``: the other nodes it holds leases
    on, whose liveness the next report reads (one of them falling silent may admit one here).
    """

    keys: tuple[str, ...]
    leases: int
    access: int
    blocked: tuple[str, ...] = ()
    cuts: tuple[BlockedConnection, ...] = ()
    elsewhere: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Steady:
    """What a node's reports found, by account, so that the next one works only on what
    changed. ``plans``: the fingerprint of the plans' limits they were decided under.
    ``checked``: when the last report that worked on every account ran (live-store clock).
    ``strangers``: a digest of the connected keys no account owns (not served, or not any
    more): only whether that set changed matters, and no key of it is kept."""

    plans: str
    checked: float
    accounts: Mapping[str, Mark]
    strangers: str = ""


@dataclass(frozen=True, slots=True)
class Changes:
    """What a report changes against the node's ``Steady``: accounts to work on again, and
    connected keys nobody has looked up yet; the liveness of the nodes it read."""

    accounts: set[str]
    new_keys: list[str]
    alive: dict[int, float]

    @property
    def none(self) -> bool:
        return not self.accounts and not self.new_keys


ACCOUNT_LEASES = Kind("connections:account:", AccountLeases, versioned=True)
NODE_INDEX = Kind("connections:node:", NodeIndex)
ACCOUNT_REFUSALS = Kind("connections:refused:", AccountRefusals)
# Until when a node's reports keep its leases alive (live-store clock).
NODE_ALIVE = Kind("connections:alive:", float)
NODE_STEADY = Kind("connections:steady:", Steady)


def _utcnow() -> datetime:
    """Wall time of records (tests replace it; leases use the live store's own clock)."""
    return utcnow()


def _store(runtime: Runtime) -> LiveStore:
    return runtime.live


@dataclass(frozen=True, slots=True)
class Blocked:
    """What a report's answer tells the node: WireGuard keys to block, other sessions to cut."""

    keys: tuple[str, ...]
    connections: tuple[BlockedConnection, ...]


@dataclass(frozen=True)
class DeviceStatus:
    state: ConnectionState
    reason: str | None = None
    node_name: str | None = None


IDLE = DeviceStatus("idle")


class ConnectionService:
    # --- what the node report drives -------------------------------------------------------

    @staticmethod
    def _moment(runtime: Runtime) -> Moment:
        settings = runtime.settings
        return Moment(
            now=runtime.live.clock(),
            wall=_utcnow(),
            ttl=settings.connection_lease_ttl_seconds,
            records=runtime.policy.privacy.keeps_connection_records,
            flush_seconds=settings.connection_record_flush_seconds,
        )

    async def observe_report(
        self, session: AsyncSession, runtime: Runtime, node: Node, report: NodeReport
    ) -> Blocked:
        """Renew, start and end this node's leases, apply the limits; what to block or cut.

        The report is compared with what the node's earlier reports found (``Steady``): only
        the accounts whose connections here, leases, access or other nodes changed since are
        worked on again. One query maps their keys to devices, accounts and plans; then they
        all change in one atomic step of the live store. A report that changes nothing (most
        of them) renews only the node's liveness and repeats the answer: a few small reads
        of the live store, no SQL. With connection records kept, every report works on every
        account (their bytes count); and every ``STEADY_MAX_AGE_SECONDS`` one does anyway.
        """
        store = _store(runtime)
        at = self._moment(runtime)
        # One entry per connection: a device may be on WireGuard and OpenVPN at once.
        peers = {peer_key(peer.public_key, peer.protocol): peer for peer in report.peers}
        plans = _plans_fingerprint(runtime)
        steady: Steady | None = None
        changes: Changes | None = None
        if not at.records:
            steady = await store.read(NODE_STEADY, str(node.id))
            if steady is not None and (
                steady.plans != plans or at.now - steady.checked >= STEADY_MAX_AGE_SECONDS
            ):
                steady = None
        if steady is not None:
            changes = await _changes(store, steady, peers, at)
            if changes.none and not report.refused:
                await store.put(NODE_ALIVE, str(node.id), at.now + at.ttl, ttl=at.ttl)
                return _answer(steady.accounts)
        return await self._work(session, runtime, node, report, peers, at, steady, changes)

    async def _work(
        self,
        session: AsyncSession,
        runtime: Runtime,
        node: Node,
        report: NodeReport,
        peers: Mapping[str, PeerStatus],
        at: Moment,
        steady: Steady | None,
        changes: Changes | None,
    ) -> Blocked:
        """Work on the accounts ``changes`` names (all of them without a ``steady``)."""
        store = _store(runtime)
        repository = ConnectionRepository(session)
        marks: dict[str, Mark] = dict(steady.accounts) if steady else {}
        scope: set[str] | None = None if changes is None else set(changes.accounts)
        if changes is None:
            wanted = {peer.public_key for peer in peers.values() if peer.connected}
        else:
            wanted = {peers[k].public_key for k in changes.new_keys}
            for account in changes.accounts:
                wanted |= {peers[k].public_key for k in _here(peers, account, marks)}
        wanted |= {refusal.public_key for refusal in report.refused}
        owners = await repository.peer_owners(sorted(wanted), _utcnow()) if wanted else {}
        if scope is not None:
            # A new key of an account that has other connections here: those count too.
            found = {str(o.account_id) for o in owners.values()}
            more = found & (set(marks) - scope)
            scope |= found
            extra = {peers[k].public_key for a in more for k in _here(peers, a, marks)} - wanted
            if extra:
                owners.update(await repository.peer_owners(sorted(extra), _utcnow()))
        alive = dict(changes.alive) if changes else {}
        at = replace(at, alive=alive, others_may_live=True)
        place = NodePlace(node.id, node.name, node.country, node.city)
        by_account: dict[int, list[Seen]] = {}
        plans: dict[int, PeerOwner] = {}
        # In the report's order: connections new in the same report start in that order.
        for peer in peers.values():
            owner = owners.get(peer.public_key)
            if owner is None or not peer.connected:
                continue
            by_account.setdefault(owner.account_id, []).append(
                Seen(
                    owner.public_key,
                    owner.device_id,
                    owner.subscription_id,
                    peer.rx_bytes,
                    peer.tx_bytes,
                    protocol=peer.protocol,
                )
            )
            plans.setdefault(owner.account_id, owner)
        idle_bytes = {
            key: (peer.rx_bytes, peer.tx_bytes) for key, peer in peers.items() if not peer.connected
        }
        writes: list[RecordWrite] = []
        limits: dict[tuple[str | None, int | None], Limits] = {}
        counters = usage_service.counters_on(runtime)
        # Each account once, and each of its leases a bounded number of times: the report
        # costs O(the connections it works on), never a scan of the node per account. The
        # node's lease index and all those accounts' leases change in one step of the live
        # store (one transaction in Redis).
        for plan in plans.values():
            known = (plan.plan_code, plan.connection_limit)
            if known not in limits:
                limits[known] = self._plan_limits(runtime, plan)
        step = _report_step(node.id, place, by_account, plans, limits, idle_bytes, at, scope)
        stamps: dict[str, int] = {}
        results = await store.update_indexed(
            NODE_INDEX,
            str(node.id),
            ACCOUNT_LEASES,
            partial(_accounts_of, by_account, scope),
            step,
            ttl=STATE_BACKSTOP_SECONDS,
            stamps=stamps,
        )
        if scope is None:
            marks = {}
        fresh: dict[str, Mark] = {}
        for account_id, (state, more_writes) in results.items():
            writes += more_writes
            if counters:
                await usage_service.note_open(runtime, account_id, _open_bytes(state))
            key = str(account_id)
            marks.pop(key, None)
            mark = _mark(state, node.id, stamps.get(key, 0), at)
            if mark is not None:
                fresh[key] = mark
        await store.put(NODE_ALIVE, str(node.id), at.now + at.ttl, ttl=at.ttl)
        await self._note_refusals(runtime, store, report, owners, node, at)
        await self._write_records(session, runtime, writes)
        access = await store.stamps(ACCESS_STAMPS, list(fresh))
        for (key, mark), stamp in zip(fresh.items(), access, strict=True):
            marks[key] = replace(mark, access=stamp)
        if not at.records:
            # The connected keys no account owns now: none of them is kept, only a digest.
            owned = {k for mark in marks.values() for k in mark.keys}
            strangers = [k for k, p in peers.items() if p.connected and k not in owned]
            await store.put(
                NODE_STEADY,
                str(node.id),
                Steady(
                    plans=_plans_fingerprint(runtime),
                    checked=steady.checked if steady and scope is not None else at.now,
                    accounts=marks,
                    strangers=_digest_of(strangers),
                ),
                ttl=STEADY_MAX_AGE_SECONDS,
            )
        # The same answer ``blocked_on`` and ``blocked_connections_on`` read back.
        return _answer(marks)

    async def _note_refusals(
        self,
        runtime: Runtime,
        store: LiveStore,
        report: NodeReport,
        owners: Mapping[str, PeerOwner],
        node: Node,
        at: Moment,
    ) -> None:
        """Keep what the node refused by itself, for the device's panel (no lease, no limit)."""
        fresh: dict[int, dict[str, Refusal]] = {}
        for refused in report.refused:
            owner = owners.get(refused.public_key)
            if owner is None or refused.protocol == WIREGUARD:
                # Not a device the control plane serves, or a protocol that refuses nothing
                # at connect time (a WireGuard block is the control plane's own): ignored.
                continue
            lid = lease_id(node.id, refused.public_key, refused.protocol)
            # The words are the control plane's own, from the plan: a node (which may be
            # hostile) chooses only whether a device was refused, never what its owner reads.
            limit = self._plan_limits(runtime, owner).per_server.get(refused.protocol)
            reason = node_refusal_reason(limit, refused.protocol, node.name)
            fresh.setdefault(owner.account_id, {})[lid] = Refusal(
                owner.device_id, node.name, refused.protocol, reason, at.now + at.ttl
            )
        for account_id, refusals in fresh.items():
            await store.update(
                ACCOUNT_REFUSALS,
                str(account_id),
                _refusal_step(refusals, at.now),
                ttl=at.ttl,
            )

    @staticmethod
    def _plan_limits(runtime: Runtime, owner: PeerOwner) -> Limits:
        if owner.plan_code is None:
            return Limits()
        section = runtime.policy.plans.get(owner.plan_code)
        per_server = dict(section.connections_per_server) if section is not None else {}
        return Limits(simultaneous=owner.connection_limit, per_server=per_server)

    # --- metered mode: records -------------------------------------------------------------

    @staticmethod
    def _records_on(runtime: Runtime) -> bool:
        return runtime.policy.privacy.keeps_connection_records

    async def _write_records(
        self, session: AsyncSession, runtime: Runtime, writes: list[RecordWrite]
    ) -> None:
        if not writes:
            return
        repository = ConnectionRepository(session)
        counters = usage_service.counters_on(runtime)
        tally = usage_service.tally(session, runtime)
        opened: dict[tuple[int, str], int] = {}
        for write in writes:
            try:
                async with session.begin_nested():
                    record_id = await self._write_one(repository, write)
                    if counters:
                        await tally.add(
                            write.account_id,
                            bytes_total=write.usage_bytes,
                            sessions=write.usage_sessions,
                            at=write.seen_until,
                        )
            except IntegrityError:
                continue  # the account or device was deleted meanwhile: nothing to keep
            if write.op == RecordOp.open and record_id is not None:
                opened[(write.account_id, write.lease_id)] = record_id
        # Give the opened rows' ids back to their leases, if those still run.
        store = _store(runtime)
        for (account_id, lid), record_id in opened.items():
            await store.update(
                ACCOUNT_LEASES,
                str(account_id),
                _attach_step(lid, record_id),
                ttl=STATE_BACKSTOP_SECONDS,
            )

    @staticmethod
    async def _write_one(repository: ConnectionRepository, write: RecordWrite) -> int | None:
        duration = max(0, int((write.seen_until - write.started_at).total_seconds()))
        ended_at = write.seen_until if write.ended else None
        if write.op == RecordOp.open:
            return await repository.add_record(
                ConnectionRecord(
                    account_id=write.account_id,
                    device_id=write.device_id,
                    node_name=write.node.name,
                    node_country=write.node.country,
                    node_city=write.node.city,
                    started_at=write.started_at,
                    ended_at=ended_at,
                    duration_seconds=duration,
                    rx_bytes=write.rx,
                    tx_bytes=write.tx,
                )
            )
        if write.op == RecordOp.update and write.record_id is not None:
            await repository.update_record(
                write.record_id,
                duration_seconds=duration,
                rx_bytes=write.rx,
                tx_bytes=write.tx,
                ended_at=ended_at,
            )
        return None

    # --- reading the live store ----------------------------------------------------------------

    @staticmethod
    async def _live(runtime: Runtime, account_id: int) -> list[tuple[str, Lease]]:
        store = _store(runtime)
        state = await store.read(ACCOUNT_LEASES, str(account_id))
        if state is None:
            return []
        alive = await _liveness(store, {lease.node.id for lease in state.leases.values()})
        return live_leases(state, store.clock(), alive)

    async def blocked_on(self, runtime: Runtime, node_id: int) -> tuple[str, ...]:
        """Public keys this node must keep blocked on WireGuard now, sorted."""
        index = await _store(runtime).read(NODE_INDEX, str(node_id)) or NodeIndex()
        blocked = []
        for account_id in sorted(set(index.keys.values())):
            for _lid, lease in await self._live(runtime, account_id):
                if lease.node.id == node_id and not lease.admitted and lease.protocol == WIREGUARD:
                    blocked.append(lease.public_key)
        return tuple(sorted(blocked))

    async def blocked_connections_on(
        self, runtime: Runtime, node_id: int
    ) -> tuple[BlockedConnection, ...]:
        """Connections over other protocols this node must cut now, with the reason."""
        index = await _store(runtime).read(NODE_INDEX, str(node_id)) or NodeIndex()
        blocked = []
        for account_id in sorted(set(index.keys.values())):
            for _lid, lease in await self._live(runtime, account_id):
                if lease.node.id == node_id and not lease.admitted and lease.protocol != WIREGUARD:
                    blocked.append(_cut(lease))
        return _sorted_cuts(blocked)

    # --- what the customer sees --------------------------------------------------------------

    async def device_statuses(self, runtime: Runtime, account_id: int) -> dict[int, DeviceStatus]:
        """Each connected or blocked device of the account; a device not named is idle.

        Connected wins over blocked; a lease the control plane blocked over a refusal the node
        made by itself (the newest of those)."""
        statuses: dict[int, DeviceStatus] = {}
        for _lid, lease in await self._live(runtime, account_id):
            device_id = lease.device_id
            if lease.admitted:
                current = statuses.get(device_id)
                if current is None or current.state != "connected":
                    statuses[device_id] = DeviceStatus("connected", None, lease.node.name)
            elif device_id not in statuses:
                statuses[device_id] = DeviceStatus("blocked", lease.reason, lease.node.name)
        store = _store(runtime)
        refused: dict[int, DeviceStatus] = {}
        state = await store.read(ACCOUNT_REFUSALS, str(account_id))
        for refusal in live_refusals(state, store.clock()):
            refused[refusal.device_id] = DeviceStatus("blocked", refusal.reason, refusal.node_name)
        for device_id, status in refused.items():
            statuses.setdefault(device_id, status)
        return statuses

    async def device_status(
        self, runtime: Runtime, account_id: int, device_id: int
    ) -> DeviceStatus:
        return (await self.device_statuses(runtime, account_id)).get(device_id, IDLE)

    async def current(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> ConnectionList:
        names = await ConnectionRepository(session).device_names(account.id)
        metered = self._records_on(runtime)
        connections = [
            ConnectionRead(
                device_id=lease.device_id,
                device_name=names.get(lease.device_id),
                node_name=lease.node.name,
                node_country=lease.node.country,
                node_city=lease.node.city,
                protocol=lease.protocol,
                state="connected" if lease.admitted else "blocked",
                reason=lease.reason,
                connected_since=lease.since if metered else None,
            )
            for _lid, lease in await self._live(runtime, account.id)
        ]
        idle = runtime.settings.connection_idle_seconds
        minutes = max(1, round(idle / 60))
        note = (
            f"A device counts as connected from its first handshake with a server until "
            f"{minutes} minute{'s' if minutes != 1 else ''} after its last one. "
            "This list lives in memory only"
            + ("." if metered else " and shows no times: nothing of it is recorded.")
        )
        return ConnectionList(connections=connections, note=note)

    async def records(
        self, session: AsyncSession, runtime: Runtime, account: Account, limit: int
    ) -> ConnectionRecordList:
        privacy = runtime.policy.privacy
        if not privacy.keeps_connection_records:
            return ConnectionRecordList(
                mode=privacy.mode,
                recorded=False,
                statement="Nothing is recorded: this provider keeps no record of when, where "
                "or how much you connect. Only the connections open right now are known, in "
                "memory, to enforce your plan's limits.",
                records=[],
            )
        days = privacy.connection_record_retention_days
        rows = await ConnectionRepository(session).records_of(account.id, limit)
        return ConnectionRecordList(
            mode=privacy.mode,
            recorded=True,
            retention_days=days,
            statement=f"Each connection is recorded with its start time, duration, the "
            f"server's location and the bytes up and down, never your IP address. Records are "
            f"deleted {days} days after the connection started.",
            records=[ConnectionRecordRead.model_validate(row) for row in rows],
        )

    # --- timed work ---------------------------------------------------------------------------

    async def end_lapsed_leases(self, session: AsyncSession, runtime: Runtime) -> int:
        """End leases no report renewed in time, admit who may now pass, close stale records.

        Returns how many leases ended.
        """
        store = _store(runtime)
        # Every node's liveness, once: a lease whose node still reports (perhaps steadily,
        # renewing only that) lives on; a node with none left lets its leases lapse.
        alive = await _liveness(store, {int(n) for n in await store.scan(NODE_ALIVE)})
        at = replace(self._moment(runtime), alive=alive)
        writes: list[RecordWrite] = []
        ended = 0
        for key in await store.scan(ACCOUNT_LEASES):
            account_id = int(key)
            lapsed, more = await store.update(
                ACCOUNT_LEASES, key, _lapse_step(account_id, at), ttl=STATE_BACKSTOP_SECONDS
            )
            ended += lapsed
            writes += more
        await self._write_records(session, runtime, writes)
        if self._records_on(runtime):
            await self._close_stale_records(session, runtime, at.wall)
        return ended

    async def _close_stale_records(
        self, session: AsyncSession, runtime: Runtime, wall: datetime
    ) -> None:
        """Close records a crash left open, at the last time they were brought up to date."""
        settings = runtime.settings
        grace = timedelta(
            seconds=STALE_FLUSHES * settings.connection_record_flush_seconds
            + settings.connection_lease_ttl_seconds
        )
        store = _store(runtime)
        live_ids: set[int] = set()
        for key in await store.scan(ACCOUNT_LEASES):
            state = await store.read(ACCOUNT_LEASES, key)
            for lease in state.leases.values() if state else ():
                if lease.record is not None and lease.record.record_id is not None:
                    live_ids.add(lease.record.record_id)
        repository = ConnectionRepository(session)
        for record in await repository.open_records_started_before(wall - grace):
            if record.id in live_ids:
                continue
            seen_until = record.started_at + timedelta(seconds=record.duration_seconds)
            if seen_until < wall - grace:
                record.ended_at = seen_until
        await session.flush()

    async def purge_records(self, session: AsyncSession, runtime: Runtime) -> int:
        """Delete what the policy no longer allows to keep; returns how many records went.

        Metered: records that started longer ago than the retention. Strict: every record and
        counter (left from a time the policy was metered), since strict mode keeps none.
        """
        privacy = runtime.policy.privacy
        repository = ConnectionRepository(session)
        await usage_service.delete_all_unless_kept(session, runtime)
        if not privacy.keeps_connection_records:
            return await repository.delete_all_records()
        days = privacy.connection_record_retention_days or 0
        return await repository.delete_records_started_before(_utcnow() - timedelta(days=days))


# --- the pure steps, bound to their inputs for ``LiveStore.update`` ---------------------------

ReportResult = tuple[AccountLeases | None, list[RecordWrite]]


def _cut(lease: Lease) -> BlockedConnection:
    return BlockedConnection(
        protocol=lease.protocol, public_key=lease.public_key, reason=(lease.reason or "")[:300]
    )


def _sorted_cuts(cuts: list[BlockedConnection]) -> tuple[BlockedConnection, ...]:
    return tuple(sorted(cuts, key=lambda b: (b.protocol, b.public_key)))


def _open_bytes(state: AccountLeases | None) -> dict[str, OpenBytes]:
    """What each admitted, recorded connection carried beyond what its counter holds."""
    found: dict[str, OpenBytes] = {}
    for lid, lease in state.leases.items() if state else ():
        record = lease.record
        if lease.admitted and record is not None:
            uncounted = record.rx + record.tx - record.counted_bytes
            found[lid] = OpenBytes(max(0, uncounted), lease.expires)
    return found


_FINGERPRINTS: dict[int, tuple[object, str]] = {}


def _plans_fingerprint(runtime: Runtime) -> str:
    """The policy's plans (their limits), the same on every replica that runs that policy."""
    policy = runtime.policy
    known = _FINGERPRINTS.get(id(policy))
    if known is not None and known[0] is policy:
        return known[1]
    plans = {code: plan.model_dump(mode="json") for code, plan in policy.plans.items()}
    fingerprint = hashlib.blake2b(
        json.dumps(plans, sort_keys=True).encode(), digest_size=16
    ).hexdigest()
    _FINGERPRINTS.clear()  # one policy at a time
    _FINGERPRINTS[id(policy)] = (policy, fingerprint)
    return fingerprint


async def _liveness(store: LiveStore, nodes: set[int]) -> dict[int, float]:
    """Until when each node's reports keep its leases alive; 0 for a node with none left."""
    ordered = sorted(nodes)
    found = await store.read_many(NODE_ALIVE, [str(n) for n in ordered])
    return {n: until or 0.0 for n, until in zip(ordered, found, strict=True)}


def _digest_of(keys: list[str]) -> str:
    return hashlib.blake2b("\n".join(sorted(keys)).encode(), digest_size=16).hexdigest()


def _here(peers: Mapping[str, PeerStatus], account: str, marks: Mapping[str, Mark]) -> list[str]:
    """The account's connections this report shows connected, among those it had here."""
    mark = marks.get(account)
    return [k for k in mark.keys if k in peers and peers[k].connected] if mark else []


async def _changes(
    store: LiveStore, steady: Steady, peers: Mapping[str, PeerStatus], at: Moment
) -> Changes:
    """What this report changes against the node's ``steady``: the accounts whose
    connections here changed, whose leases or access changed (stamps), or one of whose
    other nodes fell silent; and connected keys never looked up."""
    owner_of = {k: account for account, mark in steady.accounts.items() for k in mark.keys}
    now: dict[str, list[str]] = {}
    new_keys: list[str] = []
    for key, peer in peers.items():
        if not peer.connected:
            continue
        account = owner_of.get(key)
        if account is not None:
            now.setdefault(account, []).append(key)
        else:
            new_keys.append(key)
    if _digest_of(new_keys) == steady.strangers:
        new_keys = []  # the same keys as last time, which no account owned
    accounts = list(steady.accounts)
    marks = [steady.accounts[a] for a in accounts]
    lease_stamps, access_stamps = await store.stamps_many(
        [(ACCOUNT_LEASES, accounts), (ACCESS_STAMPS, accounts)]
    )
    alive = await _liveness(store, {n for mark in marks for n in mark.elsewhere})
    silent = {n for n, until in alive.items() if until <= at.now}
    changed = {
        account
        for account, mark, leases, access in zip(
            accounts, marks, lease_stamps, access_stamps, strict=True
        )
        if leases != mark.leases
        or access != mark.access
        or tuple(sorted(now.get(account, ()))) != mark.keys
        or not silent.isdisjoint(mark.elsewhere)
    }
    return Changes(changed, new_keys, alive)


def _mark(state: AccountLeases | None, node_id: int, stamp: int, at: Moment) -> Mark | None:
    """The account as this report left it on this node; None when it has no lease here."""
    keys: list[str] = []
    blocked: list[str] = []
    cuts: list[BlockedConnection] = []
    elsewhere: set[int] = set()
    for lease in state.leases.values() if state else ():
        if lease.node.id != node_id:
            elsewhere.add(lease.node.id)
            continue
        keys.append(peer_key(lease.public_key, lease.protocol))
        if lease.admitted or lease.expires <= at.now:
            continue
        if lease.protocol == WIREGUARD:
            blocked.append(lease.public_key)
        else:
            cuts.append(_cut(lease))
    if not keys:
        return None
    return Mark(
        keys=tuple(sorted(keys)),
        leases=stamp,
        access=0,
        blocked=tuple(blocked),
        cuts=tuple(cuts),
        elsewhere=tuple(sorted(elsewhere)),
    )


def _answer(marks: Mapping[str, Mark]) -> Blocked:
    blocked = sorted(key for mark in marks.values() for key in mark.blocked)
    cuts = [cut for mark in marks.values() for cut in mark.cuts]
    return Blocked(tuple(blocked), _sorted_cuts(cuts))


def _accounts_of(
    by_account: Mapping[int, list[Seen]], scope: set[str] | None, index: NodeIndex | None
) -> list[str]:
    """The accounts a report works on: those it shows connected and, in ``scope`` (None: all
    holding a lease on the node, which may end now), each once, in order."""
    accounts = {str(a) for a in by_account}
    if scope is None:
        accounts |= {str(a) for a in (index.keys.values() if index else ())}
    else:
        accounts |= scope
    return sorted(accounts, key=int)


def _report_step(
    node_id: int,
    place: NodePlace,
    by_account: Mapping[int, list[Seen]],
    plans: Mapping[int, PeerOwner],
    limits: Mapping[tuple[str | None, int | None], Limits],
    idle_bytes: Mapping[str, tuple[int, int]],
    at: Moment,
    scope: set[str] | None,
) -> Callable[
    [NodeIndex | None, Mapping[str, AccountLeases | None]],
    tuple[NodeIndex | None, dict[str, AccountLeases | None], dict[int, ReportResult]],
]:
    """One report's step over the node's lease index and the accounts it works on
    (``LiveStore.update_indexed``): their leases, and the index with their entries made
    anew (with ``scope`` None, all of it)."""

    def step(
        index: NodeIndex | None, states: Mapping[str, AccountLeases | None]
    ) -> tuple[NodeIndex | None, dict[str, AccountLeases | None], dict[int, ReportResult]]:
        values: dict[str, AccountLeases | None] = {}
        results: dict[int, ReportResult] = {}
        keys: dict[str, int] = {}
        if scope is not None and index is not None:
            keys = {k: a for k, a in index.keys.items() if str(a) not in states}
        for key, state in states.items():
            account_id = int(key)
            plan = plans.get(account_id)
            new, writes = apply_report(
                state,
                account_id=account_id,
                node=place,
                seen=by_account.get(account_id, ()),
                idle_bytes=idle_bytes,
                limits=None if plan is None else limits[(plan.plan_code, plan.connection_limit)],
                at=at,
            )
            values[key] = new
            results[account_id] = (new, writes)
            for lease in new.leases.values() if new else ():
                if lease.node.id == node_id:
                    keys[lease.public_key] = account_id
        return (NodeIndex(keys) if keys else None), values, results

    return step


def _lapse_step(
    account_id: int, at: Moment
) -> Callable[[AccountLeases | None], tuple[AccountLeases | None, tuple[int, list[RecordWrite]]]]:
    def step(
        state: AccountLeases | None,
    ) -> tuple[AccountLeases | None, tuple[int, list[RecordWrite]]]:
        new, writes = lapse(state, account_id=account_id, at=at)
        before = 0 if state is None else len(state.leases)
        after = 0 if new is None else len(new.leases)
        return new, (before - after, writes)

    return step


def _attach_step(
    lid: str, record_id: int
) -> Callable[[AccountLeases | None], tuple[AccountLeases | None, None]]:
    def step(state: AccountLeases | None) -> tuple[AccountLeases | None, None]:
        return attach_record(state, lid, record_id), None

    return step


def _refusal_step(
    fresh: Mapping[str, Refusal], now: float
) -> Callable[[AccountRefusals | None], tuple[AccountRefusals | None, None]]:
    def step(state: AccountRefusals | None) -> tuple[AccountRefusals | None, None]:
        return note_refusals(state, fresh, now), None

    return step


connection = ConnectionService()
