from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin


class AddressHolding(IdMixin, Base):
    """Which device held which tunnel address, and when: what traces an abuse complaint.

    Written only under deterministic NAT (``network.nat = "deterministic"``, metered mode):
    with the port block that follows from the address, it turns a complaint's (egress address,
    port, time) into a device without any per-connection log. Opened when the device gets the
    address, closed when it gives it up, deleted ``privacy.address_history_retention_days``
    after that. Never a client's own IP address.
    """

    __tablename__ = "address_holdings"
    __table_args__ = (
        Index("ix_address_holdings_ipv4_held_from", "ipv4", "held_from"),
        {"info": {"privacy": "address_history"}},
    )

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    # Not a foreign key: the history outlives the device.
    device_id: Mapped[int] = mapped_column(BigInteger, index=True)
    device_name: Mapped[str] = mapped_column(String(64))
    ipv4: Mapped[str] = mapped_column(String(15))
    ipv6: Mapped[str] = mapped_column(String(39))
    held_from: Mapped[datetime]
    # Empty while the device still holds the address.
    held_until: Mapped[datetime | None] = mapped_column(default=None, index=True)
