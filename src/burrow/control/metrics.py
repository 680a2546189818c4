"""``GET /metrics``: what an operator watches, in Prometheus' text format.

Every value is a count (or an age) over the whole service, read from the database at scrape
time in one unit of work: refund requests open and overdue, stored webhook events waiting or
failing, privacy requests waiting and overdue, support requests by state and overdue,
subscriptions and nodes by status, the age of each node's last report, and how many devices
the nodes serve. Nothing here carries a customer's id, email, address or usage as a label;
nodes are named, they belong to the operator.

The endpoint exists only when ``BURROW_METRICS_TOKEN`` is set, and then answers only callers
that send it as a bearer token. It is left out of the OpenAPI document: it is for the
operator's monitoring, not for customers.

Imports the models, the settings, the runtime and the nodes service (for the live reports).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import unit_of_work
from burrow.control.deps import RuntimeDep
from burrow.control.errors import NotAuthenticated, NotFound
from burrow.control.models import (
    Base,
    NodeStatus,
    PrivacyRequest,
    PrivacyRequestStatus,
    RefundRequest,
    RefundStatus,
    ServedPeer,
    Subscription,
    SubscriptionStatus,
    SupportStatus,
    WebhookEvent,
    utcnow,
)
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.control.support.service import support as support_service

METRICS_PATH = "/metrics"

# A refund request still waiting for a person (queued) or for its provider (approved, not yet
# executed) is open; past its ``due_at`` it is overdue.
OPEN_REFUND_STATUSES = (RefundStatus.evaluating, RefundStatus.queued, RefundStatus.approved)
OVERDUE_REFUND_STATUSES = (RefundStatus.queued, RefundStatus.approved)


@dataclass(frozen=True)
class NodeReading:
    name: str
    status: NodeStatus
    # Seconds since the node's last report; None if it has not reported since this process
    # started (reports live in RAM only).
    last_report_age_seconds: float | None
    # Bytes its reports claimed beyond what its uplink can carry, dropped (``nodes.uplink``).
    dropped_bytes: int = 0


@dataclass(frozen=True)
class Readings:
    """Everything one scrape shows, read at one moment."""

    refunds_open: Mapping[RefundStatus, int]
    refunds_overdue: int
    refunds_oldest_overdue_seconds: float
    webhooks_pending: Mapping[str, int]
    webhooks_failed: Mapping[str, int]
    privacy_pending: int
    privacy_overdue: int
    subscriptions: Mapping[SubscriptionStatus, int]
    nodes: tuple[NodeReading, ...]
    devices_served: int
    read_at: datetime = field(default_factory=utcnow)
    # The support desk: requests by state, and those waiting for support past their deadline.
    support_requests: Mapping[str, int] = field(default_factory=dict)
    support_overdue: int = 0


class MetricsRepository:
    """The SQL of the metrics: counts only, never a row of a customer."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _count(self, *where: ColumnElement[bool], of: type[Base]) -> int:
        query = select(func.count()).select_from(of).where(*where)
        return int(await self.session.scalar(query) or 0)

    async def refunds_by_status(self) -> dict[RefundStatus, int]:
        query = (
            select(RefundRequest.status, func.count())
            .where(RefundRequest.status.in_(OPEN_REFUND_STATUSES))
            .group_by(RefundRequest.status)
        )
        rows = (await self.session.execute(query)).all()
        return {RefundStatus(status): int(count) for status, count in rows}

    async def refunds_overdue(self, now: datetime) -> tuple[int, datetime | None]:
        """How many open requests are past their deadline, and the earliest such deadline."""
        query = select(func.count(), func.min(RefundRequest.due_at)).where(
            RefundRequest.status.in_(OVERDUE_REFUND_STATUSES),
            RefundRequest.due_at.is_not(None),
            RefundRequest.due_at < now,
        )
        count, earliest = (await self.session.execute(query)).one()
        return int(count), _aware(earliest)

    async def webhooks_waiting(self) -> tuple[dict[str, int], dict[str, int]]:
        """Unhandled stored events by provider: still to be tried (pending, retries in their
        backoff included) and parked after their last attempt (failed)."""
        parked = WebhookEvent.failed_at.is_not(None)
        query = (
            select(WebhookEvent.provider, parked, func.count())
            .where(WebhookEvent.processed_at.is_(None))
            .group_by(WebhookEvent.provider, parked)
        )
        pending: dict[str, int] = {}
        failed: dict[str, int] = {}
        for provider, has_error, count in (await self.session.execute(query)).all():
            target = failed if has_error else pending
            target[str(provider)] = target.get(str(provider), 0) + int(count)
        return pending, failed

    async def privacy_waiting(self, now: datetime) -> tuple[int, int]:
        pending = PrivacyRequest.status == PrivacyRequestStatus.pending
        return (
            await self._count(pending, of=PrivacyRequest),
            await self._count(pending, PrivacyRequest.due_at < now, of=PrivacyRequest),
        )

    async def subscriptions_by_status(self) -> dict[SubscriptionStatus, int]:
        query = select(Subscription.status, func.count()).group_by(Subscription.status)
        rows = (await self.session.execute(query)).all()
        return {SubscriptionStatus(status): int(count) for status, count in rows}

    async def devices_served(self) -> int:
        return await self._count(of=ServedPeer)


def _aware(value: datetime | None) -> datetime | None:
    """``min()`` over a UTC column comes back without the column's type on SQLite."""
    if isinstance(value, str):  # SQLite hands an aggregate back as text
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


async def read(session: AsyncSession, runtime: Runtime, now: datetime | None = None) -> Readings:
    """Read every metric in the given session (one unit of work: one consistent scrape)."""
    now = now or utcnow()
    repository = MetricsRepository(session)
    overdue, earliest = await repository.refunds_overdue(now)
    pending, failed = await repository.webhooks_waiting()
    privacy_pending, privacy_overdue = await repository.privacy_waiting(now)
    nodes = []
    for node in await node_service.list_all(session):
        health = await node_service.health(runtime, node)
        nodes.append(
            NodeReading(
                node.name,
                node.status,
                health.last_report_age_seconds,
                health.dropped_bytes or 0,
            )
        )
    support = await support_service.summary(session)
    return Readings(
        support_requests={str(k): v for k, v in support.by_status.items()},
        support_overdue=support.overdue,
        refunds_open=await repository.refunds_by_status(),
        refunds_overdue=overdue,
        refunds_oldest_overdue_seconds=(
            max(0.0, (now - earliest).total_seconds()) if earliest is not None else 0.0
        ),
        webhooks_pending=pending,
        webhooks_failed=failed,
        privacy_pending=privacy_pending,
        privacy_overdue=privacy_overdue,
        subscriptions=await repository.subscriptions_by_status(),
        nodes=tuple(nodes),
        devices_served=await repository.devices_served(),
        read_at=now,
    )


def _by_label(
    name: str, documentation: str, label: str, values: Mapping[str, int], every: list[str]
) -> GaugeMetricFamily:
    """One sample per known label value, 0 included, so a series never vanishes."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key in sorted({*every, *values}):
        family.add_metric([key], values.get(key, 0))
    return family


def _names(values: type[StrEnum]) -> list[str]:
    return [member.value for member in values]


class BurrowCollector:
    """A Prometheus collector over one set of readings, taken when the scrape came in."""

    def __init__(self, readings: Readings) -> None:
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        r = self._readings
        yield _by_label(
            "burrow_refund_requests_open",
            "Refund requests not yet decided or not yet paid out, by status.",
            "status",
            {str(k): v for k, v in r.refunds_open.items()},
            [s.value for s in OPEN_REFUND_STATUSES],
        )
        yield GaugeMetricFamily(
            "burrow_refund_requests_overdue",
            "Refund requests queued or approved but not executed, past their deadline.",
            value=r.refunds_overdue,
        )
        yield GaugeMetricFamily(
            "burrow_refund_requests_oldest_overdue_seconds",
            "How long the most overdue refund request is past its deadline (0: none is).",
            value=r.refunds_oldest_overdue_seconds,
        )
        providers = sorted({*r.webhooks_pending, *r.webhooks_failed, "stripe", "coingate"})
        yield _by_label(
            "burrow_webhook_events_pending",
            "Stored provider events not handled yet, by provider.",
            "provider",
            r.webhooks_pending,
            providers,
        )
        yield _by_label(
            "burrow_webhook_events_failed",
            "Stored provider events parked after their last attempt (an administrator retries "
            "them), by provider.",
            "provider",
            r.webhooks_failed,
            providers,
        )
        yield GaugeMetricFamily(
            "burrow_privacy_requests_pending",
            "Data-subject requests waiting for a person.",
            value=r.privacy_pending,
        )
        yield GaugeMetricFamily(
            "burrow_privacy_requests_overdue",
            "Data-subject requests waiting for a person past their legal deadline.",
            value=r.privacy_overdue,
        )
        yield _by_label(
            "burrow_subscriptions",
            "Subscriptions by status.",
            "status",
            {str(k): v for k, v in r.subscriptions.items()},
            _names(SubscriptionStatus),
        )
        by_status: dict[str, int] = {}
        for node in r.nodes:
            by_status[node.status.value] = by_status.get(node.status.value, 0) + 1
        yield _by_label(
            "burrow_nodes", "VPN nodes by status.", "status", by_status, _names(NodeStatus)
        )
        age = GaugeMetricFamily(
            "burrow_node_last_report_age_seconds",
            "Seconds since each node last reported (absent: no report since the control "
            "plane started).",
            labels=["node"],
        )
        silent = 0
        for node in r.nodes:
            if node.status == NodeStatus.retired:
                continue
            if node.last_report_age_seconds is None:
                silent += 1
            else:
                age.add_metric([node.name], node.last_report_age_seconds)
        yield age
        dropped = CounterMetricFamily(
            "burrow_node_report_dropped_bytes",
            "Bytes each node reported beyond what its uplink can carry, dropped (a node's "
            "word past physics: a compromised node, or its uplink set too low).",
            labels=["node"],
        )
        for node in r.nodes:
            if node.status != NodeStatus.retired:
                dropped.add_metric([node.name], node.dropped_bytes)
        yield dropped
        yield GaugeMetricFamily(
            "burrow_nodes_never_reported",
            "Nodes not retired with no report since the control plane started.",
            value=silent,
        )
        yield _by_label(
            "burrow_support_requests",
            "Support requests by state.",
            "status",
            r.support_requests,
            _names(SupportStatus),
        )
        yield GaugeMetricFamily(
            "burrow_support_requests_overdue",
            "Support requests waiting for support past their topic's deadline.",
            value=r.support_overdue,
        )
        yield GaugeMetricFamily(
            "burrow_devices_served",
            "Devices the nodes are told to serve (the desired state's peers).",
            value=r.devices_served,
        )


def exposition(readings: Readings) -> bytes:
    """The readings in Prometheus' text format, through a registry of their own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BurrowCollector(readings))
    return generate_latest(registry)


class MetricsNotConfigured(NotFound):
    def __init__(self) -> None:
        super().__init__("There is nothing at this address.")


class MetricsTokenInvalid(NotAuthenticated):
    title = "Metrics token needed"
    type_slug = "metrics-token"

    def __init__(self) -> None:
        super().__init__(
            "Send the metrics token (BURROW_METRICS_TOKEN) as 'Authorization: Bearer <token>'."
        )


def check_token(runtime: Runtime, authorization: str | None) -> None:
    configured = runtime.settings.metrics_token
    if configured is None:
        raise MetricsNotConfigured()
    scheme, _, given = (authorization or "").partition(" ")
    expected = configured.get_secret_value().encode()
    # Constant time, so the token cannot be guessed a character at a time.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise MetricsTokenInvalid()


router = APIRouter()


@router.get(METRICS_PATH, include_in_schema=False)
async def metrics(
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    check_token(runtime, authorization)
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        readings = await read(session, runtime)
    return Response(exposition(readings), media_type=CONTENT_TYPE_LATEST)
