from __future__ import annotations

from datetime import date

from sqlalchemy import Date, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, CreatedMixin, IdMixin


class TermsVersion(IdMixin, CreatedMixin, Base):
    """One published rendering of the terms: made at start whenever the rendering changes.

    The newest row is the current terms. The same content can come back later (a change that
    is undone), so the hash is not unique; a new row is made only when it differs from the
    newest one.
    """

    __tablename__ = "terms_versions"

    version: Mapped[str] = mapped_column(String(64), index=True)
    content_sha256: Mapped[str] = mapped_column(String(64))
    effective_date: Mapped[date] = mapped_column(Date)
    markdown: Mapped[str] = mapped_column(Text)
