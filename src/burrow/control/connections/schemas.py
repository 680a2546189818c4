"""Response bodies of the connections API.

The lowest layer of the domain: imports pydantic and nothing else of burrow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ConnectionState = Literal["connected", "blocked", "idle"]
PrivacyMode = Literal["strict", "metered"]


class ConnectionRead(BaseModel):
    """One of the account's current connections, from the live store. Never an IP address."""

    device_id: int
    device_name: str | None = Field(None, description="None if the device was just removed.")
    node_name: str
    node_country: str
    node_city: str
    protocol: str
    state: Literal["connected", "blocked"]
    reason: str | None = Field(
        None, description="Why a blocked connection is blocked, and what to do about it."
    )
    connected_since: datetime | None = Field(
        None, description='Only under privacy.mode = "metered"; strict mode shows no times.'
    )


class ConnectionList(BaseModel):
    connections: list[ConnectionRead]
    note: str = Field(description="How connections are counted, in plain words.")


class ConnectionRecordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: int | None
    node_name: str
    node_country: str
    node_city: str
    started_at: datetime
    ended_at: datetime | None = Field(None, description="None while the connection is open.")
    duration_seconds: int
    rx_bytes: int = Field(description="Bytes the server received from the device (upload).")
    tx_bytes: int = Field(description="Bytes the server sent to the device (download).")


class ConnectionRecordList(BaseModel):
    mode: PrivacyMode
    recorded: bool = Field(description="Whether this provider keeps connection records at all.")
    retention_days: int | None = None
    statement: str = Field(description="What is recorded, in plain words.")
    records: list[ConnectionRecordRead]
