"""Who may call what, checked for every operation of the OpenAPI document.

- Nobody gets anything protected without a token (401).
- A customer cannot call admin endpoints (403) or node endpoints (401).
- A node token sees only the node API (401 everywhere else).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import NodeStatus
from burrow.control.security import hash_token, new_token
from tests.support import factories

PUBLIC = {
    ("POST", "/api/v1/accounts"),
    ("GET", "/api/v1/accounts/verify-email"),
    ("POST", "/api/v1/accounts/verify-email"),
    ("POST", "/api/v1/sessions"),
    # A forgotten password: nobody is signed in (tests/control/accounts/test_recovery.py).
    ("POST", "/api/v1/accounts/password-reset"),
    ("POST", "/api/v1/accounts/password-reset/confirm"),
    ("GET", "/api/v1/plans"),
    ("GET", "/api/v1/servers"),
    ("GET", "/healthz"),
    ("POST", "/node-api/v1/enroll"),
    ("GET", "/api/v1/terms"),
    ("GET", "/api/v1/terms/versions"),
    ("GET", "/api/v1/terms/versions/{version_id}"),
    # Authenticated by Stripe's signature, not a token (tests/control/billing/test_stripe_events).
    ("POST", "/api/v1/billing/webhooks/stripe"),
    # Authenticated by its per-order token, then confirmed through CoinGate's API
    # (tests/control/billing/test_coingate).
    ("POST", "/api/v1/billing/webhooks/coingate"),
    # Verified by PayPal's own verify-webhook-signature API (tests/control/billing/test_paypal).
    ("POST", "/api/v1/billing/webhooks/paypal"),
    # A support request without an account: the answer goes to the address given, limited
    # per address (tests/control/support/test_endpoints.py).
    ("POST", "/api/v1/support/requests/by-email"),
}


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    ops = []
    for path, item in app.openapi()["paths"].items():
        for method in item:
            ops.append((method.upper(), path))
    return sorted(ops)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


async def _call(client: httpx.AsyncClient, method: str, path: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return await client.request(method, _concrete(path), **kwargs)


@pytest.fixture
async def tokens(session: AsyncSession) -> dict[str, str]:
    customer = await factories.create_account(session)
    await factories.create_subscription(session, customer)
    node = await factories.create_node(session, status=NodeStatus.active)
    node_token = new_token()
    node.node_token_hash = hash_token(node_token)
    customer_token = await factories.create_session_token(session, customer)
    await session.commit()
    return {"customer": customer_token, "node": node_token}


async def test_every_protected_operation_needs_a_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    checked = 0
    for method, path in _operations(app):
        if (method, path) in PUBLIC:
            continue
        response = await _call(client, method, path, None)
        assert response.status_code == 401, f"{method} {path} without a token: {response.text}"
        assert response.headers["content-type"] == "application/problem+json"
        checked += 1
    assert checked > 20


async def test_a_customer_cannot_call_admin_or_node_endpoints(
    app: FastAPI, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    admin_ops = [(m, p) for m, p in _operations(app) if p.startswith("/api/v1/admin/")]
    node_ops = [
        (m, p) for m, p in _operations(app) if p.startswith("/node-api/") and (m, p) not in PUBLIC
    ]
    assert admin_ops
    assert node_ops
    for method, path in admin_ops:
        response = await _call(client, method, path, tokens["customer"])
        assert response.status_code == 403, f"{method} {path} as a customer: {response.text}"
    for method, path in node_ops:
        response = await _call(client, method, path, tokens["customer"])
        assert response.status_code == 401, f"{method} {path} as a customer: {response.text}"


async def test_a_node_token_sees_only_the_node_api(
    app: FastAPI, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    for method, path in _operations(app):
        if (method, path) in PUBLIC or path.startswith("/node-api/"):
            continue
        response = await _call(client, method, path, tokens["node"])
        assert response.status_code == 401, f"{method} {path} with a node token: {response.text}"
    state = await client.get(
        "/node-api/v1/state", headers={"Authorization": f"Bearer {tokens['node']}"}
    )
    assert state.status_code == 200
