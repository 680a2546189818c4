"""The admin overview's figures: every one an aggregate over all customers."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel

RANGES = (7, 30, 90)


class DayCount(BaseModel):
    day: date
    count: int


class PlanCount(BaseModel):
    plan: str
    count: int


class NodeNow(BaseModel):
    """A node's figures from its latest live report (kept in RAM only, never over time)."""

    name: str
    state: str
    connected_devices: int | None
    capacity: int
    load: float | None
    throughput_bps: float | None


class Overview(BaseModel):
    days: int
    start: date
    end: date
    signups: list[DayCount]
    trials_started: list[DayCount]
    first_payments: list[DayCount]
    cancellations: list[DayCount]
    refund_requests: list[DayCount]
    devices_added: list[DayCount]
    active_by_plan: list[PlanCount]
    devices_total: int
    paid_orders: int
    refund_rate: float | None
    currency: str | None
    mrr_minor: int
    mrr_start_minor: int
    nodes: list[NodeNow]

    @property
    def mrr_change_minor(self) -> int:
        return self.mrr_minor - self.mrr_start_minor
