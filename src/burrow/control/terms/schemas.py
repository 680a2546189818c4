"""Response and request bodies of the terms API.

The lowest layer of the domain: imports pydantic and the models' enums, nothing else of burrow.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from burrow.control.models import TermsAcceptanceHow


class TermsVersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    version: str = Field(description="The operator's label of this version.")
    effective_date: date
    content_sha256: str = Field(description="SHA-256 of the Markdown text (/terms.md).")
    created_at: datetime = Field(description="When this rendering was first published.")


class TermsVersionText(TermsVersionRead):
    markdown: str = Field(description="The terms as they read in this version.")


class CurrentTerms(TermsVersionRead):
    continued_use_is_acceptance: bool = Field(
        description="Whether using the service after the effective date accepts this version."
    )
    html_url: str = "/terms"
    markdown_url: str = "/terms.md"


class AcceptanceRead(BaseModel):
    terms_version_id: int
    version: str
    effective_date: date
    content_sha256: str
    accepted_at: datetime
    how: TermsAcceptanceHow = Field(
        description="'signup' (at registration), 'continued_use' (used the service after the "
        "effective date, where the terms say so) or 'explicit' (accepted from the account)."
    )


class AccountTermsRead(BaseModel):
    current: TermsVersionRead
    accepted_current: bool
    detail: str = Field(description="Where this account stands with the current terms.")
    acceptances: list[AcceptanceRead] = Field(description="Oldest first.")


class TermsAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(
        min_length=1, max_length=64, description="The label of the current terms you accept."
    )
