"""Request and response bodies of the admin API's own routes: the audit trail, terminations.

The lowest layer of the domain: pydantic and the accounts' field types, nothing of the services.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from burrow.control.accounts.schemas import Reason, plain_text

CLAUSE_MAX = 200
ACTION_MAX = 64
TARGET_TYPE_MAX = 32
TARGET_ID_MAX = 64

Clause = Annotated[
    str,
    AfterValidator(plain_text),
    Field(
        min_length=1,
        max_length=CLAUSE_MAX,
        description="The clause of the terms that was broken, as GET /api/v1/admin/terms-clauses "
        "lists them.",
        examples=["Prohibited activities: spam or unsolicited bulk messaging"],
    ),
]
ActionFilter = Annotated[str, AfterValidator(plain_text), Field(max_length=ACTION_MAX)]
TargetTypeFilter = Annotated[str, AfterValidator(plain_text), Field(max_length=TARGET_TYPE_MAX)]
TargetIdFilter = Annotated[str, AfterValidator(plain_text), Field(max_length=TARGET_ID_MAX)]


class TerminationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clause: Clause
    reason: Reason


class AdminActionOut(BaseModel):
    id: int
    admin_id: int | None = Field(description="Null once the administrator's account is gone.")
    admin_email: str | None
    action: str = Field(examples=["account.suspend"])
    target_type: str = Field(examples=["account"])
    target_id: str
    reason: str
    detail: dict[str, Any]
    at: datetime


class AdminActionPage(BaseModel):
    items: list[AdminActionOut]
    total: int
    limit: int
    offset: int


class TermsClausesOut(BaseModel):
    terms_version: str
    clauses: list[str]
