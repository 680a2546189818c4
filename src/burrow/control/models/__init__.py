"""Tables: one file per table. Models import nothing but SQLAlchemy and each other."""

from burrow.control.models.abuse_complaint import (
    AbuseComplaint,
    ComplaintAction,
    ComplaintStatus,
)
from burrow.control.models.account import Account, AccountStatus, AgeAttestation
from burrow.control.models.account_session import AccountSession
from burrow.control.models.address_holding import AddressHolding
from burrow.control.models.admin_action import AdminAction
from burrow.control.models.affiliate import Affiliate, AffiliateStatus
from burrow.control.models.base import Base, utcnow
from burrow.control.models.billing_details import BillingDetails
from burrow.control.models.commission import Commission, CommissionKind, CommissionStatus
from burrow.control.models.connection_record import ConnectionRecord
from burrow.control.models.consent import Consent, ConsentPurpose
from burrow.control.models.device import Device
from burrow.control.models.device_credential import DeviceCredential
from burrow.control.models.email_verification import EmailVerification
from burrow.control.models.node import Node, NodeStatus
from burrow.control.models.order import Order, OrderKind, OrderStatus, PaymentMethod
from burrow.control.models.password_reset import PasswordReset
from burrow.control.models.payment import Payment
from burrow.control.models.payout import (
    PayoutBatch,
    PayoutBatchStatus,
    PayoutItem,
    PayoutItemStatus,
)
from burrow.control.models.peer_change import PeerChange, PeerChangeOp
from burrow.control.models.plan import Plan, PlanKind
from burrow.control.models.privacy_request import (
    PrivacyRequest,
    PrivacyRequestKind,
    PrivacyRequestStatus,
)
from burrow.control.models.recovery_code import RecoveryCode
from burrow.control.models.referral import Referral, ReferralHow
from burrow.control.models.refund_request import RefundRequest, RefundStatus
from burrow.control.models.refund_rule_outcome import RefundRuleOutcome
from burrow.control.models.refunded_person import RefundedPerson, RefundedPersonKind
from burrow.control.models.served_peer import ServedPeer
from burrow.control.models.subscription import (
    ACCESS_STATUSES,
    Subscription,
    SubscriptionStatus,
    access_parameters,
    access_until,
    gives_access_bound,
    gives_access_clause,
)
from burrow.control.models.support_message import SupportAuthor, SupportMessage, SupportVia
from burrow.control.models.support_request import SupportRequest, SupportStatus, SupportTopic
from burrow.control.models.terms_acceptance import TermsAcceptance, TermsAcceptanceHow
from burrow.control.models.terms_version import TermsVersion
from burrow.control.models.trial_claim import TrialClaim
from burrow.control.models.usage_counter import UsageCounter
from burrow.control.models.webhook_event import WebhookEvent

__all__ = [
    "ACCESS_STATUSES",
    "AbuseComplaint",
    "Account",
    "AccountSession",
    "AccountStatus",
    "AddressHolding",
    "AdminAction",
    "Affiliate",
    "AffiliateStatus",
    "AgeAttestation",
    "Base",
    "BillingDetails",
    "Commission",
    "CommissionKind",
    "CommissionStatus",
    "ComplaintAction",
    "ComplaintStatus",
    "ConnectionRecord",
    "Consent",
    "ConsentPurpose",
    "Device",
    "DeviceCredential",
    "EmailVerification",
    "Node",
    "NodeStatus",
    "Order",
    "OrderKind",
    "OrderStatus",
    "PasswordReset",
    "Payment",
    "PaymentMethod",
    "PayoutBatch",
    "PayoutBatchStatus",
    "PayoutItem",
    "PayoutItemStatus",
    "PeerChange",
    "PeerChangeOp",
    "Plan",
    "PlanKind",
    "PrivacyRequest",
    "PrivacyRequestKind",
    "PrivacyRequestStatus",
    "RecoveryCode",
    "Referral",
    "ReferralHow",
    "RefundRequest",
    "RefundRuleOutcome",
    "RefundStatus",
    "RefundedPerson",
    "RefundedPersonKind",
    "ServedPeer",
    "Subscription",
    "SubscriptionStatus",
    "SupportAuthor",
    "SupportMessage",
    "SupportRequest",
    "SupportStatus",
    "SupportTopic",
    "SupportVia",
    "TermsAcceptance",
    "TermsAcceptanceHow",
    "TermsVersion",
    "TrialClaim",
    "UsageCounter",
    "WebhookEvent",
    "access_parameters",
    "access_until",
    "gives_access_bound",
    "gives_access_clause",
    "utcnow",
]
