"""Terms from the account: the current version, what was accepted and when, the history."""

from __future__ import annotations

import re

import httpx

from tests.control.web.conftest import MakeWebCustomer
from tests.support.web import post_form


async def test_terms_page_shows_acceptance_and_history(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    page = await client.get("/account/terms")
    assert page.status_code == 200
    assert '<dd id="current-terms-version">2026-11</dd>' in page.text
    assert 'id="terms-accepted"' in page.text
    assert "when you signed up" in page.text
    link = re.search(r'href="(/account/terms/versions/\d+)"', page.text)
    assert link is not None
    version = await client.get(link.group(1))
    assert version.status_code == 200
    assert 'id="terms-text"' in version.text
    assert (await client.get("/account/terms/versions/999999")).status_code == 404


async def test_accepting_a_version_that_is_not_current_is_refused_with_a_message(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    refused = await post_form(
        client, "/account/terms/accept", {"version": "1999-01"}, page="/account/terms"
    )
    assert refused.status_code == 303
    shown = await client.get("/account/terms")
    assert "notice-error" in shown.text
    assert "2026-11" in shown.text
    accepted = await post_form(
        client, "/account/terms/accept", {"version": "2026-11"}, page="/account/terms"
    )
    assert accepted.status_code == 303
    again = await client.get("/account/terms")
    assert "You accepted version 2026-11." in again.text
    # Accepting again keeps the first record: still the sign-up.
    assert "when you signed up" in again.text
