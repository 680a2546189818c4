"""Request and response bodies of the nodes API, and the node's live record.

The lowest layer of the domain: imports pydantic and the models' enums, nothing else of burrow.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_serializer,
    model_validator,
)

from burrow.control.models import NodeStatus

# ISO 3166-1 alpha-2, the officially assigned codes.
_ISO_3166_ALPHA_2 = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ
DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP
GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG
KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML
MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE
PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL
SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM
US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
"""
# ZZ is ISO 3166's user-assigned "unknown or unspecified" code: a node whose operator has
# not said where it is (the embedded node before BURROW_EMBEDDED_NODE_COUNTRY is set).
UNKNOWN_COUNTRY = "ZZ"
COUNTRY_CODES = frozenset(_ISO_3166_ALPHA_2.split()) | {UNKNOWN_COUNTRY}

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _node_name(value: str) -> str:
    value = value.strip().lower()
    if not _NAME.fullmatch(value):
        raise ValueError(
            "use 1 to 63 lowercase letters, digits and hyphens, not starting or ending with "
            "a hyphen (for example ams-1)"
        )
    return value


def _country(value: str) -> str:
    value = value.strip().upper()
    if value not in COUNTRY_CODES:
        raise ValueError("give the country as its ISO 3166 two-letter code, such as NL or US")
    return value


def _city(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("give the city the node is in")
    if not value.isprintable():
        raise ValueError("the city may not contain line breaks, tabs or other control characters")
    return value


def _host(value: str) -> str:
    value = value.strip().lower()
    try:
        return str(ipaddress.ip_address(value.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            "give a DNS name (such as vpn1.example.net) or an IP address the devices can reach"
        )
    return ".".join(labels)


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise ValueError("not an IPv4 address (such as 203.0.113.7)") from None


def _ipv6(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(value.strip()))
    except ValueError:
        raise ValueError("not an IPv6 address (such as 2001:db8::7)") from None


NodeName = Annotated[
    str, Field(min_length=1, max_length=63, examples=["ams-1"]), AfterValidator(_node_name)
]
CountryCode = Annotated[
    str,
    Field(min_length=2, max_length=2, examples=["NL"], description="ISO 3166 alpha-2."),
    AfterValidator(_country),
]
City = Annotated[
    str, Field(min_length=1, max_length=100, examples=["Amsterdam"]), AfterValidator(_city)
]
EndpointHost = Annotated[
    str,
    Field(min_length=1, max_length=253, examples=["ams-1.vpn.example.net"]),
    AfterValidator(_host),
]
Port = Annotated[int, Field(ge=1, le=65535)]
EgressIPv4 = Annotated[
    str,
    Field(max_length=15, description="The shared address the node's clients leave by."),
    AfterValidator(_ipv4),
]
EgressIPv6 = Annotated[str, Field(max_length=39), AfterValidator(_ipv6)]


def _address_list(value: object) -> object:
    """A list, or one text of addresses separated by commas or spaces (CLI, forms)."""
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,]+", value) if part]
    return value


def _distinct(value: list[str]) -> list[str]:
    repeated = sorted({a for a in value if value.count(a) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} is named more than once")
    return value


MoreEgressIPv4 = Annotated[
    list[EgressIPv4],
    BeforeValidator(_address_list),
    Field(
        max_length=64,
        description="Further shared IPv4 addresses after egress_ipv4, in order. Under "
        "deterministic NAT each holds its own devices' port blocks, so the node holds "
        "(1 + these) x the policy's blocks per address.",
        examples=[["203.0.113.8", "203.0.113.9"]],
    ),
    AfterValidator(_distinct),
]


def check_egress(first: str | None, more: list[str]) -> None:
    """Further egress addresses need a first one, and none of them may repeat it."""
    if more and first is None:
        raise ValueError(
            "further egress IPv4 addresses need the first egress address (egress_ipv4) too"
        )
    if first is not None and first in more:
        raise ValueError(f"{first} is named more than once")


Capacity = Annotated[
    int, Field(ge=1, le=1_000_000, description="How many devices it serves at once at most.")
]
UplinkMbit = Annotated[
    int,
    Field(
        ge=1,
        le=1_000_000,
        description="The uplink's bandwidth in Mbit/s; fair-use shaping starts when the node's "
        "traffic nears it.",
    ),
]


def endpoint_text(host: str, port: int) -> str:
    """``host:port`` as WireGuard writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts; ValueError with a reason."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"'{text}' is not HOST:PORT (for example vpn1.example.net:51820)")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"write an IPv6 endpoint in brackets: [{host}]:{port}")
    return host.removeprefix("[").removesuffix("]"), int(port)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeCreate(_Request):
    name: NodeName
    country: CountryCode
    city: City
    endpoint_host: EndpointHost
    endpoint_port: Port = 51820
    egress_ipv4: EgressIPv4 | None = None
    egress_ipv6: EgressIPv6 | None = None
    egress_ipv4_extra: MoreEgressIPv4 = Field(default_factory=list)
    capacity: Capacity = 1000
    uplink_mbit: UplinkMbit | None = None

    @model_validator(mode="after")
    def _egress(self) -> NodeCreate:
        check_egress(self.egress_ipv4, self.egress_ipv4_extra)
        return self

    @field_serializer("egress_ipv4_extra")
    def _stored(self, value: list[str]) -> str:
        return " ".join(value)  # as the nodes table keeps them


class NodeUpdate(_Request):
    """Only the fields sent change; send ``null`` for an egress address to clear it."""

    name: NodeName | None = None
    country: CountryCode | None = None
    city: City | None = None
    endpoint_host: EndpointHost | None = None
    endpoint_port: Port | None = None
    egress_ipv4: EgressIPv4 | None = None
    egress_ipv6: EgressIPv6 | None = None
    egress_ipv4_extra: MoreEgressIPv4 | None = None
    capacity: Capacity | None = None
    uplink_mbit: UplinkMbit | None = None

    @field_serializer("egress_ipv4_extra")
    def _stored(self, value: list[str] | None) -> str:
        return " ".join(value or ())  # as the nodes table keeps them; null clears them


class NodeLive(BaseModel):
    """What the live store keeps per node from its reports. RAM only, no per-device data."""

    boot_id: str
    last_seq: int
    reported_at: float = Field(description="Unix time of the last accepted report.")
    connected_devices: int
    throughput_bps: float | None = None
    applied_revision: int
    # The uplink credit left (bytes each way) and what went past it (``nodes.uplink``).
    credit_rx: float | None = None
    credit_tx: float | None = None
    dropped_bytes: int = 0
    dropped_at: float | None = None


class NodeHealth(BaseModel):
    state: Literal["online", "silent", "never-reported"] = Field(
        description="online: reported within the last minute; silent: reported before, not "
        "lately; never-reported: no report since this control plane started."
    )
    last_report_age_seconds: float | None = None
    connected_devices: int | None = None
    throughput_bps: float | None = Field(None, description="Bits per second, both directions.")
    applied_revision: int | None = None
    dropped_bytes: int | None = Field(
        None,
        description="Bytes this node reported beyond what its uplink can carry, dropped (since "
        "it enrolled or the control plane started). More than 0: the node's reports are not "
        "to be trusted, or its uplink is set too low.",
    )


class NodeRead(BaseModel):
    id: int
    name: str
    country: str
    city: str
    endpoint_host: str
    endpoint_port: int
    endpoint: str
    egress_ipv4: str | None
    egress_ipv6: str | None
    egress_ipv4_extra: list[str] = Field(
        default_factory=list, description="Further IPv4 egress addresses, in block order."
    )
    capacity: int
    uplink_mbit: int | None = None
    status: NodeStatus
    wg_public_key: str | None
    created_at: datetime
    enrolled_at: datetime | None
    retired_at: datetime | None
    enrollment_expires_at: datetime | None = Field(
        description="When the outstanding enrollment token expires; null when there is none."
    )
    health: NodeHealth


class EnrollmentIssued(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored.")
    expires_at: datetime
    command: str = Field(description="What to run on the node to enroll it.")


class NodeCreated(BaseModel):
    node: NodeRead
    enrollment: EnrollmentIssued


class ServerRead(BaseModel):
    """A server as customers see it."""

    id: int
    name: str
    country: str
    city: str
    endpoint: str
    public_key: str | None
    load: float = Field(ge=0, description="Connected devices over capacity; 0 when unknown.")
    recommended: bool = Field(description="True on the least-loaded server.")
    protocols: list[str] = Field(
        default_factory=lambda: ["wireguard"],
        description="The VPN protocols this server serves (wireguard, openvpn, ...).",
    )
