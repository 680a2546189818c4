"""What the affiliate program's API takes and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, HttpUrl


class AffiliateApply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_name: str = Field(min_length=1, max_length=200)
    website: HttpUrl | None = Field(None, description="Your promotional site.")
    paypal_email: EmailStr = Field(description="The PayPal account payouts go to.")


class AffiliateDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny", "suspend", "terminate"]
    reason: str = Field(min_length=1, max_length=2000)


class CommissionReview(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["clear", "reject"]
    reason: str = Field(min_length=1, max_length=2000)


class AffiliateRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    status: str
    status_reason: str | None
    contact_name: str | None
    website: str | None
    paypal_email: str | None
    clicks: int
    created_at: datetime


class CommissionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    affiliate_id: int
    order_id: int | None
    kind: str
    status: str
    amount_minor: int
    currency: str
    payout_minor: int
    available_at: datetime
    reason: str | None


class PayoutItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    batch_id: int
    affiliate_id: int
    amount_minor: int
    currency: str
    status: str


class PayoutBatchRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sender_batch_id: str
    status: str
    currency: str
    total_minor: int
    provider_batch_id: str | None
    attempts: int
    error: str | None


class AffiliateAdminRead(AffiliateRead):
    balance_minor: int
    referred_orders: int
    refunded_orders: int
    refund_rate_percent: float


class PayoutBatchDetail(PayoutBatchRead):
    items: list[PayoutItemRead]


class AffiliateDashboard(BaseModel):
    affiliate: AffiliateRead
    link: str
    signups: int
    paid_orders: int
    balance_minor: int
    currency: str
    by_status: dict[str, int]
    commissions: list[CommissionRead]
    payouts: list[PayoutItemRead]
