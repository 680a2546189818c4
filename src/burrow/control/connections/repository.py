"""All SQL of the connections domain.

Who owns a public key (one query per node report), and, in metered mode only, connection
records (the usage counters are the refunds domain's). A customer's records are only ever read
through ``_records_of``, the one place that scopes them to an account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import (
    ConnectionRecord,
    Device,
    Plan,
    ServedPeer,
    Subscription,
    access_parameters,
    gives_access_bound,
)

# Keys per query: far below SQLite's and asyncpg's bound-parameter limits.
KEYS_PER_QUERY = 10_000


# Built once: a report runs it with new keys and a new "now", never building it again.
_PEER_OWNERS = (
    select(
        ServedPeer.public_key,
        ServedPeer.device_id,
        ServedPeer.account_id,
        Subscription.id,
        Plan.code,
        Plan.connection_limit,
    )
    .outerjoin(
        Subscription,
        and_(Subscription.account_id == ServedPeer.account_id, gives_access_bound()),
    )
    .outerjoin(Plan, Plan.id == Subscription.plan_id)
    .where(ServedPeer.public_key.in_(bindparam("keys", expanding=True)))
)


@dataclass(frozen=True, slots=True)
class PeerOwner:
    """Whose a served public key is, and the plan that limits it (None: no access plan)."""

    public_key: str
    device_id: int
    account_id: int
    subscription_id: int | None
    plan_code: str | None
    connection_limit: int | None


class ConnectionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- the node report ---------------------------------------------------------------------

    async def peer_owners(self, public_keys: Sequence[str], now: datetime) -> dict[str, PeerOwner]:
        """Device, account and access plan of each key, in one query (per 10,000 keys).

        The plan is that of the account's newest subscription that gives access now
        (trialing or active, period not ended), as ``subscriptions.access_plan`` says.
        """
        owners: dict[str, PeerOwner] = {}
        for start in range(0, len(public_keys), KEYS_PER_QUERY):
            chunk = list(public_keys[start : start + KEYS_PER_QUERY])
            rows = await self.session.execute(
                _PEER_OWNERS, {"keys": chunk, **access_parameters(now)}
            )
            for key, device_id, account_id, sub_id, code, limit in rows:
                known = owners.get(key)
                newer = known is None or (
                    sub_id is not None
                    and (known.subscription_id is None or sub_id > known.subscription_id)
                )
                if newer:
                    owners[key] = PeerOwner(key, device_id, account_id, sub_id, code, limit)
        return owners

    async def device_names(self, account_id: int) -> dict[int, str]:
        query = select(Device.id, Device.name).where(Device.account_id == account_id)
        return {device_id: name for device_id, name in await self.session.execute(query)}

    # --- connection records (metered mode) ---------------------------------------------------

    @staticmethod
    def _records_of(account_id: int) -> Select[ConnectionRecord]:
        """Tenant scoping: every read of a customer's records starts here."""
        return select(ConnectionRecord).where(ConnectionRecord.account_id == account_id)

    async def records_of(self, account_id: int, limit: int) -> Sequence[ConnectionRecord]:
        query = (
            self._records_of(account_id)
            .order_by(ConnectionRecord.started_at.desc(), ConnectionRecord.id.desc())
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def add_record(self, record: ConnectionRecord) -> int:
        self.session.add(record)
        await self.session.flush()
        return record.id

    async def update_record(
        self,
        record_id: int,
        *,
        duration_seconds: int,
        rx_bytes: int,
        tx_bytes: int,
        ended_at: datetime | None,
    ) -> None:
        values: dict[str, object] = {
            "duration_seconds": duration_seconds,
            "rx_bytes": rx_bytes,
            "tx_bytes": tx_bytes,
        }
        if ended_at is not None:
            values["ended_at"] = ended_at
        await self.session.execute(
            update(ConnectionRecord).where(ConnectionRecord.id == record_id).values(**values)
        )

    async def open_records_started_before(self, before: datetime) -> Sequence[ConnectionRecord]:
        query = select(ConnectionRecord).where(
            ConnectionRecord.ended_at.is_(None), ConnectionRecord.started_at < before
        )
        return (await self.session.scalars(query)).all()

    async def delete_records_started_before(self, before: datetime) -> int:
        result = await self.session.execute(
            delete(ConnectionRecord).where(ConnectionRecord.started_at < before)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_all_records(self) -> int:
        result = await self.session.execute(delete(ConnectionRecord))
        return int(getattr(result, "rowcount", 0) or 0)
