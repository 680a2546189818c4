"""Requests and answers of the privacy center: the export, consents, requests, erasure.

The lowest layer of the domain: pydantic, the models' enums and the accounts' field types.
Every export section is a list of rows of one table (``id`` first), so that a reader (or a
test) can tell which table each piece came from. Secrets are never part of it: no password
hash, TOTP secret, token hash or private key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from burrow.control.accounts.schemas import Email, GivenPassword, TotpCode, plain_text
from burrow.control.models import (
    AccountStatus,
    AgeAttestation,
    ConsentPurpose,
    OrderKind,
    OrderStatus,
    PaymentMethod,
    PrivacyRequestKind,
    PrivacyRequestStatus,
    RefundStatus,
    SubscriptionStatus,
    SupportAuthor,
    SupportStatus,
    SupportTopic,
    SupportVia,
    TermsAcceptanceHow,
)

EXPORT_FORMAT: Literal["burrow-export/1"] = "burrow-export/1"
DETAILS_MAX = 4000

Details = Annotated[str, AfterValidator(plain_text), Field(min_length=1, max_length=DETAILS_MAX)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Row(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- the export ----------------------------------------------------------------------------


class AccountExport(_Row):
    id: int
    email: str
    status: AccountStatus
    status_reason: str | None
    status_changed_at: datetime | None
    created_at: datetime
    email_verified_at: datetime | None
    is_admin: bool
    two_factor_enabled: bool = Field(
        description="Two-factor sign-in is on; its secret is not part of the export."
    )
    age_attestation: AgeAttestation | None
    terms_version_accepted: str | None
    terms_accepted_at: datetime | None
    terminated_clause: str | None
    last_login_ip: str | None = Field(
        description="Kept only where the policy allows it, for fraud prevention."
    )
    last_login_ip_at: datetime | None


class SessionExport(_Row):
    id: int
    created_at: datetime
    expires_at: datetime
    second_factor_at: datetime | None = Field(
        None, description="When this session proved the two-factor code, if it did."
    )
    last_used_at: datetime | None = Field(
        None, description="When it was last used (to the minute); none: not since it opened."
    )
    device: str | None = Field(
        None, description='The browser and system it was opened from, e.g. "Firefox on Linux".'
    )


class EmailVerificationExport(_Row):
    id: int
    email: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


class BillingDetailsExport(_Row):
    id: int
    country: str
    city: str
    postal_code: str
    card_last4: str | None
    name_or_company: str | None
    updated_at: datetime


class SubscriptionExport(_Row):
    id: int
    plan_id: int
    status: SubscriptionStatus
    created_at: datetime
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    provider: str | None
    provider_subscription_id: str | None
    grace_until: datetime | None


class OrderExport(_Row):
    id: int
    plan_id: int
    kind: OrderKind
    amount_minor: int = Field(description="In minor units (cents) of the currency.")
    currency: str
    payment_method: PaymentMethod
    status: OrderStatus
    period_months: int
    created_at: datetime
    paid_at: datetime | None
    provider: str
    provider_order_id: str | None
    provider_subscription_id: str | None
    refunded_minor: int


class PaymentExport(_Row):
    id: int
    order_id: int
    provider: str
    provider_payment_id: str
    amount_minor: int
    currency: str
    fingerprint: str | None = Field(description="The provider's fingerprint of the card.")
    created_at: datetime


class RefundRequestExport(_Row):
    id: int
    order_id: int
    reason: str
    status: RefundStatus
    requested_at: datetime
    due_at: datetime | None
    decided_at: datetime | None
    amount_minor: int | None
    decision_reason: str | None
    terms_version: str
    unsupported_device: bool
    executed_at: datetime | None
    provider_refund_id: str | None


class RefundRuleOutcomeExport(BaseModel):
    id: int
    refund_request_id: int
    rule: str
    passed: bool
    needs_judgement: bool
    message: str
    evidence: dict[str, Any]


class DeviceExport(_Row):
    id: int
    name: str
    public_key: str = Field(description="Only the public key is stored, never the private one.")
    ipv4: str = Field(description="The device's tunnel address, not where you are.")
    ipv6: str
    created_at: datetime


class TermsAcceptanceExport(BaseModel):
    id: int
    terms_version: str
    effective_date: str
    accepted_at: datetime
    how: TermsAcceptanceHow


class ConsentExport(_Row):
    id: int
    purpose: ConsentPurpose
    granted: bool
    at: datetime
    source: str


class PrivacyRequestExport(_Row):
    id: int
    kind: PrivacyRequestKind
    status: PrivacyRequestStatus
    received_at: datetime
    due_at: datetime
    completed_at: datetime | None
    details: str
    outcome: str | None


class SupportRequestExport(_Row):
    id: int
    topic: SupportTopic
    subject: str
    status: SupportStatus
    email: str | None = Field(description="The address of a request opened signed out.")
    opened_at: datetime
    due_at: datetime
    resolved_at: datetime | None
    refund_request_id: int | None


class SupportMessageExport(_Row):
    id: int
    request_id: int
    author: SupportAuthor
    body: str
    via: SupportVia
    created_at: datetime


class UsageCounterExport(_Row):
    id: int
    order_id: int | None
    bytes_total: int
    sessions: int
    created_at: datetime
    updated_at: datetime


class AddressHoldingExport(_Row):
    """Which of your devices held which tunnel address, and when (deterministic NAT only)."""

    id: int
    device_id: int
    device_name: str
    ipv4: str = Field(description="A tunnel address inside our network, not where you are.")
    ipv6: str
    held_from: datetime
    held_until: datetime | None


class ConnectionRecordExport(_Row):
    id: int
    device_id: int | None
    node_name: str
    node_country: str
    node_city: str
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: int
    rx_bytes: int
    tx_bytes: int


class DeviceCredentialExport(_Row):
    """A device's sign-in name for OpenVPN or IKEv2; its secret is held only as a digest."""

    id: int
    device_id: int
    protocol: str
    username: str
    created_at: datetime


class AbuseComplaintExport(_Row):
    id: int
    clause: str
    source: str
    egress_ip: str
    port: int
    seen_at: datetime
    evidence: str
    status: str
    finding: str | None
    device_id: int | None
    action: str | None
    actioned_at: datetime | None
    created_at: datetime


class AffiliateExport(_Row):
    id: int
    code: str
    status: str
    status_reason: str | None
    created_at: datetime
    decided_at: datetime | None
    contact_name: str | None
    website: str | None
    paypal_email: str | None
    clicks: int = Field(description="How many times the referral link was followed (a count).")
    last_active_at: datetime | None


class ReferralExport(_Row):
    id: int
    affiliate_id: int
    how: str = Field(description="'link' (the referral link) or 'code' (typed).")
    created_at: datetime


class CommissionExport(_Row):
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
    created_at: datetime


class PayoutItemExport(_Row):
    id: int
    batch_id: int
    amount_minor: int
    currency: str
    receiver: str | None
    status: str
    created_at: datetime


class PrivacyExport(BaseModel):
    """Everything burrow holds about one account, one table per section."""

    format: Literal["burrow-export/1"] = EXPORT_FORMAT
    generated_at: datetime
    provider: str
    privacy_mode: Literal["strict", "metered"]
    what_is_recorded: list[str] = Field(description="The policy's rules, in plain sentences.")
    account: AccountExport
    account_sessions: list[SessionExport]
    email_verifications: list[EmailVerificationExport]
    billing_details: list[BillingDetailsExport]
    subscriptions: list[SubscriptionExport]
    orders: list[OrderExport]
    payments: list[PaymentExport]
    refund_requests: list[RefundRequestExport]
    refund_rule_outcomes: list[RefundRuleOutcomeExport]
    devices: list[DeviceExport]
    terms_acceptances: list[TermsAcceptanceExport]
    consents: list[ConsentExport]
    privacy_requests: list[PrivacyRequestExport]
    support_requests: list[SupportRequestExport] = Field(default_factory=list)
    support_messages: list[SupportMessageExport] = Field(default_factory=list)
    usage_counters: list[UsageCounterExport]
    connection_records: list[ConnectionRecordExport]
    affiliates: list[AffiliateExport] = Field(
        default_factory=list, description="Your membership of the affiliate program."
    )
    referrals: list[ReferralExport] = Field(
        default_factory=list, description="The affiliate who referred you, if one did."
    )
    commissions: list[CommissionExport] = Field(default_factory=list)
    device_credentials: list[DeviceCredentialExport] = Field(
        default_factory=list, description="Your devices' OpenVPN and IKEv2 user names."
    )
    address_holdings: list[AddressHoldingExport] = Field(
        default_factory=list,
        description="Which tunnel address each of your devices held and when (kept only under "
        "deterministic NAT, for the policy's retention).",
    )
    abuse_complaints: list[AbuseComplaintExport] = Field(
        default_factory=list, description="Complaints about traffic that were traced to you."
    )
    payout_items: list[PayoutItemExport] = Field(default_factory=list)


# --- rectification and erasure --------------------------------------------------------------


class EmailChangeIn(_Body):
    new_email: Email
    password: GivenPassword = Field(description="Your current password.")


class ErasureIn(_Body):
    password: GivenPassword = Field(description="Your current password.")
    totp_code: TotpCode | None = Field(None, description="Needed when two-factor sign-in is on.")
    confirm: Literal[True] = Field(
        description="true: you understand that the account and its devices are gone for good."
    )


class ErasureOut(BaseModel):
    detail: str
    retention: list[str] = Field(description="What is kept after the erasure, and for how long.")


class RetentionOut(BaseModel):
    statements: list[str]


class MessageOut(BaseModel):
    detail: str


# --- consents ------------------------------------------------------------------------------


class ConsentOut(BaseModel):
    purpose: ConsentPurpose
    granted: bool
    changed_at: datetime | None = Field(description="None: never given.")
    description: str


class ConsentsOut(BaseModel):
    consents: list[ConsentOut]


class ConsentsIn(_Body):
    """Only the purposes named change; each change is recorded with its time."""

    marketing_email: bool | None = None
    product_analytics: bool | None = None


# --- requests that need a person ------------------------------------------------------------


class PrivacyRequestIn(_Body):
    kind: PrivacyRequestKind
    details: Details = Field(description="What you ask for, in your words.")


class PrivacyRequestOut(_Row):
    id: int
    kind: PrivacyRequestKind
    status: PrivacyRequestStatus
    received_at: datetime
    due_at: datetime = Field(description="The legal deadline for the answer.")
    completed_at: datetime | None
    details: str
    outcome: str | None


class AdminPrivacyRequestOut(PrivacyRequestOut):
    account_id: int | None = Field(description="None once the account was erased.")
    account_email: str | None
    handled_by: int | None
    seconds_left: int | None = Field(
        description="Until the deadline while pending; negative when overdue."
    )


class PrivacyResolveIn(_Body):
    status: Literal["done", "refused"]
    outcome: Details = Field(description="What was done, or why it was refused.")
