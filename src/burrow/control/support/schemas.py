"""Requests and answers of the support desk's endpoints. Text only: a body with any other
member (an attachment) is refused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from burrow.control.accounts.schemas import Email, plain_text
from burrow.control.models import SupportAuthor, SupportStatus, SupportTopic, SupportVia

MESSAGE_MAX = 10_000

Subject = Annotated[
    str,
    AfterValidator(plain_text),
    Field(min_length=1, max_length=200, description="A few words saying what it is about."),
]
MessageText = Annotated[
    str,
    AfterValidator(plain_text),
    Field(
        min_length=1,
        max_length=MESSAGE_MAX,
        description="What you want to tell support, in your words (text only; IP addresses "
        "are removed before it is stored).",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SupportRequestIn(_Body):
    topic: SupportTopic
    subject: Subject
    message: MessageText


class SignedOutSupportRequestIn(SupportRequestIn):
    email: Email = Field(description="Where support answers you.")


class SupportMessageIn(_Body):
    message: MessageText


class SupportAnswerIn(_Body):
    message: MessageText
    status: SupportStatus = Field(
        SupportStatus.waiting_on_customer,
        description="The request's state after this answer.",
    )


class SupportStatusIn(_Body):
    status: SupportStatus
    expected: SupportStatus | None = Field(
        None, description="Change it only while it is still in this state (as you saw it)."
    )


class SupportOwnerIn(_Body):
    owner_id: int = Field(ge=1, le=2**63 - 1, description="The administrator's account id.")


class SupportMessageOut(BaseModel):
    id: int
    author: SupportAuthor
    body: str
    via: SupportVia
    created_at: datetime


class SupportRequestOut(BaseModel):
    id: int
    topic: SupportTopic
    subject: str
    status: SupportStatus
    opened_at: datetime
    due_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    refund_request_id: int | None
    messages: list[SupportMessageOut]


class AdminSupportRequestOut(SupportRequestOut):
    account_id: int | None
    requester_email: str
    owner_id: int | None
    owner_email: str | None
    overdue: bool
    seconds_left: int
    cancel_account_id: int | None
    cancel_account_email: str | None
    cancelled_at: datetime | None
