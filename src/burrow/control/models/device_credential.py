from __future__ import annotations

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class DeviceCredential(IdMixin, CreatedMixin, Base):
    """A device's sign-in for a protocol other than WireGuard (OpenVPN, IKEv2).

    The secret is made by the server and shown once; only ``verifier`` is kept: what a node
    needs to check a client's answer (for OpenVPN a salted digest, for IKEv2's EAP-MSCHAPv2 the
    NT hash). A device has at most one credential per protocol; a username is unique within
    its protocol, so a node finds the device from the name the client sends.
    """

    __tablename__ = "device_credentials"
    __table_args__ = (
        UniqueConstraint("protocol", "username"),
        UniqueConstraint("device_id", "protocol"),
    )

    device_id: Mapped[int] = mapped_column(BigId, ForeignKey("devices.id", ondelete="CASCADE"))
    protocol: Mapped[str] = mapped_column(String(16))
    username: Mapped[str] = mapped_column(String(64))
    verifier: Mapped[str] = mapped_column(String(200))
