from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Enum, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin


class PeerChangeOp(StrEnum):
    upsert = "upsert"
    remove = "remove"


class PeerChange(CreatedMixin, Base):
    """The desired-state change log: its primary key is the revision, which only goes up.

    A delta since revision R is the rows after R, newest per public key; old rows are pruned,
    and a node asking from before the oldest kept row gets the full state.
    """

    __tablename__ = "peer_changes"

    revision: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    op: Mapped[PeerChangeOp] = mapped_column(Enum(PeerChangeOp, native_enum=False, length=10))
    public_key: Mapped[str] = mapped_column(String(44))
    ipv4: Mapped[str | None] = mapped_column(String(15), default=None)
    ipv6: Mapped[str | None] = mapped_column(String(39), default=None)
    # An upsert's ``served_peers.access``; null for removals.
    access: Mapped[str | None] = mapped_column(Text, default=None)
    # Used only to prune; not a foreign key, so that removals outlive their devices.
    device_id: Mapped[int] = mapped_column(BigInteger)
