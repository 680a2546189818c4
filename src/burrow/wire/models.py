"""Pydantic models of the node API.

The control plane serves these under ``API_PREFIX``; the node agent reads them.
A peer is identified by its WireGuard public key: the node never learns who
the customer is. Nothing here carries a client's endpoint address.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Annotated, Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

API_PREFIX = "/node-api/v1"
# wireguard-go refuses a peer beyond this many on one interface (device.MaxPeers).
MAX_PEERS_PER_INTERFACE = 1 << 16


def is_valid_wg_key(value: str) -> bool:
    """A WireGuard key is 32 bytes, written as 44 characters of standard base64."""
    if len(value) != 44 or not value.endswith("="):
        return False
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 32


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


WIREGUARD = "wireguard"
# The protocols a node may serve besides WireGuard, and how a node checks their credentials.
CREDENTIAL_PROTOCOLS = ("openvpn", "ikev2")
ProtocolField = Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{1,15}$")]


class CredentialSpec(_Wire):
    """A device's sign-in for one protocol: never the secret, only what checks it.

    ``verifier`` for OpenVPN: ``sha256$<salt hex>$<hex of SHA-256(salt + secret)>`` (the secret
    is server-made, 256 bits, so one fast salted digest is enough); for IKEv2 (EAP-MSCHAPv2):
    ``nt$<hex of the NT hash>``.
    """

    protocol: ProtocolField
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    verifier: str = Field(min_length=1, max_length=200)


class ProtocolLimit(_Wire):
    """How many connections of one subscription one node may admit over one protocol."""

    protocol: ProtocolField
    per_server: int = Field(ge=1, le=1000)


class PeerSpec(_Wire):
    """One peer a node must serve.

    The WireGuard public key names the device everywhere (reports, removals), whichever
    protocol it connects with; the tunnel addresses are the same on every protocol.
    """

    public_key: str
    allowed_ips: tuple[str, ...] = Field(
        description="The device's tunnel addresses, one /32 and one /128."
    )
    credentials: tuple[CredentialSpec, ...] = Field(
        (), description="Its credentials for protocols other than WireGuard."
    )
    subscription: str | None = Field(
        None,
        max_length=64,
        description="An opaque key shared by the devices of one subscription (null: older "
        "control planes), so a node can apply per-server limits at connect time on its own.",
    )
    per_server: tuple[ProtocolLimit, ...] = Field(
        (), description="The subscription's per-server limits; a protocol left out: none."
    )

    def credential(self, protocol: str) -> CredentialSpec | None:
        for credential in self.credentials:
            if credential.protocol == protocol:
                return credential
        return None

    def per_server_limit(self, protocol: str) -> int | None:
        for limit in self.per_server:
            if limit.protocol == protocol:
                return limit.per_server
        return None

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not is_valid_wg_key(value):
            raise ValueError("not a WireGuard public key (44 characters of base64)")
        return value

    @field_validator("allowed_ips")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_network(v, strict=True)) for v in value)


class FairUseSpec(_Wire):
    """When and how hard the node shapes its heaviest peers (the policy's ``[fair_use]``).

    The node measures per-peer traffic in its own memory only; nothing of it is reported.
    """

    shaped_rate_mbit: int = Field(ge=1, le=100_000, description="A shaped peer's rate, each way.")
    trigger_utilisation_percent: int = Field(
        ge=1, le=100, description="Shape when the window's average use of the uplink reaches this."
    )
    window_minutes: int = Field(ge=1, le=1440, description="The window use is averaged over.")
    uplink_mbit: int | None = Field(
        None,
        ge=1,
        description="The node's uplink bandwidth; null: the node agent's own setting (without "
        "one the node does not shape).",
    )


class FilterListSpec(_Wire):
    """One filter list, named by its content: the node downloads it once per hash."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    names: int = Field(ge=0, description="How many domain names the list holds.")


class ResolverSpec(_Wire):
    """One resolver listener: a pair of addresses and the filter lists it applies.

    The address a device's configuration names is its filter choice; the resolver never learns
    who is asking.
    """

    ipv4: str
    ipv6: str
    lists: tuple[str, ...] = Field((), description="Filter list names; empty: no filtering.")

    @field_validator("ipv4", "ipv6")
    @classmethod
    def _address(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))


class DnsSpec(_Wire):
    """The node's resolver (the policy's ``[dns]``): listeners, lists and where it asks."""

    resolvers: tuple[ResolverSpec, ...] = Field(
        description="The first one listens on the gateway addresses and filters nothing."
    )
    lists: tuple[FilterListSpec, ...] = ()
    forwarders: tuple[str, ...] = Field(
        (), description="Upstream resolvers; empty: the node resolves recursively itself."
    )
    dnssec: bool = True

    @field_validator("forwarders")
    @classmethod
    def _forwarders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_address(v)) for v in value)


class NatSpec(_Wire):
    """How the node translates tunnel addresses to its egress address (the policy's ``nat``).

    ``random``: a random source port per connection, so nothing ties a port to a device.
    ``deterministic`` (RFC 7422): each tunnel address gets its own fixed block of ports,
    worked out by ``burrow.wire.nat``; devices beyond the blocks' count are refused.
    """

    mode: Literal["random", "deterministic"]
    ports_per_device: int = Field(1000, ge=16, le=64512)
    devices_per_egress_ip: int = Field(64, ge=1, le=4032)
    first_port: int = Field(1024, ge=1024, le=65535)

    @model_validator(mode="after")
    def _fits(self) -> NatSpec:
        last = self.first_port + self.ports_per_device * self.devices_per_egress_ip - 1
        if self.mode == "deterministic" and last > 65535:
            raise ValueError(
                f"{self.devices_per_egress_ip} blocks of {self.ports_per_device} ports from "
                f"{self.first_port} end at {last}, past port 65535"
            )
        return self


class NetworkSpec(_Wire):
    """How the node sets up its interface and firewall."""

    listen_port: int = Field(51820, ge=1, le=65535)
    mtu: int = Field(1320, ge=1280, le=1500)
    tunnel_ipv4: str = Field(description="The fleet-wide IPv4 tunnel pool, e.g. 10.64.0.0/10.")
    tunnel_ipv6: str = Field(description="The fleet-wide IPv6 tunnel pool, e.g. fd42:b0::/48.")
    gateway_ipv4: str = Field(description="The node's own address inside the tunnel pool.")
    gateway_ipv6: str
    egress_ipv4: str | None = None
    egress_ipv6: str | None = None
    egress_ipv4_extra: tuple[str, ...] = Field(
        (),
        description="Further IPv4 egress addresses after egress_ipv4: under deterministic NAT "
        "each holds its own devices' blocks, in this order.",
    )
    blocked_egress_tcp_ports: tuple[int, ...] = (25,)
    blocked_egress_udp_ports: tuple[int, ...] = ()
    isolate_clients: bool = True
    fair_use: FairUseSpec | None = Field(
        None, description="Fair-use shaping; null: the policy shapes nobody."
    )
    dns: DnsSpec | None = Field(
        None, description="The node's resolver; null (older control planes): none is run."
    )
    peers_per_interface: int = Field(
        MAX_PEERS_PER_INTERFACE,
        ge=2,
        le=MAX_PEERS_PER_INTERFACE,
        description="Devices per WireGuard interface (a power of two). The device at pool "
        "index i is served by interface i // peers_per_interface on listen_port + that number.",
    )

    @field_validator("peers_per_interface")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two")
        return value

    def interface_of(self, ipv4: str) -> int:
        """Which of the node's interfaces serves the device with this tunnel address."""
        pool = ipaddress.ip_network(self.tunnel_ipv4, strict=False)
        offset = int(ipaddress.ip_address(ipv4)) - int(pool.network_address)
        return max(0, offset) // self.peers_per_interface

    def interface_slice(self, number: int) -> tuple[str, str]:
        """The tunnel addresses interface ``number`` serves (IPv4 and IPv6 networks)."""
        bits = self.peers_per_interface.bit_length() - 1
        out: list[str] = []
        for pool_text, width in ((self.tunnel_ipv4, 32), (self.tunnel_ipv6, 128)):
            pool = ipaddress.ip_network(pool_text, strict=False)
            first = int(pool.network_address) + number * self.peers_per_interface
            out.append(str(ipaddress.ip_network((first, width - bits))))
        return out[0], out[1]

    nat: NatSpec | None = Field(
        None,
        description="How tunnel addresses are translated; null (older control planes): the "
        "kernel's default source NAT.",
    )


class DesiredState(_Wire):
    """Everything a node must serve at one revision."""

    revision: int = Field(ge=0)
    network: NetworkSpec
    peers: tuple[PeerSpec, ...]


class FullState(_Wire):
    kind: Literal["full"] = "full"
    state: DesiredState


class DeltaState(_Wire):
    """What changed after ``from_revision`` up to ``revision``."""

    kind: Literal["delta"] = "delta"
    from_revision: int = Field(ge=0)
    revision: int = Field(ge=0)
    upserts: tuple[PeerSpec, ...] = ()
    removals: tuple[str, ...] = Field((), description="Public keys the node must drop.")
    network: NetworkSpec | None = Field(
        None,
        description="The node's current network settings, so that an operator's change (port, "
        "egress address, blocked ports) reaches the node without a full state. Absent from "
        "older control planes; the node then keeps what it has.",
    )


StateUpdate = Annotated[FullState | DeltaState, Field(discriminator="kind")]


class EnrollRequest(_Wire):
    token: str = Field(min_length=16, max_length=200)
    public_key: str

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not is_valid_wg_key(value):
            raise ValueError("not a WireGuard public key (44 characters of base64)")
        return value


class EnrollResponse(_Wire):
    node_id: int
    node_name: str
    node_token: str
    interface_name: str
    endpoint_host: str | None = Field(
        None,
        max_length=253,
        description="The name or address clients dial (the OpenVPN server certificate's SAN).",
    )


class OpenVpnOffer(_Wire):
    """What a node tells the control plane about its OpenVPN, for the customers' .ovpn files.

    Only what clients need: the node's CA certificate and tls-crypt key (which OpenVPN needs on
    both ends) and the transports it serves. Its private keys never leave the node.
    """

    ca_certificate: str = Field(min_length=1, max_length=20_000)
    tls_crypt_key: str = Field(min_length=1, max_length=2_000)
    transports: tuple[str, ...] = Field(
        min_length=1,
        max_length=16,
        description='Each "udp:PORT" or "tcp:PORT", in the order clients should try them.',
    )

    @field_validator("ca_certificate")
    @classmethod
    def _pem(cls, value: str) -> str:
        if "-----BEGIN CERTIFICATE-----" not in value or "PRIVATE" in value:
            raise ValueError("not a PEM certificate")
        return value

    @field_validator("tls_crypt_key")
    @classmethod
    def _static_key(cls, value: str) -> str:
        if "-----BEGIN OpenVPN Static key V1-----" not in value:
            raise ValueError("not an OpenVPN static key")
        return value

    @field_validator("transports")
    @classmethod
    def _transports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            proto, _, port = item.partition(":")
            if proto not in ("udp", "tcp") or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f'not a transport ("udp:PORT" or "tcp:PORT"): {item!r}')
        return value


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_host(value: str) -> bool:
    """A DNS name or an IP address, as a client dials it and a certificate names it."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    return len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


class IkeV2Offer(_Wire):
    """What a node tells the control plane about its IKEv2, for the customers' profiles.

    ``host`` is the name clients dial, which the node's server certificate carries (IKEv2
    clients check the server's identity against it); ``ca_certificate`` is the CA that
    certificate chains to, which every profile installs. A node that never sends this serves
    no IKEv2, and no profile is made for it.
    """

    host: str = Field(min_length=1, max_length=253)
    ca_certificate: str = Field(min_length=1, max_length=20_000)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not is_host(value):
            raise ValueError("not a DNS name or an IP address")
        return value

    @field_validator("ca_certificate")
    @classmethod
    def _ca(cls, value: str) -> str:
        # Parsed here, so a profile never carries a CA a phone would refuse to import.
        if "PRIVATE" in value:
            raise ValueError("a CA certificate, never a private key")
        try:
            certificate = x509.load_pem_x509_certificate(value.encode())
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except (ValueError, x509.ExtensionNotFound):
            raise ValueError("not a PEM X.509 CA certificate") from None
        if not constraints.value.ca:
            raise ValueError("a server's certificate, not its CA's")
        return value


class PeerStatus(_Wire):
    """A peer's state as the node saw it. Never its endpoint address."""

    public_key: str
    protocol: ProtocolField = Field(
        WIREGUARD, description="The protocol of this connection; one entry per protocol."
    )
    connected: bool = Field(description="A handshake younger than the idle threshold.")
    rx_bytes: int = Field(
        0, ge=0, description="Bytes received from the peer since the last report."
    )
    tx_bytes: int = Field(0, ge=0, description="Bytes sent to the peer since the last report.")


class ConnectionRefusal(_Wire):
    """A connection the node itself refused at connect time (an OpenVPN client over its
    per-server limit): the device, the protocol and the reason the client was shown. Never an
    address or a time; the node lists it while it holds it (a minute or so)."""

    public_key: str
    protocol: ProtocolField
    reason: str = Field(min_length=1, max_length=300, description="What the client was shown.")


class NodeReport(_Wire):
    """Live status, sent every few seconds.

    ``boot_id`` changes whenever the agent (re)starts; with ``seq`` it lets the
    control plane drop a repeated report and notice a lost one.
    """

    boot_id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0)
    revision: int = Field(ge=0, description="The desired-state revision the node has applied.")
    peers: tuple[PeerStatus, ...] = ()
    refused: tuple[ConnectionRefusal, ...] = Field(
        (),
        max_length=10_000,
        description="Connections the node refused by itself lately, so the panel can say why.",
    )


class BlockedConnection(_Wire):
    """A connection over another protocol than WireGuard the node must cut (over a limit)."""

    protocol: ProtocolField
    public_key: str
    reason: str = Field("", max_length=300, description="What the customer is shown.")


class ReportAck(_Wire):
    accepted: bool
    last_seq: int
    blocked: tuple[str, ...] = Field(
        (), description="Public keys the node must keep blocked on WireGuard (limits), if any."
    )
    blocked_connections: tuple[BlockedConnection, ...] = Field(
        (), description="Connections over other protocols the node must cut (limits)."
    )
