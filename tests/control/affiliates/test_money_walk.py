"""The affiliate program's money, end to end: a referral link, a sign-up, Stripe-paid orders
(signed webhooks against a local Stripe-shaped server), the holding period passing on a test
clock, a PayPal payout batch whose answer is lost and which is sent again without paying
twice (a local PayPal-shaped server), a refund after the payout making the next payout
smaller, and a self-referral held for review."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from burrow.control.affiliates.service import REFERRAL_COOKIE
from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.app import create_app
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Affiliate,
    Commission,
    CommissionKind,
    CommissionStatus,
    PayoutBatch,
    Referral,
)
from tests.control.affiliates.conftest import Money, later
from tests.support.stripe_server import HTTPX_DATA_WARNING

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

AFFILIATE_PAYPAL = "promoter@example.net"


async def _commissions(money: Money, affiliate_id: int) -> list[Commission]:
    async with unit_of_work(money.runtime.sessionmaker) as session:
        query = select(Commission).where(Commission.affiliate_id == affiliate_id)
        return list(await session.scalars(query.order_by(Commission.id)))


async def _by_order(money: Money, affiliate_id: int) -> dict[int | None, Commission]:
    found = await _commissions(money, affiliate_id)
    return {c.order_id: c for c in found if c.kind == CommissionKind.earned}


async def _batches(money: Money) -> list[PayoutBatch]:
    async with unit_of_work(money.runtime.sessionmaker) as session:
        return list(await session.scalars(select(PayoutBatch).order_by(PayoutBatch.id)))


async def _visitor_signs_up(money: Money, code: str, email: str) -> httpx.Response:
    """A fresh browser follows the referral link, then signs up carrying its cookie."""
    transport = httpx.ASGITransport(app=create_app(runtime=money.runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        followed = await browser.get(f"/r/{code}")
        assert followed.status_code == 303
        assert followed.headers["location"] == "/signup"
        assert browser.cookies.get(REFERRAL_COOKIE) == code
        cookie = followed.headers["set-cookie"]
        assert "Max-Age=2592000" in cookie  # the policy's 30 days
        return await browser.post(
            "/api/v1/accounts",
            json={
                "email": email,
                "password": "a long enough password for this",
                "accept_terms_version": money.runtime.policy.terms.version,
            },
        )


async def test_the_money_walk(money: Money) -> None:
    admin = await money.admin()

    # The affiliate applies; an administrator approves.
    _, affiliate_headers = await money.customer("promoter@example.com")
    applied = await money.client.post(
        "/api/v1/affiliates",
        json={
            "contact_name": "Pat Promoter",
            "website": "https://vpn-reviews.example.org/",
            "paypal_email": AFFILIATE_PAYPAL,
        },
        headers=affiliate_headers,
    )
    assert applied.status_code == 201, applied.text
    assert applied.json()["status"] == "applied"
    affiliate_id, code = applied.json()["id"], applied.json()["code"]
    approved = await money.client.post(
        f"/api/v1/admin/affiliates/{affiliate_id}/decision",
        json={"decision": "approve", "reason": "Real review site, contact checked."},
        headers=admin,
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    # The affiliate bought for themself once, with their own card.
    await money.pay(affiliate_headers, "in_own", card="fp_promoter_card")

    # A visitor follows the link and signs up: the referral sticks to the new account.
    signed = await _visitor_signs_up(money, code, "alice@example.com")
    assert signed.status_code == 202, signed.text
    alice, alice_headers = await money.signed_up("alice@example.com")
    # Another customer types the code at checkout.
    _, bob_headers = await money.customer("bob@example.com")
    # Someone signs up through the link but pays with the affiliate's own card.
    await _visitor_signs_up(money, code, "sock.puppet@example.org")
    puppet, puppet_headers = await money.signed_up("sock.puppet@example.org")
    async with unit_of_work(money.runtime.sessionmaker) as session:
        referrals = {r.account_id: r.how for r in await session.scalars(select(Referral))}
        stored = await session.get(Affiliate, affiliate_id)
        assert stored is not None
        assert stored.clicks == 2  # a number only: no click log, no address
    assert referrals == {alice: "link", puppet: "link"}

    alice_order = await money.pay(alice_headers, "in_alice")
    bob_order = await money.pay(bob_headers, "in_bob", referral_code=code)
    puppet_order = await money.pay(puppet_headers, "in_puppet", card="fp_promoter_card")

    earned = await _by_order(money, affiliate_id)
    assert set(earned) == {alice_order.id, bob_order.id, puppet_order.id}
    for order in (alice_order, bob_order):
        commission = earned[order.id]
        assert commission.status == CommissionStatus.pending
        assert (commission.amount_minor, commission.currency) == (209, "USD")  # 30 % of 6.99
    # The self-referral is held for review, not silently paid.
    held = earned[puppet_order.id]
    assert held.status == CommissionStatus.held
    assert held.reason is not None
    assert "card or PayPal account" in held.reason
    listed = await money.client.get("/api/v1/admin/affiliates/commissions/held", headers=admin)
    assert [c["id"] for c in listed.json()] == [held.id]

    # Alice asks for her money back inside the window; it waits for a person (strict seed).
    asked = await money.client.post(
        f"/api/v1/billing/orders/{alice_order.id}/refund",
        json={"reason": "It does not work as advertised."},
        headers=alice_headers,
    )
    assert asked.status_code == 201, asked.text
    assert asked.json()["status"] == "queued"

    # The holding period (the 30-day refund window) passes on the test clock.
    assert await affiliate_service.release_due(money.runtime, now=later(29)) == 0
    assert await affiliate_service.release_due(money.runtime, now=later(31)) == 2
    earned = await _by_order(money, affiliate_id)
    assert earned[alice_order.id].status == CommissionStatus.payable
    assert earned[puppet_order.id].status == CommissionStatus.held

    # The payout: PayPal makes the batch but its answer is lost (a 500).
    money.paypal.lost_payout_answers = 1
    started = await money.client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    assert started.status_code == 202, started.text
    [batch] = await _batches(money)
    assert (batch.status, batch.attempts) == ("created", 1)
    assert batch.error is not None
    assert money.paypal.paid_to(AFFILIATE_PAYPAL) == 418  # PayPal did pay, once
    # Started again at the same time: no second batch, nothing new to pay.
    again = await money.client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    # Sent again: the same sender_batch_id, which PayPal pays at most once.
    resent = await money.client.post(
        f"/api/v1/admin/affiliates/payouts/{batch.id}/send", headers=admin
    )
    assert resent.status_code == 202, resent.text
    [batch] = await _batches(money)
    assert batch.status == "pending"
    assert batch.provider_batch_id is not None
    posts = money.paypal.made("POST", "/v1/payments/payouts")
    assert len(posts) == 2
    assert {p.body["sender_batch_header"]["sender_batch_id"] for p in posts} == {
        batch.sender_batch_id
    }
    assert len(money.paypal.payouts) == 1
    assert money.paypal.paid_to(AFFILIATE_PAYPAL) == 418
    money.paypal.settle_payouts()
    synced = await money.client.post(
        f"/api/v1/admin/affiliates/payouts/{batch.id}/send", headers=admin
    )
    assert synced.status_code == 202
    detail = await money.client.get(f"/api/v1/admin/affiliates/payouts/{batch.id}", headers=admin)
    assert detail.json()["status"] == "done"
    assert [(i["amount_minor"], i["status"]) for i in detail.json()["items"]] == [(418, "success")]

    # Alice's refund is approved after the payout: a negative commission for next time.
    [queued] = (await money.client.get("/api/v1/admin/refunds", headers=admin)).json()
    decided = await money.client.post(
        f"/api/v1/admin/refunds/{queued['id']}/approve",
        json={"reason": "Could not connect from her country."},
        headers=admin,
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "executed"
    found = await _commissions(money, affiliate_id)
    [clawback] = [c for c in found if c.kind == CommissionKind.clawback]
    assert (clawback.amount_minor, clawback.status) == (-209, CommissionStatus.payable)
    assert (await _by_order(money, affiliate_id))[alice_order.id].status == "paid"

    # The next referred order (a year's plan): the payout is smaller by the clawback.
    _, carol_headers = await money.customer("carol@example.com")
    carol_order = await money.pay(
        carol_headers, "in_carol", plan="personal-yearly", referral_code=code
    )
    assert (await _by_order(money, affiliate_id))[carol_order.id].amount_minor == 1499
    assert await affiliate_service.release_due(money.runtime, now=later(31)) == 1
    second = await money.client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    assert second.status_code == 202, second.text
    assert second.json()["total_minor"] == 1499 - 209
    assert money.paypal.paid_to(AFFILIATE_PAYPAL) == 418 + 1290

    # The affiliate's own page shows it all.
    mine = await money.client.get("/api/v1/affiliates/me", headers=affiliate_headers)
    assert mine.status_code == 200
    body = mine.json()
    assert body["link"] == f"http://testserver/r/{code}"
    assert (body["signups"], body["paid_orders"], body["balance_minor"]) == (4, 4, 0)
    assert body["by_status"]["held"] == 209
    assert [p["amount_minor"] for p in body["payouts"]] == [418, 1290]
