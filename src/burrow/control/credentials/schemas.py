"""Request and response bodies of a device's credentials.

The lowest layer of the domain: imports pydantic and nothing else of burrow.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CredentialCreate(_Request):
    protocol: str = Field(
        max_length=32, examples=["openvpn"], description="The protocol these credentials are for."
    )
    username: str | None = Field(
        None,
        max_length=64,
        description="3 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit; "
        "leave it out and the server picks one.",
        examples=["laptop-vpn"],
    )


class CredentialRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    protocol: str
    username: str
    created_at: datetime


class CredentialIssued(CredentialRead):
    """Credentials right after they were made or rotated: the only time the secret is shown."""

    password: str = Field(
        description="The secret, shown this once; the server keeps only a digest of it."
    )
