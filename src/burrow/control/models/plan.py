from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, CreatedMixin, IdMixin


class PlanKind(StrEnum):
    personal = "personal"
    business = "business"


class Plan(IdMixin, CreatedMixin, Base):
    """A plan mirrored from the policy file; retired, never deleted."""

    __tablename__ = "plans"

    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[PlanKind] = mapped_column(Enum(PlanKind, native_enum=False, length=20))
    price_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    period_months: Mapped[int] = mapped_column(Integer)
    # None: unlimited.
    device_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    connection_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)
