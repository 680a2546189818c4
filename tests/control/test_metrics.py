"""GET /metrics: counts read from the database at scrape time, behind the metrics token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state
from burrow.control.models import (
    NodeStatus,
    Order,
    PrivacyRequest,
    PrivacyRequestKind,
    PrivacyRequestStatus,
    RefundRequest,
    RefundStatus,
    SubscriptionStatus,
    WebhookEvent,
    utcnow,
)
from burrow.control.nodes.service import node as node_service
from burrow.control.nodes.uplink import rate_bytes
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token
from burrow.wire import API_PREFIX
from burrow.wire.models import NodeReport
from tests.support.app import app_client, running_runtime
from tests.support.factories import (
    create_account,
    create_device,
    create_node,
    create_order,
    create_subscription,
)

TOKEN = "metrics-token-for-tests-0123456789"
PROBLEM = "application/problem+json"


@pytest.fixture
async def metrics_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with running_runtime(
        settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    ) as rt:
        yield rt


@pytest.fixture
async def metrics_client(metrics_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(metrics_runtime) as client:
        yield client


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def _scrape(
    client: httpx.AsyncClient,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


async def _refund(
    session: AsyncSession, order: Order, status: RefundStatus, due_in: timedelta | None
) -> None:
    session.add(
        RefundRequest(
            order_id=order.id,
            account_id=order.account_id,
            status=status,
            terms_version="2026-11",
            due_at=None if due_in is None else utcnow() + due_in,
        )
    )
    await session.flush()


async def test_unset_token_means_no_metrics(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "],
)
async def test_the_token_is_required(
    metrics_client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await metrics_client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert "BURROW_METRICS_TOKEN" in response.json()["detail"]


async def test_metrics_are_not_in_the_openapi_document(
    metrics_client: httpx.AsyncClient,
) -> None:
    document = (await metrics_client.get("/api/openapi.json")).json()
    assert "/metrics" not in document["paths"]


async def test_an_empty_service_reports_zeros(metrics_client: httpx.AsyncClient) -> None:
    samples = await _scrape(metrics_client)
    assert samples[("burrow_refund_requests_overdue", ())] == 0
    assert samples[("burrow_refund_requests_oldest_overdue_seconds", ())] == 0
    assert samples[("burrow_refund_requests_open", (("status", "queued"),))] == 0
    assert samples[("burrow_webhook_events_pending", (("provider", "stripe"),))] == 0
    assert samples[("burrow_webhook_events_failed", (("provider", "coingate"),))] == 0
    assert samples[("burrow_subscriptions", (("status", "past_due"),))] == 0
    assert samples[("burrow_nodes", (("status", "active"),))] == 0
    assert samples[("burrow_devices_served", ())] == 0


async def test_counts_read_at_scrape_time(
    metrics_runtime: Runtime, metrics_client: httpx.AsyncClient
) -> None:
    runtime = metrics_runtime
    now = utcnow()
    async with unit_of_work(runtime.sessionmaker) as session:
        customer = await create_account(session, email="private-person@example.com")
        other = await create_account(session)
        expired = await create_account(session)
        await create_subscription(session, customer)
        await create_subscription(session, other)
        await create_subscription(session, expired, status=SubscriptionStatus.expired)
        for account in (customer, other):
            await create_device(session, account)
            await create_device(session, account)
            await desired_state.refresh_account(session, runtime, account.id)
        await create_device(session, expired)
        await desired_state.refresh_account(session, runtime, expired.id)

        # An order has one open request at most: one order per request.
        for status, due in [
            (RefundStatus.queued, timedelta(hours=-3)),
            (RefundStatus.approved, timedelta(hours=-1)),
            (RefundStatus.queued, timedelta(hours=20)),
            (RefundStatus.queued, None),
            (RefundStatus.executed, timedelta(hours=-30)),
            (RefundStatus.refused, timedelta(hours=-30)),
        ]:
            await _refund(session, await create_order(session, customer), status, due)

        # A failed event waiting out its backoff is still pending; a parked one is failed.
        for n, (provider, processed, error, parked) in enumerate(
            [
                ("stripe", False, None, False),
                ("stripe", False, None, False),
                ("stripe", False, "KeyError: once", False),
                ("stripe", False, "KeyError: boom", True),
                ("coingate", False, "ValueError: no", True),
                ("coingate", True, None, False),
            ]
        ):
            session.add(
                WebhookEvent(
                    provider=provider,
                    event_id=f"evt_{n}",
                    type="t",
                    payload="{}",
                    processed_at=now if processed else None,
                    error=error,
                    failed_at=now if parked else None,
                )
            )

        for status, due_in in [
            (PrivacyRequestStatus.pending, timedelta(days=-2)),
            (PrivacyRequestStatus.pending, timedelta(days=20)),
            (PrivacyRequestStatus.done, timedelta(days=-2)),
        ]:
            session.add(
                PrivacyRequest(
                    account_id=customer.id,
                    kind=PrivacyRequestKind.access,
                    status=status,
                    due_at=now + due_in,
                )
            )

        reporting = await create_node(session, name="ams-1")
        await create_node(session, name="fra-1", status=NodeStatus.pending, wg_public_key=None)
        await create_node(session, name="old-1", status=NodeStatus.retired)
        await node_service.record_report(
            session, runtime, reporting, NodeReport(boot_id="boot", seq=1, revision=0)
        )

    response = await metrics_client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    samples = _samples(response.text)
    # Counts only: no customer's email, and no label value that is an account's id.
    assert "private-person" not in response.text
    label_values = {value for _, labels in samples for _, value in labels}
    assert not label_values & {str(customer.id), str(other.id), str(expired.id)}

    # Refunds: three queued (one overdue), one approved overdue; executed/refused not open.
    assert samples[("burrow_refund_requests_open", (("status", "queued"),))] == 3
    assert samples[("burrow_refund_requests_open", (("status", "approved"),))] == 1
    assert samples[("burrow_refund_requests_overdue", ())] == 2
    oldest = samples[("burrow_refund_requests_oldest_overdue_seconds", ())]
    assert 3 * 3600 <= oldest < 3 * 3600 + 120

    assert samples[("burrow_webhook_events_pending", (("provider", "stripe"),))] == 3
    assert samples[("burrow_webhook_events_failed", (("provider", "stripe"),))] == 1
    assert samples[("burrow_webhook_events_pending", (("provider", "coingate"),))] == 0
    assert samples[("burrow_webhook_events_failed", (("provider", "coingate"),))] == 1

    assert samples[("burrow_privacy_requests_pending", ())] == 2
    assert samples[("burrow_privacy_requests_overdue", ())] == 1

    assert samples[("burrow_subscriptions", (("status", "active"),))] == 2
    assert samples[("burrow_subscriptions", (("status", "expired"),))] == 1
    assert samples[("burrow_subscriptions", (("status", "trialing"),))] == 0

    assert samples[("burrow_nodes", (("status", "active"),))] == 1
    assert samples[("burrow_nodes", (("status", "pending"),))] == 1
    assert samples[("burrow_nodes", (("status", "retired"),))] == 1
    age = samples[("burrow_node_last_report_age_seconds", (("node", "ams-1"),))]
    assert 0 <= age < 60
    assert ("burrow_node_last_report_age_seconds", (("node", "fra-1"),)) not in samples
    assert samples[("burrow_nodes_never_reported", ())] == 1

    # Four devices of the two active subscriptions are served; the expired one's is not.
    assert samples[("burrow_devices_served", ())] == 4

    # Read at scrape time: a change shows on the next scrape without anything else.
    async with unit_of_work(runtime.sessionmaker) as session:
        await create_subscription(session, await create_account(session))
    again = await _scrape(metrics_client)
    assert again[("burrow_subscriptions", (("status", "active"),))] == 3


async def test_a_node_reporting_past_its_uplink_is_counted(
    metrics_runtime: Runtime, metrics_client: httpx.AsyncClient
) -> None:
    runtime = metrics_runtime
    token = new_token("bwn_")
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        await create_subscription(session, account)
        device = await create_device(session, account)
        await desired_state.refresh_account(session, runtime, account.id)
        node = await create_node(session, name="evil-1")
        node.uplink_mbit = 10
        node.node_token_hash = hash_token(token)
        await create_node(session, name="ams-1")
    peer = {"public_key": device.public_key, "connected": True, "rx_bytes": 10**13}
    response = await metrics_client.post(
        f"{API_PREFIX}/report",
        json={"boot_id": "b", "seq": 1, "revision": 0, "peers": [peer]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text

    samples = await _scrape(metrics_client)
    dropped = samples[("burrow_node_report_dropped_bytes_total", (("node", "evil-1"),))]
    credit = rate_bytes(10) * runtime.settings.connection_lease_ttl_seconds
    assert dropped == 10**13 - int(credit)
    assert samples[("burrow_node_report_dropped_bytes_total", (("node", "ams-1"),))] == 0
    # Node-wide: nothing names the customer whose key was reported.
    assert device.public_key not in str(samples)
