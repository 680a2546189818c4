"""The affiliate program's rules as the service applies them: applying, the payout minimum,
returned payouts, the refund rate, inactivity, reviews, self-referral by mailbox, refunds
before payout, erasure."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.billing.service import billing as billing_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Affiliate,
    AffiliateStatus,
    Base,
    Commission,
    CommissionStatus,
    Order,
    OrderStatus,
    PayoutItem,
    Referral,
    ReferralHow,
    utcnow,
)
from burrow.control.runtime import Runtime
from tests.control.affiliates.conftest import (
    Money,
    make_affiliate,
    make_commission,
    policy_with,
)
from tests.support.app import app_client, running_runtime
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_paid_order,
    create_session_token,
)
from tests.support.paypal_server import FakePayPal
from tests.support.smtp import SmtpServer
from tests.support.stripe_server import HTTPX_DATA_WARNING

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

PROBLEM = "application/problem+json"


async def _headers(runtime: Runtime, *, admin: bool = False) -> dict[str, str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        token = await create_session_token(session, account)
    return {"Authorization": f"Bearer {token}"}


async def _affiliate(runtime: Runtime, affiliate_id: int) -> Affiliate:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.get(Affiliate, affiliate_id)
        assert found is not None
        return found


async def _commission(runtime: Runtime, commission_id: int) -> Commission:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.get(Commission, commission_id)
        assert found is not None
        return found


# --- applying --------------------------------------------------------------------------------


async def test_an_application_needs_the_promotional_site(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    headers = await _headers(runtime)
    response = await client.post(
        "/api/v1/affiliates",
        json={"contact_name": "Sam", "paypal_email": "sam@example.net"},
        headers=headers,
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["field"] == "website"
    assert "promotional site" in response.json()["detail"]


async def test_no_program_no_application(
    metered: Runtime, metered_client: httpx.AsyncClient
) -> None:
    """The second seed runs no affiliate program."""
    headers = await _headers(metered)
    response = await metered_client.post(
        "/api/v1/affiliates",
        json={"contact_name": "Sam", "paypal_email": "sam@example.net"},
        headers=headers,
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "This provider runs no affiliate program."


async def test_a_denied_application_stays_denied(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await make_affiliate(session, status="applied")
    admin = await _headers(runtime, admin=True)
    url = f"/api/v1/admin/affiliates/{affiliate.id}/decision"
    denied = await client.post(
        url, json={"decision": "deny", "reason": "No promotional site."}, headers=admin
    )
    assert denied.json()["status"] == "denied"
    again = await client.post(url, json={"decision": "approve", "reason": "x"}, headers=admin)
    assert again.status_code == 409
    assert again.json()["detail"].startswith(f"Affiliate {affiliate.id} is denied")


# --- payouts ---------------------------------------------------------------------------------


async def test_no_paypal_no_payout(runtime: Runtime, client: httpx.AsyncClient) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await make_affiliate(session)
        await make_commission(session, affiliate.id, amount=9999)
    admin = await _headers(runtime, admin=True)
    response = await client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    # No PayPal set up here: said before anything else.
    assert response.status_code == 409
    assert "PayPal is not set up" in response.json()["detail"]


async def test_the_minimum_and_returned_money(money: Money) -> None:
    runtime = money.runtime
    async with unit_of_work(runtime.sessionmaker) as session:
        rich = await make_affiliate(session, paypal_email="rich@example.net")
        poor = await make_affiliate(session, paypal_email="poor@example.net")
        bounced = await make_affiliate(session, paypal_email="gone@example.net")
        await make_commission(session, rich.id, amount=400)
        await make_commission(session, poor.id, amount=299)  # under the test's minimum of 300
        returned = await make_commission(session, bounced.id, amount=500)
    admin = await money.admin()
    paid = await money.client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    assert paid.status_code == 202, paid.text
    assert paid.json()["total_minor"] == 900
    assert money.paypal.paid_to("poor@example.net") == 0
    money.paypal.settle_payouts({"gone@example.net": "RETURNED"})
    batch_id = paid.json()["id"]
    synced = await money.client.post(
        f"/api/v1/admin/affiliates/payouts/{batch_id}/send", headers=admin
    )
    assert synced.status_code == 202
    detail = (
        await money.client.get(f"/api/v1/admin/affiliates/payouts/{batch_id}", headers=admin)
    ).json()
    assert sorted(i["status"] for i in detail["items"]) == ["credited_back", "success"]
    assert detail["status"] == "done"
    # The returned money is the affiliate's balance again.
    again = await _commission(runtime, returned.id)
    assert (again.status, again.payout_item_id) == (CommissionStatus.payable, None)
    # Nothing left over the minimum but the returned 5.00 (the poor 2.99 waits).
    second = await money.client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    assert second.status_code == 202
    assert second.json()["total_minor"] == 500
    third = await money.client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    assert third.status_code == 409
    assert "3.00 USD" in third.json()["detail"]


# --- the program's rules ---------------------------------------------------------------------


async def _referred_orders(runtime: Runtime, affiliate_id: int, count: int, refunded: int) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        for index in range(count):
            buyer = await create_account(session)
            session.add(
                Referral(account_id=buyer.id, affiliate_id=affiliate_id, how=ReferralHow.link)
            )
            order = await create_paid_order(session, runtime, buyer, f"ref-{affiliate_id}-{index}")
            if index < refunded:
                await billing_service.mark_refunded(session, order, order.amount_minor)


async def test_a_refund_rate_over_the_threshold_suspends(runtime: Runtime) -> None:
    """The seed's 25 % over 90 days, judged once there are ten referred orders."""
    async with unit_of_work(runtime.sessionmaker) as session:
        high = await make_affiliate(session)
        few = await make_affiliate(session)
        fine = await make_affiliate(session)
    await _referred_orders(runtime, high.id, 10, 3)  # 30 %
    await _referred_orders(runtime, few.id, 9, 9)  # too few to judge
    await _referred_orders(runtime, fine.id, 12, 3)  # 25 %: not above
    done = await affiliate_service.enforce(runtime)
    assert done["suspended"] == 1
    suspended = await _affiliate(runtime, high.id)
    assert suspended.status == AffiliateStatus.suspended
    assert suspended.status_reason == (
        "3 of the 10 referred orders of the last 90 days were refunded (30.0 %), above the "
        "program's 25 %."
    )
    assert (await _affiliate(runtime, few.id)).status == AffiliateStatus.approved
    assert (await _affiliate(runtime, fine.id)).status == AffiliateStatus.approved
    # Out of the rolling window, the same refunds suspend no one.
    async with unit_of_work(runtime.sessionmaker) as session:
        again = await make_affiliate(session)
    await _referred_orders(runtime, again.id, 10, 5)
    done = await affiliate_service.enforce(runtime, now=utcnow() + timedelta(days=91))
    assert (await _affiliate(runtime, again.id)).status == AffiliateStatus.approved


async def test_six_months_inactive_notice_first_then_the_end(
    runtime: Runtime, smtp: SmtpServer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        idle = await make_affiliate(session, email="idle@example.com", last_active_days_ago=175)
        pending = await make_commission(session, idle.id, amount=100, status="pending")
        payable = await make_commission(session, idle.id, amount=300, status="payable")
    assert await affiliate_service.enforce(runtime) == {"suspended": 0, "notified": 1, "ended": 0}
    [notice] = await smtp.inbox.arrived("idle@example.com")
    assert "inactive" in str(notice["Subject"])
    assert "after 6 months without activity; yours ends in about 14 days" in (
        smtp.inbox.body(notice)
    )
    # Told once; the end comes only after the notice period.
    assert await affiliate_service.enforce(runtime) == {"suspended": 0, "notified": 0, "ended": 0}
    later = utcnow() + timedelta(days=15)
    assert await affiliate_service.enforce(runtime, now=later) == {
        "suspended": 0,
        "notified": 0,
        "ended": 1,
    }
    ended = await _affiliate(runtime, idle.id)
    assert ended.status == AffiliateStatus.terminated
    assert ended.status_reason == "No referred paid order and no sign-in for 6 months."
    # Pending commissions end with it; payable ones are paid out (the policy's "pay").
    assert (await _commission(runtime, pending.id)).status == CommissionStatus.cancelled
    assert (await _commission(runtime, payable.id)).status == CommissionStatus.payable


async def test_a_sign_in_keeps_an_affiliate_active(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        idle = await make_affiliate(session, email="back@example.com", last_active_days_ago=175)
    signed = await client.post(
        "/api/v1/sessions", json={"email": "back@example.com", "password": DEFAULT_PASSWORD}
    )
    assert signed.status_code == 201, signed.text
    assert await affiliate_service.enforce(runtime) == {"suspended": 0, "notified": 0, "ended": 0}
    found = await _affiliate(runtime, idle.id)
    # The day only, never the time of the sign-in.
    assert found.last_active_at == utcnow().replace(hour=0, minute=0, second=0, microsecond=0)


async def test_review_of_a_held_commission(runtime: Runtime, client: httpx.AsyncClient) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await make_affiliate(session)
        cleared = await make_commission(session, affiliate.id, amount=100, status="held")
        rejected = await make_commission(session, affiliate.id, amount=100, status="held")
    admin = await _headers(runtime, admin=True)
    url = "/api/v1/admin/affiliates/commissions/{}/review"
    ok = await client.post(
        url.format(cleared.id),
        json={"decision": "clear", "reason": "Family member."},
        headers=admin,
    )
    assert ok.json()["status"] == "pending"
    no = await client.post(
        url.format(rejected.id), json={"decision": "reject", "reason": "Own card."}, headers=admin
    )
    assert no.json()["status"] == "cancelled"
    twice = await client.post(
        url.format(rejected.id), json={"decision": "clear", "reason": "x"}, headers=admin
    )
    assert twice.status_code == 409
    assert twice.headers["content-type"] == PROBLEM


async def test_a_self_referral_through_a_tagged_address_is_held(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await make_affiliate(session, email="me@example.com")
        puppet = await create_account(session, email="Me+vpn@example.com")
        await affiliate_service.attach(
            session, runtime, puppet.id, affiliate.code, ReferralHow.code
        )
        await create_paid_order(session, runtime, puppet, "self-1")
        [commission] = await session.scalars(select(Commission))
        assert commission.status == CommissionStatus.held
        assert commission.reason == "Self-referral: the buyer's email address is the affiliate's."
        # The affiliate's own account is never referred by its own code.
        assert (
            await affiliate_service.attach(
                session, runtime, affiliate.account_id or 0, affiliate.code, ReferralHow.code
            )
            is None
        )


async def test_a_partial_refund_before_payout_shrinks_the_commission(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await make_affiliate(session)
        buyer = await create_account(session)
        await affiliate_service.attach(session, runtime, buyer.id, affiliate.code, ReferralHow.link)
        order = await create_paid_order(
            session, runtime, buyer, "half", plan_code="personal-yearly"
        )
        [commission] = await session.scalars(select(Commission))
        assert (commission.amount_minor, commission.payout_minor) == (1499, 1499)
        # Half the money back (as a provider's own refund reports it), then the rest.
        await billing_service.provider_refunded(session, runtime, order, 2500)
        await session.refresh(commission)
        assert (commission.status, commission.payout_minor) == ("pending", 1499 - 750)
        await billing_service.provider_refunded(session, runtime, order, 4999)
        await session.refresh(commission)
        assert (commission.status, commission.payout_minor) == ("cancelled", 0)
        stored = await session.get(Order, order.id)
        assert stored is not None
        assert stored.status == OrderStatus.refunded


async def test_erasure_keeps_payouts_anonymised(money: Money) -> None:
    runtime = money.runtime
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await make_affiliate(session, paypal_email="leaving@example.net")
        await make_commission(session, affiliate.id, amount=400)
        await make_commission(session, affiliate.id, amount=50, status="pending")
        account_id = affiliate.account_id
    admin = await money.admin()
    assert (
        await money.client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    ).status_code == 202
    async with unit_of_work(runtime.sessionmaker) as session:
        await affiliate_service.erase(session, runtime, account_id or 0)
    async with unit_of_work(runtime.sessionmaker) as session:
        kept = await session.get(Affiliate, affiliate.id)
        assert kept is not None
        assert (kept.account_id, kept.paypal_email, kept.contact_name) == (None, None, None)
        assert kept.status == AffiliateStatus.terminated
        [item] = await session.scalars(select(PayoutItem))
        assert (item.amount_minor, item.receiver) == (400, None)
        statuses = sorted(c.status for c in await session.scalars(select(Commission)))
        assert statuses == ["cancelled", "paid"]


async def test_a_policy_paying_by_hand_sends_nothing(
    money_settings: Settings, fake_paypal: FakePayPal
) -> None:
    policy = policy_with(payout_method="bank_transfer", payout_minimum_minor=100)
    async with running_runtime(money_settings, policy=policy) as runtime:
        async with unit_of_work(runtime.sessionmaker) as session:
            affiliate = await make_affiliate(session)
            await make_commission(session, affiliate.id, amount=500)
        async with app_client(runtime) as client:
            admin = await _headers(runtime, admin=True)
            response = await client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    assert response.status_code == 409
    assert response.json()["detail"].startswith("The policy pays affiliates by bank transfer")
    assert fake_paypal.calls == []


async def test_a_click_keeps_nothing_but_its_count(
    runtime: Runtime, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Strict seed: no click log, no visitor's address; the count goes up by one."""
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await make_affiliate(session)

    async def rows() -> dict[str, int]:
        async with unit_of_work(runtime.sessionmaker) as session:
            return {
                table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
                for table in Base.metadata.sorted_tables
            }

    before = await rows()
    caplog.set_level(logging.DEBUG)
    followed = await client.get(
        f"/r/{affiliate.code}", headers={"X-Forwarded-For": "198.51.100.23"}
    )
    assert followed.status_code == 303
    assert await rows() == before
    assert (await _affiliate(runtime, affiliate.id)).clicks == 1
    assert "198.51.100.23" not in caplog.text
    assert "127.0.0.1" not in caplog.text
    # An unknown code counts nothing and sets no cookie.
    unknown = await client.get("/r/nobody")
    assert unknown.status_code == 303
    assert "burrow_ref" not in unknown.headers.get("set-cookie", "")


async def test_paypals_word_on_a_payout_item_flows_back(money: Money) -> None:
    """``PAYMENT.PAYOUTS-ITEM.*`` webhooks (signed, verified with PayPal) record an item's end
    at once: returned money is the affiliate's balance again; a repeat changes nothing."""
    runtime = money.runtime
    async with unit_of_work(runtime.sessionmaker) as session:
        affiliate = await make_affiliate(session, paypal_email="bounce@example.net")
        commission = await make_commission(session, affiliate.id, amount=700)
    admin = await money.admin()
    paid = await money.client.post("/api/v1/admin/affiliates/payouts", headers=admin)
    assert paid.status_code == 202, paid.text
    [batch] = money.paypal.payouts.values()
    [item] = batch["items"]
    item["transaction_status"] = "RETURNED"
    for _ in range(2):
        event = money.paypal.event("PAYMENT.PAYOUTS-ITEM.RETURNED", item)
        delivered = await money.client.post(
            "/api/v1/billing/webhooks/paypal",
            content=json.dumps(event),
            headers=money.paypal.sign(event),
        )
        assert delivered.status_code == 200, delivered.text
    again = await _commission(runtime, commission.id)
    assert (again.status, again.payout_item_id) == (CommissionStatus.payable, None)
    async with unit_of_work(runtime.sessionmaker) as session:
        [stored] = await session.scalars(select(PayoutItem))
        assert stored.status == "credited_back"
        assert stored.error == "PayPal: returned"
