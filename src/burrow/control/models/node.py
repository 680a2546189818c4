from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, CreatedMixin, IdMixin


class NodeStatus(StrEnum):
    pending = "pending"  # created, waiting for its agent to enroll
    active = "active"
    retired = "retired"


class Node(IdMixin, CreatedMixin, Base):
    """A VPN server. Its tokens are stored hashed."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(63), unique=True)
    country: Mapped[str] = mapped_column(String(2))
    city: Mapped[str] = mapped_column(String(100))
    endpoint_host: Mapped[str] = mapped_column(String(253))
    endpoint_port: Mapped[int] = mapped_column(Integer)
    egress_ipv4: Mapped[str | None] = mapped_column(String(15), default=None)
    egress_ipv6: Mapped[str | None] = mapped_column(String(39), default=None)
    # Further IPv4 egress addresses after egress_ipv4, space-separated, in order: under
    # deterministic NAT each holds the next devices' port blocks.
    egress_ipv4_extra: Mapped[str] = mapped_column(Text, default="", server_default="")
    capacity: Mapped[int] = mapped_column(Integer, default=1000)
    # The uplink's bandwidth in Mbit/s, for fair-use shaping (a node shapes its heaviest users
    # when its traffic nears this). None: the node agent's own setting, or no shaping.
    uplink_mbit: Mapped[int | None] = mapped_column(Integer, default=None)
    status: Mapped[NodeStatus] = mapped_column(
        Enum(NodeStatus, native_enum=False, length=20), default=NodeStatus.pending
    )
    wg_public_key: Mapped[str | None] = mapped_column(String(44), default=None, unique=True)
    node_token_hash: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    enrollment_token_hash: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    enrollment_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    enrolled_at: Mapped[datetime | None] = mapped_column(default=None)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)
    # When customers' configurations for this node went out of date (a new endpoint or a new
    # server key) and what changed, so their devices page can tell them to download again.
    config_changed_at: Mapped[datetime | None] = mapped_column(default=None)
    config_change: Mapped[str | None] = mapped_column(String(40), default=None)
    # OpenVPN, as the node announced it: its CA certificate and tls-crypt key (both go into
    # every .ovpn for it) and its transports ("udp:1194 tcp:443"). None: no OpenVPN here.
    openvpn_ca: Mapped[str | None] = mapped_column(Text, default=None)
    openvpn_tls_crypt: Mapped[str | None] = mapped_column(Text, default=None)
    openvpn_transports: Mapped[str] = mapped_column(String(100), default="", server_default="")
    # IKEv2, as the node announced it: the host clients dial (its server certificate names
    # it) and the CA that certificate chains to. Kept apart from OpenVPN's, which a node may
    # not serve. None: no IKEv2 here.
    ikev2_host: Mapped[str | None] = mapped_column(String(253), default=None)
    ikev2_ca: Mapped[str | None] = mapped_column(Text, default=None)

    @property
    def egress_ipv4_addresses(self) -> tuple[str, ...]:
        """The node's IPv4 egress addresses in block order; empty: none on record."""
        if self.egress_ipv4 is None:
            return ()
        return (self.egress_ipv4, *self.egress_ipv4_extra.split())
