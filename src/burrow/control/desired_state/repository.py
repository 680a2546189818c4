"""All SQL of the desired state: eligibility, the served peers and the change log.

Every query here is indexed and bounded by what it is about: one account's rows
(``devices.account_id``, ``served_peers.account_id``), a few public keys (unique index),
or a revision range of the change log (its primary key). Only ``served_peers_all`` reads
the whole table, for the full state.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, exists, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.desired_state.schemas import Change, PeerAddresses
from burrow.control.models import (
    Account,
    AccountStatus,
    Device,
    DeviceCredential,
    PeerChange,
    PeerChangeOp,
    Plan,
    ServedPeer,
    Subscription,
    gives_access_clause,
    utcnow,
)

# Any fixed 64-bit number; it names the lock that orders desired-state writers on PostgreSQL.
_WRITERS_LOCK_KEY = 0x6275_7272_6F77_0001


class DesiredStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_writers(self) -> None:
        """Serialise desired-state writers until this transaction ends.

        Revisions must become visible in the order they were numbered, or a node that has
        read revision 11 would never see a revision 10 committed a moment later. SQLite
        already has one writer at a time; PostgreSQL gets a transaction-level advisory lock.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITERS_LOCK_KEY}
            )

    # --- one account --------------------------------------------------------------------

    async def account_may_connect(self, account_id: int, now: datetime) -> bool:
        """The account is active and has a trialing or active subscription not yet ended."""
        paid = exists().where(
            Subscription.account_id == Account.id,
            gives_access_clause(now),
        )
        query = select(Account.id).where(
            Account.id == account_id, Account.status == AccountStatus.active, paid
        )
        return (await self.session.execute(query)).first() is not None

    async def access_subscription(self, account_id: int, now: datetime) -> tuple[int, str] | None:
        """(id, plan code) of the subscription that lets the account connect now, or None.

        The same condition as ``account_may_connect``; of several, the newest.
        """
        query = (
            select(Subscription.id, Plan.code)
            .join(Account, Account.id == Subscription.account_id)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(
                Subscription.account_id == account_id,
                Account.status == AccountStatus.active,
                gives_access_clause(now),
            )
            .order_by(Subscription.id.desc())
            .limit(1)
        )
        row = (await self.session.execute(query)).first()
        return None if row is None else (int(row[0]), str(row[1]))

    async def credentials_of(self, account_id: int) -> dict[int, list[tuple[str, str, str]]]:
        """Each device's credentials as (protocol, username, verifier)."""
        query = (
            select(
                DeviceCredential.device_id,
                DeviceCredential.protocol,
                DeviceCredential.username,
                DeviceCredential.verifier,
            )
            .join(Device, Device.id == DeviceCredential.device_id)
            .where(Device.account_id == account_id)
        )
        found: dict[int, list[tuple[str, str, str]]] = {}
        for device_id, protocol, username, verifier in await self.session.execute(query):
            found.setdefault(device_id, []).append((protocol, username, verifier))
        return found

    async def devices_of(self, account_id: int) -> dict[int, PeerAddresses]:
        query = select(Device.id, Device.public_key, Device.ipv4, Device.ipv6).where(
            Device.account_id == account_id
        )
        rows = (await self.session.execute(query)).all()
        return {row.id: PeerAddresses(row.public_key, row.ipv4, row.ipv6) for row in rows}

    async def served_of(self, account_id: int) -> dict[int, PeerAddresses]:
        query = select(
            ServedPeer.device_id,
            ServedPeer.public_key,
            ServedPeer.ipv4,
            ServedPeer.ipv6,
            ServedPeer.access,
        ).where(ServedPeer.account_id == account_id)
        rows = (await self.session.execute(query)).all()
        return {
            row.device_id: PeerAddresses(row.public_key, row.ipv4, row.ipv6, row.access)
            for row in rows
        }

    async def record_changes(self, changes: Sequence[Change]) -> list[int]:
        """Append to the change log; returns each change's revision, in the given order."""
        if not changes:
            return []
        now = utcnow()
        rows = [
            {
                "op": change.op,
                "public_key": change.peer.public_key,
                "ipv4": change.peer.ipv4 if change.op == PeerChangeOp.upsert else None,
                "ipv6": change.peer.ipv6 if change.op == PeerChangeOp.upsert else None,
                "access": change.peer.access if change.op == PeerChangeOp.upsert else None,
                "device_id": change.device_id,
                "created_at": now,
            }
            for change in changes
        ]
        statement = insert(PeerChange).returning(PeerChange.revision, sort_by_parameter_order=True)
        result = await self.session.execute(statement, rows)
        return list(result.scalars().all())

    async def unserve(self, device_ids: Collection[int], public_keys: Collection[str]) -> None:
        """Drop served rows by device, and any row still holding one of ``public_keys``.

        The second part clears a row left by another account's device whose key now belongs
        to a device of this account (possible only if that account was never refreshed).
        """
        if device_ids:
            await self.session.execute(
                delete(ServedPeer).where(ServedPeer.device_id.in_(list(device_ids)))
            )
        if public_keys:
            await self.session.execute(
                delete(ServedPeer).where(ServedPeer.public_key.in_(list(public_keys)))
            )

    async def serve(self, account_id: int, peers: Sequence[tuple[int, PeerAddresses, int]]) -> None:
        """Insert served rows: (device id, addresses, revision of its upsert)."""
        if not peers:
            return
        await self.session.execute(
            insert(ServedPeer),
            [
                {
                    "device_id": device_id,
                    "account_id": account_id,
                    "public_key": peer.public_key,
                    "ipv4": peer.ipv4,
                    "ipv6": peer.ipv6,
                    "access": peer.access,
                    "revision": revision,
                }
                for device_id, peer, revision in peers
            ],
        )

    # --- the whole fleet ----------------------------------------------------------------

    async def current_revision(self) -> int:
        value = (await self.session.execute(select(func.max(PeerChange.revision)))).scalar()
        return int(value or 0)

    async def oldest_revision(self) -> int | None:
        value = (await self.session.execute(select(func.min(PeerChange.revision)))).scalar()
        return None if value is None else int(value)

    async def changes_between(self, after: int, up_to: int) -> list[Change]:
        """The log rows with ``after < revision <= up_to``, oldest first (a primary-key range)."""
        query = (
            select(
                PeerChange.revision,
                PeerChange.op,
                PeerChange.public_key,
                PeerChange.ipv4,
                PeerChange.ipv6,
                PeerChange.device_id,
                PeerChange.access,
            )
            .where(PeerChange.revision > after, PeerChange.revision <= up_to)
            .order_by(PeerChange.revision)
        )
        rows = (await self.session.execute(query)).all()
        return [
            Change(
                op=PeerChangeOp(row.op),
                peer=PeerAddresses(
                    row.public_key, row.ipv4 or "", row.ipv6 or "", row.access or ""
                ),
                device_id=row.device_id,
                revision=row.revision,
            )
            for row in rows
        ]

    async def served_peers_all(self) -> Sequence[tuple[str, str, str, str]]:
        """Every served peer as (public key, ipv4, ipv6, access): the full state, in one scan."""
        query = select(ServedPeer.public_key, ServedPeer.ipv4, ServedPeer.ipv6, ServedPeer.access)
        # Core, not the ORM: at 100,000 rows the ORM's per-row bookkeeping would dominate.
        connection = await self.session.connection()
        return (await connection.execute(query)).all()

    async def prune_changes_up_to(self, revision: int) -> int:
        """Delete the log rows at or below ``revision``; returns how many went."""
        result = await self.session.execute(
            delete(PeerChange).where(PeerChange.revision <= revision)
        )
        return int(getattr(result, "rowcount", 0) or 0)
