"""Terms versions and acceptance: a new version only when the rendering changes, acceptance at
sign-up, by continued use where the policy says so, and explicitly."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.schemas import AccountCreate
from burrow.control.accounts.service import account as account_service
from burrow.control.models import TermsAcceptance, TermsAcceptanceHow, TermsVersion, utcnow
from burrow.control.policy.schemas import Policy
from burrow.control.runtime import Runtime
from burrow.control.terms.render import render
from burrow.control.terms.service import TermsNotPublished, TermsVersionNotCurrent
from burrow.control.terms.service import terms as terms_service
from tests.support.factories import create_account, unique_email


def _with_terms(policy: Policy, **changes: object) -> Policy:
    return policy.model_copy(update={"terms": policy.terms.model_copy(update=changes)})


async def _versions(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(TermsVersion)) or 0)


async def test_start_publishes_the_policys_terms(session: AsyncSession, runtime: Runtime) -> None:
    current = await terms_service.current(session)
    rendered = render(runtime.policy)
    assert current.content_sha256 == rendered.sha256
    assert current.markdown == rendered.markdown
    assert current.version == runtime.policy.terms.version
    assert current.effective_date == runtime.policy.terms.effective_date
    assert await _versions(session) == 1


async def test_the_same_rendering_makes_no_new_version(
    session: AsyncSession, runtime: Runtime
) -> None:
    result = await terms_service.publish(session, runtime.policy)
    assert result.created is False
    assert await _versions(session) == 1


async def test_a_changed_rendering_makes_a_new_version(
    session: AsyncSession, runtime: Runtime
) -> None:
    first = await terms_service.current(session)
    second_policy = _with_terms(runtime.policy, version="2027-01", effective_date=date(2027, 1, 1))
    second = await terms_service.publish(session, second_policy)
    assert second.created is True
    assert second.version.version == "2027-01"
    assert second.version.content_sha256 != first.content_sha256
    # Going back to the first policy is a change too: the newest version differs from it.
    third = await terms_service.publish(session, runtime.policy)
    assert third.created is True
    assert third.version.content_sha256 == first.content_sha256
    history = await terms_service.history(session)
    assert [v.id for v in history] == [third.version.id, second.version.id, first.id]


async def test_changed_terms_under_the_same_label_are_published_with_a_warning(
    session: AsyncSession, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    changed = runtime.policy.model_copy(
        update={
            "network": runtime.policy.network.model_copy(
                update={"blocked_egress_tcp_ports": [25, 465]}
            )
        }
    )
    result = await terms_service.publish(session, changed)
    assert result.created is True
    assert "terms.version is still '2026-11'" in caplog.text


async def test_sign_up_records_the_acceptance(session: AsyncSession, runtime: Runtime) -> None:
    account = await account_service.register(
        session,
        runtime,
        AccountCreate.model_validate(
            {
                "email": unique_email("terms"),
                "password": "a long enough password",
                "accept_terms_version": runtime.policy.terms.version,
            }
        ),
    )
    found = await terms_service.for_account(session, runtime.policy, account)
    assert found.accepted_current is True
    [(acceptance, version)] = found.acceptances
    assert acceptance.how == TermsAcceptanceHow.signup
    assert version.id == found.current.id
    assert "when you signed up" in found.detail


async def test_record_acceptance_is_idempotent_and_needs_a_published_version(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    first = await terms_service.record_acceptance(session, account.id, "2026-11", "signup")
    again = await terms_service.record_acceptance(session, account.id, "2026-11", "explicit")
    assert again.id == first.id
    assert again.how == TermsAcceptanceHow.signup
    with pytest.raises(TermsNotPublished, match="'1999-01' has not been published"):
        await terms_service.record_acceptance(session, account.id, "1999-01", "signup")


async def test_an_older_sign_up_is_taken_from_the_account(
    session: AsyncSession, runtime: Runtime
) -> None:
    """Accounts that accepted at sign-up before acceptances were recorded one by one."""
    account = await create_account(session)  # terms_version_accepted="2026-11", no row
    found = await terms_service.for_account(session, runtime.policy, account)
    [(acceptance, _version)] = found.acceptances
    assert acceptance.how == TermsAcceptanceHow.signup
    assert acceptance.accepted_at == account.terms_accepted_at


async def test_continued_use_after_the_effective_date_accepts_a_new_version(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    await terms_service.record_acceptance(session, account.id, "2026-11", "signup")
    yesterday = utcnow().date() - timedelta(days=1)
    newer = _with_terms(runtime.policy, version="2027-01", effective_date=yesterday)
    await terms_service.publish(session, newer)
    found = await terms_service.for_account(session, newer, account)
    assert found.accepted_current is True
    assert [(a.how, v.version) for a, v in found.acceptances] == [
        (TermsAcceptanceHow.signup, "2026-11"),
        (TermsAcceptanceHow.continued_use, "2027-01"),
    ]
    assert "by using the service after it took effect" in found.detail
    # Seen again: nothing more is recorded.
    again = await terms_service.for_account(session, newer, account)
    assert len(again.acceptances) == 2


async def test_no_continued_use_before_the_effective_date(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    future = utcnow().date() + timedelta(days=10)
    newer = _with_terms(runtime.policy, version="2027-01", effective_date=future)
    await terms_service.publish(session, newer)
    found = await terms_service.for_account(session, newer, account)
    assert found.accepted_current is False
    assert f"takes effect on {future}" in found.detail


async def test_explicit_acceptance_where_continued_use_does_not_count(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    newer = _with_terms(
        runtime.policy,
        version="2027-01",
        effective_date=date(2020, 1, 1),
        continued_use_is_acceptance=False,
    )
    await terms_service.publish(session, newer)
    found = await terms_service.for_account(session, newer, account)
    assert found.accepted_current is False
    assert "needs your acceptance" in found.detail
    with pytest.raises(TermsVersionNotCurrent):
        await terms_service.accept(session, newer, account, "2026-11")
    accepted = await terms_service.accept(session, newer, account, "2027-01")
    assert accepted.accepted_current is True
    assert accepted.acceptances[-1][0].how == TermsAcceptanceHow.explicit
    rows = await session.scalar(
        select(func.count())
        .select_from(TermsAcceptance)
        .where(TermsAcceptance.account_id == account.id)
    )
    assert rows == 2
