"""Requests and answers of the refund endpoints. Amounts are integers in minor units."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from burrow.control.models import RefundStatus


def _printable(value: str) -> str:
    if not all(ch.isprintable() or ch in "\n\t" for ch in value):
        raise ValueError("must not contain control characters")
    return value


class RefundRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        "", max_length=2000, description="Why you ask for your money back, in your words."
    )
    support_request_id: int | None = Field(
        None,
        ge=1,
        le=2**63 - 1,
        description="Your support conversation about the problem, if you had one first "
        "(offered before a refund where the provider's policy says so); the request links to "
        "it.",
    )

    _plain = field_validator("reason")(_printable)


class RuleOutcomeOut(BaseModel):
    rule: str = Field(description="The rule of the policy's [refunds] section.")
    passed: bool
    needs_judgement: bool = Field(description="A person decides on this rule.")
    message: str = Field(description="What was found, in plain words.")
    evidence: dict[str, Any]


class RefundOut(BaseModel):
    id: int
    order_id: int
    status: RefundStatus
    reason: str
    requested_at: datetime
    due_at: datetime | None = Field(description="When a person must have acted on it.")
    decided_at: datetime | None
    amount_minor: int | None = Field(
        description="Approved (or, while queued, proposed) amount in minor units."
    )
    currency: str
    decision_reason: str | None
    terms_version: str = Field(description="The terms in force when it was decided.")
    executed_at: datetime | None
    outcomes: list[RuleOutcomeOut]


class AdminRefundOut(RefundOut):
    account_id: int
    order_amount_minor: int
    unsupported_device: bool
    seconds_left: int | None = Field(
        description="Until the deadline; negative when overdue, None without a deadline."
    )
    overdue: bool


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int | None = Field(
        None,
        gt=0,
        le=10_000_000_000,
        strict=True,
        description="A partial amount in minor units; absent: the proposed amount.",
    )
    reason: str = Field(min_length=1, max_length=2000)

    _plain = field_validator("reason")(_printable)


class RefuseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=2000, description="Shown to the customer; say why."
    )

    _plain = field_validator("reason")(_printable)


class FindingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unsupported_device: bool = Field(
        description="Support found that an unsupported device, OS or site was used."
    )


class RefundQueueSummaryOut(BaseModel):
    queued: int = Field(description="Requests waiting for a person.")
    overdue: int = Field(description="Of those, how many are past the policy's service level.")
