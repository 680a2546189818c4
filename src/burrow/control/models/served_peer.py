from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import BigId, Base


class ServedPeer(Base):
    """The desired state, materialised: one row per peer every node must serve.

    Written only by ``burrow.control.desired_state``; reading the full state is one scan.
    """

    __tablename__ = "served_peers"

    device_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(BigId, index=True)
    public_key: Mapped[str] = mapped_column(String(44), unique=True)
    ipv4: Mapped[str] = mapped_column(String(15))
    ipv6: Mapped[str] = mapped_column(String(39))
    revision: Mapped[int] = mapped_column(BigInteger)
