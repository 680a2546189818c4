"""The admin API asks for the second factor as the admin panel does: every admin operation of
the OpenAPI document refuses an administrator's session that has not proved it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pyotp
from fastapi import FastAPI

from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime
from tests.support.factories import DEFAULT_PASSWORD, create_account, create_session_token


def _admin_operations(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if path.startswith("/api/v1/admin/")
    )


async def _call(client: httpx.AsyncClient, method: str, path: str, token: str) -> Any:
    kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return await client.request(method, re.sub(r"\{[^}]+\}", "1", path), **kwargs)


async def test_every_admin_route_refuses_a_session_without_the_second_factor(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as s:
        unenrolled = await create_account(s, admin=True, totp=False)
        plain_token = await create_session_token(s, unenrolled)
        enrolled = await create_account(s, admin=True, totp=False)
        password_only = await create_session_token(s, enrolled)  # before two-factor was on
        enrolled.totp_enabled = True
        enrolled.totp_secret = pyotp.random_base32()
    operations = _admin_operations(app)
    assert len(operations) >= 6
    for method, path in operations:
        answer = await _call(client, method, path, plain_token)
        assert answer.status_code == 403, (method, path, answer.text)
        body = answer.json()
        assert body["status"] == 403
        assert "two-factor sign-in" in body["detail"]
        assert "/api/v1/accounts/me/totp" in body["detail"]  # how to set it up
        answer = await _call(client, method, path, password_only)
        assert answer.status_code == 403, (method, path, answer.text)
        assert "sign in again" in answer.json()["detail"]


async def test_signing_in_with_the_code_opens_the_admin_api(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    secret = pyotp.random_base32()
    async with unit_of_work(runtime.sessionmaker) as s:
        admin = await create_account(s, admin=True, totp=False)
        admin.totp_enabled = True
        admin.totp_secret = secret
    signed_in = await client.post(
        "/api/v1/sessions",
        json={
            "email": admin.email,
            "password": DEFAULT_PASSWORD,
            "totp_code": pyotp.TOTP(secret).now(),
        },
    )
    assert signed_in.status_code == 201, signed_in.text
    headers = {"Authorization": f"Bearer {signed_in.json()['token']}"}
    assert (await client.get("/api/v1/admin/accounts", headers=headers)).status_code == 200
    assert (await client.get("/api/v1/admin/audit", headers=headers)).status_code == 200
