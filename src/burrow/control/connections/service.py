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

Live store layout (JSON-friendly values):
``connections:account:{id}`` -> {"limits": {...}, "leases": {lease_id: lease}}
``connections:node:{id}``    -> {public_key: account_id}, the leases a node holds
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.connections.limits import UNLIMITED, LeaseView, Limits, decide
from burrow.control.connections.repository import ConnectionRepository, PeerOwner
from burrow.control.connections.schemas import (
    ConnectionList,
    ConnectionRead,
    ConnectionRecordList,
    ConnectionRecordRead,
    ConnectionState,
)
from burrow.control.models import Account, ConnectionRecord, Node, utcnow
from burrow.control.refunds.usage.service import usage as usage_service
from burrow.control.runtime import Runtime
from burrow.wire import NodeReport, PeerStatus

PROTOCOL = "wireguard"
SEQ_KEY = "connections:seq"
# A backstop only: the sweep job and the reports end leases on time; this frees the RAM of an
# account no report mentions any more even when the scheduler is off.
STATE_BACKSTOP_SECONDS = 3600.0
# An open record not brought up to date for this many flush intervals was left by a crash.
STALE_FLUSHES = 2

Lease = dict[str, Any]
State = dict[str, Any]


def _utcnow() -> datetime:
    """Wall time of records (tests replace it; leases use the live store's own clock)."""
    return utcnow()


def _account_key(account_id: int) -> str:
    return f"connections:account:{account_id}"


def _node_key(node_id: int) -> str:
    return f"connections:node:{node_id}"


def _lease_id(node_id: int, public_key: str) -> str:
    return f"{node_id}:{public_key}"


def _limits(raw: dict[str, Any] | None) -> Limits:
    if not raw:
        return UNLIMITED
    return Limits(simultaneous=raw.get("simultaneous"), per_server=raw.get("per_server", {}))


def _view(lease_id: str, lease: Lease) -> LeaseView:
    return LeaseView(
        id=lease_id,
        order=(lease["started"], lease["seq"]),
        node_id=lease["node_id"],
        node_name=lease["node_name"],
        protocol=lease["protocol"],
        subscription_id=lease["subscription_id"],
        admitted_before=bool(lease["admitted"]),
    )


@dataclass(frozen=True)
class DeviceStatus:
    state: ConnectionState
    reason: str | None = None
    node_name: str | None = None


IDLE = DeviceStatus("idle")


@dataclass
class _RecordWrite:
    """A change to a connection record, done after the live store is updated."""

    account_id: int
    lease_id: str | None  # set for an opening, whose new id goes back into the lease
    record_id: int | None
    device_id: int | None
    node: tuple[str, str, str]  # name, country, city
    started_at: datetime
    seen_until: datetime
    ended: bool
    rx: int
    tx: int
    usage_bytes: int
    usage_sessions: int


class ConnectionService:
    # --- what the node report drives -------------------------------------------------------

    async def observe_report(
        self, session: AsyncSession, runtime: Runtime, node: Node, report: NodeReport
    ) -> tuple[str, ...]:
        """Renew, start and end this node's leases, apply the limits; the keys to block.

        One query maps the connected keys to devices, accounts and plans. Everything that
        touches the live store runs without awaiting, so two reports never interleave there.
        """
        peers = {peer.public_key: peer for peer in report.peers}
        connected = [key for key, peer in peers.items() if peer.connected]
        owners: dict[str, PeerOwner] = {}
        if connected:
            owners = await ConnectionRepository(session).peer_owners(connected, _utcnow())
        writes = self._apply_report(runtime, node, peers, owners)
        await self._write_records(session, runtime, writes)
        return self.blocked_on(runtime, node.id)

    def _apply_report(
        self,
        runtime: Runtime,
        node: Node,
        peers: dict[str, PeerStatus],
        owners: dict[str, PeerOwner],
    ) -> list[_RecordWrite]:
        live = runtime.live
        now = live.clock()
        wall = _utcnow()
        index: dict[str, int] = live.get(_node_key(node.id)) or {}
        position = {key: n for n, key in enumerate(peers)}
        by_account: dict[int, list[PeerOwner]] = {}
        # In the report's order: connections new in the same report start in that order.
        for owner in sorted(owners.values(), key=lambda o: position[o.public_key]):
            by_account.setdefault(owner.account_id, []).append(owner)
        writes: list[_RecordWrite] = []
        for account_id in set(index.values()) | set(by_account):
            state: State = live.get(_account_key(account_id)) or {"limits": {}, "leases": {}}
            leases: dict[str, Lease] = state["leases"]
            mine = {o.public_key: o for o in by_account.get(account_id, [])}
            # This node's leases whose device no longer shows as connected here end now.
            for lease_id, lease in list(leases.items()):
                if lease["node_id"] == node.id and lease["public_key"] not in mine:
                    last = peers.get(lease["public_key"])
                    if last is not None:
                        self._count(lease, last, wall)
                    writes += self._end(runtime, leases, lease_id, wall)
            # Leases anywhere that no report renewed in time end too.
            for lease_id, lease in list(leases.items()):
                if lease["expires"] <= now:
                    writes += self._end(runtime, leases, lease_id, wall)
            for key, owner in mine.items():
                lease_id = _lease_id(node.id, key)
                if lease_id not in leases:
                    leases[lease_id] = self._start(runtime, node, owner, now, wall)
                lease = leases[lease_id]
                lease["expires"] = now + runtime.settings.connection_lease_ttl_seconds
                if owner.subscription_id is not None:
                    lease["subscription_id"] = owner.subscription_id
            if mine:
                state["limits"] = self._plan_limits(runtime, next(iter(mine.values())))
            writes += self._decide(runtime, account_id, state, wall)
            # This report's traffic counts for the connections admitted now: a new one was not
            # blocked yet when it moved those bytes.
            for key in mine:
                lease = leases[_lease_id(node.id, key)]
                self._count(lease, peers[key], wall)
                if lease["admitted"] and self._flush_due(runtime, lease, wall):
                    writes += self._flush(runtime, lease, wall, ended=False)
            self._save(runtime, account_id, state)
            for lease in leases.values():
                if lease["node_id"] == node.id:
                    index[lease["public_key"]] = account_id
            for key in [k for k, a in index.items() if a == account_id]:
                if _lease_id(node.id, key) not in leases:
                    del index[key]
        self._save_index(runtime, node.id, index)
        return writes

    @staticmethod
    def _plan_limits(runtime: Runtime, owner: PeerOwner) -> dict[str, Any]:
        if owner.plan_code is None:
            return {}
        section = runtime.policy.plans.get(owner.plan_code)
        per_server = dict(section.connections_per_server) if section is not None else {}
        return {"simultaneous": owner.connection_limit, "per_server": per_server}

    @staticmethod
    def _start(runtime: Runtime, node: Node, owner: PeerOwner, now: float, wall: datetime) -> Lease:
        return {
            "node_id": node.id,
            "node_name": node.name,
            "node_country": node.country,
            "node_city": node.city,
            "protocol": PROTOCOL,
            "public_key": owner.public_key,
            "device_id": owner.device_id,
            "account_id": owner.account_id,
            "subscription_id": owner.subscription_id,
            "started": now,
            "seq": runtime.live.incr(SEQ_KEY, ttl=10 * 365 * 86400.0),
            "expires": now,
            "admitted": False,
            "reason": None,
            "since": wall.isoformat(),
            # Metered mode: the record of the admitted stretch of this connection.
            "record_id": None,
            "record_opening": False,
            "record_started": None,
            "rx": 0,
            "tx": 0,
            "counted_bytes": 0,
            "flushed_at": None,
            "active_at": None,
        }

    @staticmethod
    def _count(lease: Lease, peer: PeerStatus, wall: datetime) -> None:
        """Add a report's byte deltas to an admitted lease (blocked traffic is not service)."""
        if not lease["admitted"]:
            return
        lease["rx"] += peer.rx_bytes
        lease["tx"] += peer.tx_bytes
        if peer.rx_bytes or peer.tx_bytes:
            lease["active_at"] = wall.isoformat()

    def _decide(
        self, runtime: Runtime, account_id: int, state: State, wall: datetime
    ) -> list[_RecordWrite]:
        leases: dict[str, Lease] = state["leases"]
        decision = decide(
            (_view(lease_id, lease) for lease_id, lease in leases.items()),
            _limits(state.get("limits")),
        )
        writes: list[_RecordWrite] = []
        for lease_id, lease in leases.items():
            refusal = decision.refused.get(lease_id)
            was_admitted = bool(lease["admitted"])
            lease["admitted"] = refusal is None
            lease["reason"] = None if refusal is None else refusal.reason
            if not self._records_on(runtime):
                continue
            if refusal is None and not was_admitted:
                writes.append(self._open(account_id, lease_id, lease, wall))
            elif refusal is not None and was_admitted:
                writes += self._close(runtime, lease, wall)
        return writes

    def _end(
        self, runtime: Runtime, leases: dict[str, Lease], lease_id: str, wall: datetime
    ) -> list[_RecordWrite]:
        lease = leases.pop(lease_id)
        if lease["admitted"] and self._records_on(runtime):
            return self._close(runtime, lease, wall)
        return []

    # --- metered mode: records and usage counters ------------------------------------------

    @staticmethod
    def _records_on(runtime: Runtime) -> bool:
        return runtime.policy.privacy.keeps_connection_records

    @staticmethod
    def _open(account_id: int, lease_id: str, lease: Lease, wall: datetime) -> _RecordWrite:
        lease.update(
            record_id=None,
            record_opening=True,
            record_started=wall.isoformat(),
            rx=0,
            tx=0,
            counted_bytes=0,
            flushed_at=wall.isoformat(),
            active_at=wall.isoformat(),
        )
        return _RecordWrite(
            account_id=account_id,
            lease_id=lease_id,
            record_id=None,
            device_id=lease["device_id"],
            node=(lease["node_name"], lease["node_country"], lease["node_city"]),
            started_at=wall,
            seen_until=wall,
            ended=False,
            rx=0,
            tx=0,
            usage_bytes=0,
            usage_sessions=1,
        )

    def _flush_due(self, runtime: Runtime, lease: Lease, wall: datetime) -> bool:
        flushed = lease["flushed_at"]
        if flushed is None or not self._records_on(runtime):
            return False
        age = (wall - datetime.fromisoformat(flushed)).total_seconds()
        return age >= runtime.settings.connection_record_flush_seconds

    def _close(self, runtime: Runtime, lease: Lease, wall: datetime) -> list[_RecordWrite]:
        return self._flush(runtime, lease, wall, ended=True)

    def _flush(
        self, runtime: Runtime, lease: Lease, wall: datetime, *, ended: bool
    ) -> list[_RecordWrite]:
        if lease["record_started"] is None:
            return []
        if lease["record_id"] is None and lease["record_opening"] and not ended:
            return []  # its row is being written; the next flush brings it up to date
        started = datetime.fromisoformat(lease["record_started"])
        # A connection ends when its traffic stopped, not when the idle threshold noticed.
        active = lease["active_at"]
        seen_until = max(started, datetime.fromisoformat(active)) if ended and active else wall
        total = lease["rx"] + lease["tx"]
        usage = total - lease["counted_bytes"]
        lease["counted_bytes"] = total
        lease["flushed_at"] = wall.isoformat()
        opening = lease["record_id"] is None and lease["record_opening"]
        return [
            _RecordWrite(
                account_id=lease["account_id"],
                lease_id=None,
                # A row still being written is left to the stale-record sweep to close.
                record_id=-1 if opening else lease["record_id"],
                device_id=lease["device_id"],
                node=(lease["node_name"], lease["node_country"], lease["node_city"]),
                started_at=started,
                seen_until=seen_until,
                ended=ended,
                rx=lease["rx"],
                tx=lease["tx"],
                usage_bytes=usage,
                usage_sessions=0,
            )
        ]

    async def _write_records(
        self, session: AsyncSession, runtime: Runtime, writes: list[_RecordWrite]
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
            if write.lease_id is not None and record_id is not None:
                opened[(write.account_id, write.lease_id)] = record_id
        # Give the opened rows' ids back to their leases, if those still run.
        for (account_id, lease_id), record_id in opened.items():
            state = runtime.live.get(_account_key(account_id))
            lease = None if state is None else state["leases"].get(lease_id)
            if lease is not None and lease["record_opening"]:
                lease["record_id"] = record_id
                lease["record_opening"] = False
                self._save(runtime, account_id, state)

    @staticmethod
    async def _write_one(repository: ConnectionRepository, write: _RecordWrite) -> int | None:
        duration = max(0, int((write.seen_until - write.started_at).total_seconds()))
        if write.record_id is None:
            name, country, city = write.node
            return await repository.add_record(
                ConnectionRecord(
                    account_id=write.account_id,
                    device_id=write.device_id,
                    node_name=name,
                    node_country=country,
                    node_city=city,
                    started_at=write.started_at,
                    ended_at=write.seen_until if write.ended else None,
                    duration_seconds=duration,
                    rx_bytes=write.rx,
                    tx_bytes=write.tx,
                )
            )
        if write.record_id > 0:
            await repository.update_record(
                write.record_id,
                duration_seconds=duration,
                rx_bytes=write.rx,
                tx_bytes=write.tx,
                ended_at=write.seen_until if write.ended else None,
            )
        return None

    # --- the live store ----------------------------------------------------------------------

    @staticmethod
    def _save(runtime: Runtime, account_id: int, state: State) -> None:
        if state["leases"]:
            runtime.live.set(_account_key(account_id), state, ttl=STATE_BACKSTOP_SECONDS)
        else:
            runtime.live.delete(_account_key(account_id))

    @staticmethod
    def _save_index(runtime: Runtime, node_id: int, index: dict[str, int]) -> None:
        if index:
            runtime.live.set(_node_key(node_id), index, ttl=STATE_BACKSTOP_SECONDS)
        else:
            runtime.live.delete(_node_key(node_id))

    @staticmethod
    def _leases(runtime: Runtime, account_id: int) -> dict[str, Lease]:
        state = runtime.live.get(_account_key(account_id))
        if state is None:
            return {}
        now = runtime.live.clock()
        return {i: lease for i, lease in state["leases"].items() if lease["expires"] > now}

    def blocked_on(self, runtime: Runtime, node_id: int) -> tuple[str, ...]:
        """Public keys this node must keep blocked now, sorted."""
        index: dict[str, int] = runtime.live.get(_node_key(node_id)) or {}
        blocked = []
        for key, account_id in index.items():
            lease = self._leases(runtime, account_id).get(_lease_id(node_id, key))
            if lease is not None and not lease["admitted"]:
                blocked.append(key)
        return tuple(sorted(blocked))

    # --- what the customer sees --------------------------------------------------------------

    def device_statuses(self, runtime: Runtime, account_id: int) -> dict[int, DeviceStatus]:
        """Each connected or blocked device of the account; a device not named is idle."""
        statuses: dict[int, DeviceStatus] = {}
        for lease in sorted(self._leases(runtime, account_id).values(), key=lambda x: x["seq"]):
            device_id = lease["device_id"]
            if lease["admitted"]:
                current = statuses.get(device_id)
                if current is None or current.state != "connected":
                    statuses[device_id] = DeviceStatus("connected", None, lease["node_name"])
            elif device_id not in statuses:
                statuses[device_id] = DeviceStatus("blocked", lease["reason"], lease["node_name"])
        return statuses

    def device_status(self, runtime: Runtime, account_id: int, device_id: int) -> DeviceStatus:
        return self.device_statuses(runtime, account_id).get(device_id, IDLE)

    async def current(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> ConnectionList:
        names = await ConnectionRepository(session).device_names(account.id)
        metered = self._records_on(runtime)
        leases = sorted(self._leases(runtime, account.id).values(), key=lambda x: x["seq"])
        connections = [
            ConnectionRead(
                device_id=lease["device_id"],
                device_name=names.get(lease["device_id"]),
                node_name=lease["node_name"],
                node_country=lease["node_country"],
                node_city=lease["node_city"],
                protocol=lease["protocol"],
                state="connected" if lease["admitted"] else "blocked",
                reason=lease["reason"],
                connected_since=datetime.fromisoformat(lease["since"]) if metered else None,
            )
            for lease in leases
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
        live = runtime.live
        now = live.clock()
        wall = _utcnow()
        writes: list[_RecordWrite] = []
        ended = 0
        for key in live.keys("connections:account:"):
            state = live.get(key)
            if state is None:
                continue
            account_id = int(key.rsplit(":", 1)[1])
            leases: dict[str, Lease] = state["leases"]
            lapsed = [i for i, lease in leases.items() if lease["expires"] <= now]
            if not lapsed:
                continue
            for lease_id in lapsed:
                writes += self._end(runtime, leases, lease_id, wall)
            ended += len(lapsed)
            writes += self._decide(runtime, account_id, state, wall)
            self._save(runtime, account_id, state)
        await self._write_records(session, runtime, writes)
        if self._records_on(runtime):
            await self._close_stale_records(session, runtime, wall)
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
        live_ids = {
            lease["record_id"]
            for key in runtime.live.keys("connections:account:")
            for lease in (runtime.live.get(key) or {"leases": {}})["leases"].values()
        }
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


connection = ConnectionService()
