"""Request and response bodies of the devices API.

The lowest layer of the domain: imports pydantic and nothing else of burrow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from burrow.control.params import MAX_ID


def _clean_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("give the device a name (1 to 64 characters)")
    if not value.isprintable():
        raise ValueError("the name may not contain line breaks, tabs or other control characters")
    return value


DeviceName = Annotated[
    str, Field(min_length=1, max_length=64, examples=["Laptop"]), AfterValidator(_clean_name)
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(_Request):
    name: DeviceName
    public_key: str | None = Field(
        None,
        max_length=100,
        description="The device's WireGuard public key (44 characters of base64). "
        "Leave it out and the server makes a key pair and returns the private key once.",
    )
    node_id: int | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="Only with a server-made key: the server whose ready-to-use config the "
        "answer includes. Default: the recommended server.",
    )
    dns_filters: FilterNames = Field(default_factory=list)


class DeviceUpdate(_Request):
    name: DeviceName


FilterNames = Annotated[
    list[Annotated[str, Field(max_length=32)]],
    Field(
        max_length=16,
        description="The DNS filter lists the device's resolver applies (names from the "
        "server's filter list choices); empty: no filtering.",
        examples=[["ads", "trackers"]],
    ),
]


class DeviceDnsFilters(_Request):
    filters: FilterNames


class DeviceRotate(_Request):
    public_key: str | None = Field(
        None,
        max_length=100,
        description="The new public key. Leave it out and the server makes a new key pair.",
    )
    node_id: int | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="Only with a server-made key: the server whose config the answer includes.",
    )


class DeviceConnection(BaseModel):
    """Whether the device is connected now, from the live store (never stored)."""

    state: Literal["connected", "blocked", "idle"] = "idle"
    reason: str | None = Field(
        None, description="Why the device is blocked, and what to do about it."
    )
    node_name: str | None = Field(None, description="The server it is connected to.")


class DeviceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    public_key: str
    ipv4: str = Field(description="The device's tunnel IPv4 address, the same on every server.")
    ipv6: str = Field(description="The device's tunnel IPv6 address, the same on every server.")
    dns_filters: list[str] = Field(
        default_factory=list, description="The DNS filter lists its resolver applies."
    )
    created_at: datetime
    connection: DeviceConnection = Field(default_factory=DeviceConnection)

    @field_validator("dns_filters", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [name for name in value.split(",") if name]
        return value


class DeviceIssued(DeviceRead):
    """A device right after it was added or re-keyed."""

    private_key: str | None = Field(
        None,
        description="Only when the server made the key pair: the private key. It is shown this "
        "once and never stored; keep it, the server cannot show it again.",
    )
    config: str | None = Field(
        None,
        description="Only when the server made the key pair and a server is available: a "
        "complete wg-quick config (with the private key) for ``config_node_id``.",
    )
    config_node_id: int | None = None
    config_filename: str | None = Field(
        None, description="The name to save ``config`` under (wg-quick takes it as the tunnel's)."
    )
    config_qr_svg: str | None = Field(
        None,
        description="``config`` as a QR code (SVG) for the WireGuard apps to scan. Only here: a "
        "config downloaded later lacks the private key, so no QR code is made of it.",
    )
