"""No library's validation text reaches a person: every customer form, posted empty and with
wrong values, answers in the provider's words (and so does the API's problem+json)."""

from __future__ import annotations

import html
import re

import httpx
from pydantic_core._pydantic_core import list_all_errors

from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import create_device, create_node
from tests.support.web import post_form

# pydantic's own message templates (the text before the first placeholder), and the email
# validator's; none of them may appear on a page or in an API answer.
LIBRARY = sorted(
    {
        e["message_template_python"].split("{")[0].strip()
        for e in list_all_errors()
        if len(e["message_template_python"].split("{")[0].strip()) >= 8
    }
    | {
        "Field required",
        "String should have at least",
        "Value should have at least",
        "Input should be",
        "value is not a valid email address",
        "Value error,",
        "after validation",
    }
)

WRONG_TEXT = "\x00" + "x" * 5000
EMPTY = ""


def library_text(text: str) -> list[str]:
    shown = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return [phrase for phrase in LIBRARY if phrase in shown]


def forms(device_id: int) -> list[tuple[str, str, list[str], dict[str, str]]]:
    """(action, page with the form, its fields, wrong values) of every customer form."""
    return [
        (
            "/account/password",
            "/account",
            ["current_password", "new_password"],
            {"current_password": WRONG_TEXT, "new_password": "short"},
        ),
        ("/account/two-factor/disable", "/account", ["code"], {"code": "12ab"}),
        ("/account/two-factor/recovery-codes", "/account", ["renew_code"], {"renew_code": "x"}),
        (
            "/billing/checkout",
            "/billing",
            ["plan_code", "method"],
            {"plan_code": "x" * 100, "method": "barter"},
        ),
        (
            "/devices",
            "/devices",
            ["name", "public_key", "node_id"],
            {"name": "\t\n", "public_key": "k" * 200, "node_id": "-3"},
        ),
        (f"/devices/{device_id}/rename", f"/devices/{device_id}", ["name"], {"name": "y" * 99}),
        (
            f"/devices/{device_id}/rotate",
            f"/devices/{device_id}",
            ["public_key", "node_id"],
            {"public_key": "k" * 200, "node_id": "abc"},
        ),
        (
            f"/devices/{device_id}/dns-filters",
            f"/devices/{device_id}",
            ["dns_filters"],
            {"dns_filters": "no-such-filter"},
        ),
        (
            "/privacy/requests",
            "/privacy",
            ["kind", "details"],
            {"kind": "world-domination", "details": WRONG_TEXT},
        ),
        (
            "/privacy/email",
            "/privacy/email",
            ["new_email", "password"],
            {"new_email": "not-an-address", "password": WRONG_TEXT},
        ),
        (
            "/privacy/billing",
            "/privacy/billing",
            ["country", "city", "postal_code", "card_last4", "name_or_company"],
            {
                "country": "Germany",
                "city": "c" * 300,
                "postal_code": "p" * 30,
                "card_last4": "12x",
                "name_or_company": "n" * 300,
            },
        ),
        (
            "/privacy/delete",
            "/privacy/delete",
            ["password", "totp_code"],
            {"password": WRONG_TEXT, "totp_code": "abc"},
        ),
        ("/account/terms/accept", "/account/terms", ["version"], {"version": "v" * 100}),
    ]


PUBLIC_FORMS: list[tuple[str, str, list[str], dict[str, str]]] = [
    (
        "/signup",
        "/signup",
        ["email", "password", "accept_terms", "age_attestation"],
        {"email": "nobody", "password": "short", "age_attestation": "toddler"},
    ),
    ("/login", "/login", ["email", "password"], {"email": "@@", "password": WRONG_TEXT}),
    ("/forgot-password", "/forgot-password", ["email"], {"email": "x" * 400}),
    (
        "/reset-password",
        "/forgot-password",
        ["token", "new_password"],
        {"token": "t" * 300, "new_password": "short"},
    ),
]


async def test_public_forms_speak_plainly(client: httpx.AsyncClient) -> None:
    seen = 0
    for action, page, fields, wrong in PUBLIC_FORMS:
        for data in ({name: EMPTY for name in fields}, wrong):
            answer = await post_form(client, action, data, page=page)
            assert answer.status_code < 500, (action, answer.status_code)
            assert library_text(answer.text) == [], (action, data, library_text(answer.text))
            seen += answer.status_code == 422
    assert seen >= 6  # the forms really refused, so their messages were shown


async def test_customer_forms_speak_plainly(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer(two_factor=True)
    async with unit_of_work(runtime.sessionmaker) as session:
        await create_node(session)
        device = await create_device(session, customer.account)
        device_id = device.id
    refused = 0
    for action, page, fields, wrong in forms(device_id):
        for data in ({name: EMPTY for name in fields}, wrong):
            answer = await post_form(client, action, data, page=page)
            assert answer.status_code < 500, (action, answer.status_code, answer.text[:300])
            assert library_text(answer.text) == [], (action, data, library_text(answer.text))
            refused += answer.status_code == 422
    assert refused >= 15


async def test_api_answers_speak_plainly(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    client.headers["Authorization"] = f"Bearer {customer.token}"
    for path, body in (
        ("/api/v1/accounts", {}),
        ("/api/v1/accounts", {"email": "x", "password": "s", "accept_terms_version": ""}),
        ("/api/v1/devices", {}),
        ("/api/v1/devices", {"name": "", "node_id": "abc", "public_key": "k" * 300}),
        ("/api/v1/privacy/requests", {"kind": "x", "details": ""}),
    ):
        answer = await client.post(path, json=body)
        assert answer.status_code == 422, (path, answer.status_code)
        problem = answer.json()
        words = " ".join([problem["detail"], *(e["message"] for e in problem["errors"])])
        assert library_text(words) == [], (path, words)
        assert all(e["message"] for e in problem["errors"])
