from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class OrderKind(StrEnum):
    first = "first"
    renewal = "renewal"


class OrderStatus(StrEnum):
    pending = "pending"
    paid = "paid"
    failed = "failed"
    refunded = "refunded"
    partially_refunded = "partially_refunded"


class PaymentMethod(StrEnum):
    """How the money came: the classes the policy's refund and renewal rules name."""

    card = "card"
    paypal = "paypal"
    link = "link"  # Stripe's Link wallet (a saved card or bank account)
    bank_debit = "bank_debit"  # SEPA and other direct debits
    crypto = "crypto"
    paymentwall = "paymentwall"
    app_store = "app_store"
    google_play = "google_play"
    manual = "manual"


class Order(IdMixin, CreatedMixin, Base):
    """One purchase of a plan's period. The first paid order of an account is ``first``."""

    __tablename__ = "orders"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    plan_id: Mapped[int] = mapped_column(BigId, ForeignKey("plans.id"), index=True)
    kind: Mapped[OrderKind] = mapped_column(Enum(OrderKind, native_enum=False, length=20))
    # Minor units (cents) of ``currency``; never a float.
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payment_method: Mapped[PaymentMethod] = mapped_column(
        Enum(PaymentMethod, native_enum=False, length=20)
    )
    status: Mapped[OrderStatus] = mapped_column(
        Enum(OrderStatus, native_enum=False, length=20), index=True
    )
    period_months: Mapped[int]
    paid_at: Mapped[datetime | None] = mapped_column(default=None)
    provider: Mapped[str] = mapped_column(String(32))
    # The provider's own ids (a checkout session, an invoice, a CoinGate order, a reference).
    provider_order_id: Mapped[str | None] = mapped_column(String(200), default=None)
    provider_subscription_id: Mapped[str | None] = mapped_column(String(200), default=None)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
