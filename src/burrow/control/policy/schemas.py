"""The policy file's shape. Amounts are integers in minor units with their currency."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSection(_Section):
    name: str = Field(min_length=1, max_length=200)
    contact_email: EmailStr
    website: str | None = None


class PrivacySection(_Section):
    mode: Literal["strict", "metered"]
    # Metered mode only: how long connection records are kept.
    connection_record_retention_days: int | None = Field(None, ge=1, le=3650)
    # The website's last-login IP, for fraud prevention (both seeds allow it).
    store_last_login_ip: bool = False
    last_login_ip_retention_days: int | None = Field(None, ge=1, le=3650)


class PlanSection(_Section):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["personal", "business"] = "personal"
    price_minor: int = Field(ge=0, description="The price in minor units (cents).")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    period_months: int = Field(ge=1, le=120)
    device_limit: int | None = Field(None, ge=1, description="Absent: unlimited devices.")
    simultaneous_connections: int | None = Field(
        None, ge=1, description="Across the fleet; absent: unlimited."
    )
    connections_per_server: dict[str, int] = Field(
        default_factory=dict, description="Per protocol, per server, per subscription."
    )


class TrialSection(_Section):
    enabled: bool = True
    days: int = Field(1, ge=1, le=90)
    plan: str = Field(description="The plan whose limits apply during the trial.")


class NetworkSection(_Section):
    blocked_egress_tcp_ports: list[int] = Field(default_factory=lambda: [25])
    blocked_egress_udp_ports: list[int] = Field(default_factory=list)
    isolate_clients: bool = True


class AgeSection(_Section):
    attestation_required: bool = False
    minimum_age: int = Field(18, ge=13, le=21)
    allow_guardian_consent: bool = True
    allow_emancipated_minor: bool = True


class TermsSection(_Section):
    version: str = Field(min_length=1, max_length=64)
    effective_date: date
    continued_use_is_acceptance: bool = True


class Policy(_Section):
    provider: ProviderSection
    privacy: PrivacySection
    plans: dict[str, PlanSection] = Field(min_length=1)
    trial: TrialSection | None = None
    network: NetworkSection = Field(default_factory=NetworkSection)
    age: AgeSection = Field(default_factory=AgeSection)
    terms: TermsSection

    @model_validator(mode="after")
    def _cross_rules(self) -> Policy:
        if self.trial is not None and self.trial.plan not in self.plans:
            raise ValueError(f"trial.plan names '{self.trial.plan}', which is not in [plans]")
        return self
