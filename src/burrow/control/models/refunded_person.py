from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Enum, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, CreatedMixin, IdMixin


class RefundedPersonKind(StrEnum):
    email = "email"  # the normalised address (as for the trial claim)
    fingerprint = "fingerprint"  # a payment fingerprint of a refunded order


class RefundedPerson(IdMixin, CreatedMixin, Base):
    """A keyed hash of what identified a refunded person, kept when their account is erased.

    Linked to no account and never the address or fingerprint itself: only so that the
    policy's one-refund-per-person rule still knows the person after an erasure. Deleted with
    the anonymised invoices (``privacy.invoice_retention_years``).
    """

    __tablename__ = "refunded_persons"
    __table_args__ = (Index("ix_refunded_persons_kind_digest", "kind", "digest", unique=True),)

    kind: Mapped[RefundedPersonKind] = mapped_column(
        Enum(RefundedPersonKind, native_enum=False, length=16)
    )
    digest: Mapped[str] = mapped_column(String(64))
