from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class Device(IdMixin, CreatedMixin, Base):
    """A customer's WireGuard device. Only the public key is ever stored.

    The tunnel addresses come from fleet-wide pools, so a device keeps them on every node.
    """

    __tablename__ = "devices"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(44), unique=True)
    ipv4: Mapped[str] = mapped_column(String(15), unique=True)
    ipv6: Mapped[str] = mapped_column(String(39), unique=True)
    # Offset of both addresses in their pools; unique, so a racing allocation fails loudly.
    address_index: Mapped[int] = mapped_column(Integer, unique=True)
    # The DNS filter lists the device's resolver applies (names of the policy's
    # [dns.filters], comma-separated, in the policy's order); empty: no filtering.
    dns_filters: Mapped[str] = mapped_column(String(200), default="", server_default="")
