from __future__ import annotations

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId


class ServedPeer(Base):
    """The desired state, materialised: one row per peer every node must serve.

    Written only by ``burrow.control.desired_state``; reading the full state is one scan.
    ``device_id`` is deliberately not a foreign key: when a device row is deleted, its served
    row must outlive it until the desired state records the removal (a cascade would silently
    drop the peer from this table and no node would ever be told to remove it).
    """

    __tablename__ = "served_peers"

    device_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    account_id: Mapped[int] = mapped_column(BigId, index=True)
    public_key: Mapped[str] = mapped_column(String(44), unique=True)
    ipv4: Mapped[str] = mapped_column(String(15))
    ipv6: Mapped[str] = mapped_column(String(39))
    revision: Mapped[int] = mapped_column(BigInteger)
    # What a node needs beyond WireGuard, as canonical JSON (``PeerAccess`` of the desired
    # state): other protocols' credential verifiers, the subscription's opaque key and its
    # per-server limits. Empty: WireGuard only, no limits known.
    access: Mapped[str] = mapped_column(Text, default="", server_default="")
