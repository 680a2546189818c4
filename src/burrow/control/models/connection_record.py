from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin


class ConnectionRecord(IdMixin, Base):
    """One VPN connection, kept only under ``privacy.mode = "metered"`` and only for
    ``privacy.connection_record_retention_days`` (the purge job deletes older rows).

    A row is opened when a connection is admitted (``ended_at`` empty), brought up to date
    every ``connection_record_flush_seconds`` and closed when the connection ends, so a crash
    of the control plane loses at most one flush interval. Never the client's IP address.
    """

    __tablename__ = "connection_records"
    __table_args__ = {"info": {"privacy": "connection_records"}}

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("devices.id", ondelete="SET NULL"), default=None
    )
    node_name: Mapped[str] = mapped_column(String(63))
    node_country: Mapped[str] = mapped_column(String(2))
    node_city: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(index=True)
    # Empty while the connection is open (or until the sweep closes a record a crash left open).
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    duration_seconds: Mapped[int] = mapped_column(Integer, default=0)
    rx_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    tx_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
