"""Requests and answers of the billing endpoints. Amounts are integers in minor units."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from burrow.control.models import OrderKind, OrderStatus, PaymentMethod

Currency = Field(pattern=r"^[A-Z]{3}$", examples=["USD"], description="ISO 4217, upper case.")


def _printable(value: str | None) -> str | None:
    if value is not None and not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    provider: str
    provider_payment_id: str
    amount_minor: int = Field(description="In minor units (cents) of the currency.")
    currency: str
    created_at: datetime


class OrderOut(BaseModel):
    id: int
    plan_code: str
    kind: OrderKind = Field(description="first: the account's first paid order; later ones renew.")
    amount_minor: int = Field(description="In minor units (cents) of the currency.")
    currency: str
    payment_method: PaymentMethod
    status: OrderStatus
    period_months: int
    created_at: datetime
    paid_at: datetime | None
    refunded_minor: int
    payments: list[PaymentOut]


class ManualPaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_code: str = Field(min_length=1, max_length=64, examples=["personal-monthly"])
    amount_minor: int = Field(
        gt=0, le=10_000_000_000, strict=True, description="In minor units, never a float."
    )
    currency: str = Currency
    method: PaymentMethod = Field(
        PaymentMethod.manual, description="How the money came, as the refund rules see it."
    )
    reference: str = Field(
        min_length=1,
        max_length=200,
        description="The payment's own reference (a bank transfer's, a store report's); "
        "recording the same reference twice is refused.",
    )

    _plain = field_validator("plan_code", "reference")(_printable)


class PaymentRecordedOut(BaseModel):
    message: str
    order: OrderOut


class BillingDetailsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    country: str = Field(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2 code.")
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    card_last4: str | None = Field(None, pattern=r"^[0-9]{4}$")
    name_or_company: str | None = Field(None, min_length=1, max_length=200)

    _plain = field_validator("city", "postal_code", "name_or_company")(_printable)


class BillingDetailsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    country: str
    city: str
    postal_code: str
    card_last4: str | None
    name_or_company: str | None
    updated_at: datetime


class WebhookReceivedOut(BaseModel):
    received: bool
    duplicate: bool = Field(description="True: this event was delivered before; nothing changed.")


class FailedEventOut(BaseModel):
    """A provider event parked after its last attempt: what it was and why it failed."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    provider: str
    event_id: str
    type: str
    received_at: datetime
    attempts: int
    error: str | None
    failed_at: datetime | None


class EventRetriedOut(BaseModel):
    id: int
    message: str


class CoinGateCallbackIn(BaseModel):
    """CoinGate's order callback, a form. Only ``id``, ``order_id`` and ``token`` are read: the
    order's status and amounts are fetched back from CoinGate's API, never taken from here."""

    # CoinGate sends many more fields (amounts, currencies); they are ignored.
    model_config = ConfigDict(extra="ignore")

    id: str = Field("", max_length=40, description="CoinGate's order id.")
    order_id: str = Field("", max_length=40, description="Our order id.")
    status: str = Field("", max_length=40, description="Not trusted; fetched from CoinGate.")
    token: str = Field("", max_length=200, description="The token made for this order.")


class CheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_code: str = Field(min_length=1, max_length=64, examples=["personal-monthly"])
    method: PaymentMethod = Field(
        examples=["card"], description="One of the policy's offered payment methods."
    )
    referral_code: str | None = Field(
        None,
        max_length=32,
        description="An affiliate's referral code; it counts only if no affiliate referred "
        "you before.",
    )

    _plain = field_validator("plan_code")(_printable)


class CheckoutOut(BaseModel):
    order_id: int = Field(description="The pending order; it is paid when the provider says so.")
    checkout_url: str = Field(description="Where to pay: send the customer's browser there.")
