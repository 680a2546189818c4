"""Request and response bodies of the abuse desk (admin API and panel).

The lowest layer of the domain: pydantic and the accounts' and admin's field types only.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from burrow.control.accounts.schemas import Reason, plain_text
from burrow.control.admin.schemas import Clause
from burrow.control.models import ComplaintAction, ComplaintStatus

SOURCE_MAX = 200
EVIDENCE_MAX = 20_000
# A CSV of notices: at most this many lines in one import.
IMPORT_MAX_LINES = 5000
IMPORT_MAX_CHARS = 500_000


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"'{value}' is not an IP address") from None


Source = Annotated[
    str,
    AfterValidator(plain_text),
    Field(
        min_length=1,
        max_length=SOURCE_MAX,
        description="Who complained (a network's abuse desk, a rights holder).",
        examples=["abuse@example.net"],
    ),
]
Evidence = Annotated[
    str,
    AfterValidator(plain_text),
    Field(max_length=EVIDENCE_MAX, description="What the complainant sent, as text."),
]
EgressAddress = Annotated[
    str,
    Field(max_length=45, description="The shared egress address the complaint names."),
    AfterValidator(_address),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComplaintIn(_Body):
    clause: Clause
    source: Source
    egress_ip: EgressAddress
    port: int = Field(ge=1, le=65535, description="The source port the complainant saw.")
    seen_at: AwareDatetime = Field(description="When they saw it, with its time zone.")
    evidence: Evidence = ""


class ComplaintImportIn(_Body):
    """Many notices at once: one line each of ``address,port,time`` (a header line, blank
    lines and lines starting with # are skipped); the clause, source and evidence apply to
    every line."""

    clause: Clause
    source: Source
    evidence: Evidence = ""
    csv: str = Field(min_length=1, max_length=IMPORT_MAX_CHARS)


class ComplaintAct(_Body):
    action: Literal["warn", "suspend", "terminate"]
    reason: Reason


class ComplaintRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    clause: str
    source: str
    egress_ip: str
    port: int
    seen_at: datetime
    evidence: str
    status: ComplaintStatus
    finding: str | None
    account_id: int | None
    device_id: int | None
    action: ComplaintAction | None
    actioned_at: datetime | None
    created_at: datetime


class ComplaintPage(BaseModel):
    items: list[ComplaintRead]
    total: int


class ImportRead(BaseModel):
    recorded: int
    complaints: list[ComplaintRead]


class TraceRead(BaseModel):
    """What a trace found: a device and its account, nothing, or why nothing can be found."""

    complaint: ComplaintRead
    outcome: Literal["traced", "not_found", "untraceable"]
    reason: str = Field(description="In words an operator can send on to the complainant.")
    account_id: int | None = None
    account_email: str | None = None
    device_id: int | None = None
    device_name: str | None = None
    tunnel_ipv4: str | None = None
    port_block: str | None = Field(None, examples=["203.0.113.6:2024-3023"])
