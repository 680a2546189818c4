"""Requests and answers of the subscription endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from burrow.control.accounts.schemas import Reason
from burrow.control.models import SubscriptionStatus
from burrow.control.plans.schemas import PlanOut


class SubscriptionOut(BaseModel):
    id: int
    plan: PlanOut
    status: SubscriptionStatus
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool = Field(
        description="True: the subscription ends at the period end instead of renewing."
    )
    canceled_at: datetime | None = Field(description="When the customer asked to cancel.")
    ended_at: datetime | None = Field(description="When the subscription stopped giving access.")
    has_access: bool = Field(
        description="Whether this subscription gives VPN access now (the account must be active "
        "too)."
    )
    next: str = Field(
        description="What happens next, in plain words.", examples=["Renews on 2026-12-22"]
    )


class SubscriptionChangeOut(BaseModel):
    message: str = Field(description="What was done and what happens next, in plain words.")
    subscription: SubscriptionOut


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_code: str = Field(min_length=1, max_length=64, examples=["personal-monthly"])
    months: int | None = Field(None, ge=1, le=120, description="Give either months or days.")
    days: int | None = Field(None, ge=1, le=3650, description="Give either months or days.")
    # Why the time is given (a goodwill gesture, an outage ...), for the admin audit trail.
    reason: Reason | None = None

    @field_validator("plan_code")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("a plan code has no control characters; see GET /api/v1/admin/plans")
        return value

    @model_validator(mode="after")
    def _one_length(self) -> GrantIn:
        if (self.months is None) == (self.days is None):
            raise ValueError("give the length of the grant as either 'months' or 'days', not both")
        return self
