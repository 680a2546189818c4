from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, CreatedMixin, IdMixin


class TrialClaim(IdMixin, CreatedMixin, Base):
    """One row per email that has had its trial; kept as a keyed hash, not the address.

    It outlives the account, so that deleting an account does not grant a new trial.
    """

    __tablename__ = "trial_claims"

    email_digest: Mapped[str] = mapped_column(String(64), unique=True)
