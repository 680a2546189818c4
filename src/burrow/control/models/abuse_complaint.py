from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class ComplaintStatus(StrEnum):
    open = "open"  # recorded, not traced yet
    traced = "traced"  # the trace named a device and its account
    not_found = "not_found"  # nothing held that port then (or the history is gone)
    untraceable = "untraceable"  # the policy makes a trace impossible by construction
    actioned = "actioned"  # the account was warned, suspended or terminated


class ComplaintAction(StrEnum):
    warn = "warn"
    suspend = "suspend"
    terminate = "terminate"


class AbuseComplaint(IdMixin, CreatedMixin, Base):
    """A complaint about traffic that left one of the nodes' shared egress addresses.

    It names what the complainant saw (the egress address, port and time) and the clause of the
    terms it would break; what the trace found and what was done about it are kept with it.
    """

    __tablename__ = "abuse_complaints"

    clause: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(200))
    egress_ip: Mapped[str] = mapped_column(String(39))
    port: Mapped[int] = mapped_column(Integer)
    seen_at: Mapped[datetime] = mapped_column(index=True)
    evidence: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ComplaintStatus] = mapped_column(
        Enum(ComplaintStatus, native_enum=False, length=20),
        default=ComplaintStatus.open,
        index=True,
    )
    # What the trace said: the device it found, or why there is nothing to find.
    finding: Mapped[str | None] = mapped_column(String(1000), default=None)
    account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None, index=True
    )
    device_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    action: Mapped[ComplaintAction | None] = mapped_column(
        Enum(ComplaintAction, native_enum=False, length=20), default=None
    )
    actioned_at: Mapped[datetime | None] = mapped_column(default=None)
