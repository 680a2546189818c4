"""What the plan endpoints answer. Limits of ``null`` mean unlimited."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from burrow.control.models import PlanKind


class PlanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str = Field(description="The plan's code in the policy file.")
    name: str
    kind: PlanKind
    price_minor: int = Field(description="The price per period in minor units (cents).")
    currency: str = Field(description="ISO 4217 code of the price's currency.")
    period_months: int = Field(description="The length of one paid period, in months.")
    device_limit: int | None = Field(description="Devices an account may add; null: unlimited.")
    connection_limit: int | None = Field(
        description="Simultaneous connections across the fleet; null: unlimited."
    )


class AdminPlanOut(PlanOut):
    id: int
    created_at: datetime
    retired_at: datetime | None = Field(
        description="When the plan left the policy file; null while it is offered."
    )
