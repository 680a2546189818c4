"""The privacy center: the customer's data rights, answered at once wherever software can.

- **Access and portability:** ``export`` gathers everything held about an account through the
  domains' own services and repositories (the same reads the app uses), one section per table.
- **Rectification:** ``request_email_change`` (re-verified through the accounts' links);
  billing details are changed through the billing API.
- **Erasure:** ``erase`` ends access at once (sessions, subscriptions, devices leave every node
  through the desired state), erases personal data and keeps the invoices anonymised for
  ``privacy.invoice_retention_years``; ``purge_expired_invoices`` deletes them afterwards.
- **Restriction and objection:** consents (``marketing_email``, ``product_analytics``), each
  change a row with its time; anything else is a request queued for a person with its legal
  deadline (``privacy.request_response_days``).
- The last-login IP (``privacy.store_last_login_ip``) is forgotten after its retention by
  ``clear_old_login_ips``.

May import: the models, db, runtime, policy, and other domains' services and repositories.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.abuse.service import abuse as abuse_service
from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.service import account as account_service
from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.audit.service import admin_audit
from burrow.control.billing.repository import BillingRepository
from burrow.control.billing.service import billing as billing_service
from burrow.control.connections.repository import ConnectionRepository
from burrow.control.credentials.service import credential as credential_service
from burrow.control.db import after_commit
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.service import device as device_service
from burrow.control.errors import Conflict, NotFound
from burrow.control.models import (
    Account,
    AccountStatus,
    Consent,
    ConsentPurpose,
    PrivacyRequest,
    PrivacyRequestKind,
    PrivacyRequestStatus,
    utcnow,
)
from burrow.control.policy.retention import retention_statement as retention_statement
from burrow.control.policy.schemas import Policy
from burrow.control.privacy.repository import PrivacyRepository
from burrow.control.privacy.schemas import (
    AbuseComplaintExport,
    AccountExport,
    AddressHoldingExport,
    AffiliateExport,
    BillingDetailsExport,
    CommissionExport,
    ConnectionRecordExport,
    ConsentExport,
    DeviceCredentialExport,
    DeviceExport,
    EmailVerificationExport,
    OrderExport,
    PaymentExport,
    PayoutItemExport,
    PrivacyExport,
    PrivacyRequestExport,
    ReferralExport,
    RefundRequestExport,
    RefundRuleOutcomeExport,
    SessionExport,
    SubscriptionExport,
    SupportMessageExport,
    SupportRequestExport,
    TermsAcceptanceExport,
    UsageCounterExport,
)
from burrow.control.refunds.service import refund as refund_service
from burrow.control.refunds.usage.service import usage as usage_service
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.repository import SubscriptionRepository
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.support.service import support as support_service
from burrow.control.terms.repository import TermsRepository
from burrow.control.terms.service import terms as terms_service

log = logging.getLogger(__name__)

# An erased account's address: ``.invalid`` can never receive mail (RFC 2606), and the id
# keeps it unique.
ERASED_EMAIL_DOMAIN = "erased.invalid"
# Not an argon2 hash, so no password can ever match it.
ERASED_PASSWORD_HASH = "!erased"  # noqa: S105 (a marker, not a secret)
# A customer can have this many requests waiting for a person at once.
MAX_PENDING_REQUESTS = 5
# Connection records are few (the retention bounds them); this only caps a runaway export.
EXPORT_RECORD_LIMIT = 1_000_000
STORAGE_SECTION = "What we store, and what we do not"

CONSENT_DESCRIPTIONS = {
    ConsentPurpose.marketing_email: "Emails about offers and news. Messages about your account "
    "(verification, receipts, renewals) are sent either way.",
    ConsentPurpose.product_analytics: "Anonymous statistics of how the website is used, to "
    "improve it. Never anything about your VPN traffic.",
}


class PrivacyRequestNotFound(NotFound):
    def __init__(self, request_id: int) -> None:
        super().__init__(f"There is no privacy request {request_id}.")


class PrivacyRequestClosed(Conflict):
    def __init__(self, request: PrivacyRequest) -> None:
        super().__init__(
            f"Privacy request {request.id} is already {request.status.value}; it cannot be "
            "resolved again.",
            request_status=request.status.value,
        )


class TooManyPendingRequests(Conflict):
    def __init__(self) -> None:
        super().__init__(
            f"You already have {MAX_PENDING_REQUESTS} requests waiting for an answer; we "
            "answer each one by its deadline. Add to one of them by writing to us instead."
        )


@dataclass(frozen=True)
class ConsentState:
    purpose: ConsentPurpose
    granted: bool
    changed_at: datetime | None
    description: str


@dataclass(frozen=True)
class QueuedRequest:
    request: PrivacyRequest
    account_email: str | None

    def seconds_left(self, now: datetime) -> int | None:
        if self.request.status is not PrivacyRequestStatus.pending:
            return None
        return int((self.request.due_at - now).total_seconds())


@dataclass(frozen=True)
class Erased:
    request: PrivacyRequest
    retention: list[str]


def _years_before(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:  # 29 February in a year without one
        return moment.replace(year=moment.year - years, day=28)


def what_is_recorded(policy: Policy) -> list[str]:
    """The terms' own section on storage, so that the export says what the terms say."""
    document = terms_service.render(policy).document
    for section in document.sections:
        if section.title == STORAGE_SECTION:
            return [block.text for block in section.blocks if hasattr(block, "text")]
    return []


class PrivacyService:
    # --- access and portability -------------------------------------------------------------

    async def export(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> PrivacyExport:
        """Everything held about ``account``; records the access request as answered."""
        now = utcnow()
        await self._record_done(
            session, account, PrivacyRequestKind.access, "The data export was downloaded."
        )
        accounts = AccountRepository(session)
        orders = await billing_service.orders(session, account.id)
        refunds = await refund_service.list_own(session, account.id)
        details = await BillingRepository(session).details_of(account.id)
        connections = ConnectionRepository(session)
        usage = await usage_service.of_account(session, account.id)
        records = await connections.records_of(account.id, EXPORT_RECORD_LIMIT)
        acceptances = await TermsRepository(session).acceptances(account.id)
        privacy = PrivacyRepository(session)
        support = await support_service.export(session, account)
        affiliate = await affiliate_service.export(session, account.id)
        return PrivacyExport(
            generated_at=now,
            provider=runtime.policy.provider.name,
            privacy_mode=runtime.policy.privacy.mode,
            what_is_recorded=what_is_recorded(runtime.policy),
            account=AccountExport(
                id=account.id,
                email=account.email,
                status=account.status,
                status_reason=account.status_reason,
                status_changed_at=account.status_changed_at,
                created_at=account.created_at,
                email_verified_at=account.email_verified_at,
                is_admin=account.is_admin,
                two_factor_enabled=account.totp_enabled,
                age_attestation=account.age_attestation,
                terms_version_accepted=account.terms_version_accepted,
                terms_accepted_at=account.terms_accepted_at,
                terminated_clause=account.terminated_clause,
                last_login_ip=account.last_login_ip,
                last_login_ip_at=account.last_login_ip_at,
            ),
            account_sessions=[
                SessionExport.model_validate(s) for s in await accounts.sessions_of(account.id)
            ],
            email_verifications=[
                EmailVerificationExport.model_validate(v)
                for v in await accounts.verifications_of(account.id)
            ],
            billing_details=[BillingDetailsExport.model_validate(details)] if details else [],
            subscriptions=[
                SubscriptionExport.model_validate(s)
                for s in await SubscriptionRepository(session).history(account.id)
            ],
            orders=[OrderExport.model_validate(view.order) for view in orders],
            payments=[
                PaymentExport.model_validate(payment)
                for view in orders
                for payment in view.payments
            ],
            refund_requests=[RefundRequestExport.model_validate(v.request) for v in refunds],
            refund_rule_outcomes=[
                RefundRuleOutcomeExport(
                    id=outcome.id,
                    refund_request_id=outcome.refund_request_id,
                    rule=outcome.rule,
                    passed=outcome.passed,
                    needs_judgement=outcome.needs_judgement,
                    message=outcome.message,
                    evidence=json.loads(outcome.evidence or "{}"),
                )
                for view in refunds
                for outcome in view.outcomes
            ],
            devices=[
                DeviceExport.model_validate(d) for d in await device_service.list(session, account)
            ],
            terms_acceptances=[
                TermsAcceptanceExport(
                    id=acceptance.id,
                    terms_version=version.version,
                    effective_date=version.effective_date.isoformat(),
                    accepted_at=acceptance.accepted_at,
                    how=acceptance.how,
                )
                for acceptance, version in acceptances
            ],
            consents=[
                ConsentExport.model_validate(c) for c in await privacy.consents_of(account.id)
            ],
            privacy_requests=[
                PrivacyRequestExport.model_validate(r)
                for r in await privacy.requests_of(account.id)
            ],
            support_requests=[SupportRequestExport.model_validate(v.request) for v in support],
            support_messages=[
                SupportMessageExport.model_validate(m) for v in support for m in v.messages
            ],
            usage_counters=[UsageCounterExport.model_validate(usage)] if usage else [],
            connection_records=[ConnectionRecordExport.model_validate(r) for r in records],
            affiliates=[AffiliateExport.model_validate(affiliate.affiliate)]
            if affiliate.affiliate
            else [],
            referrals=[ReferralExport.model_validate(affiliate.referral)]
            if affiliate.referral
            else [],
            commissions=[CommissionExport.model_validate(c) for c in affiliate.commissions],
            payout_items=[PayoutItemExport.model_validate(i) for i in affiliate.payout_items],
            device_credentials=[
                DeviceCredentialExport.model_validate(c)
                for c in await credential_service.of_account(session, account.id)
            ],
            address_holdings=[
                AddressHoldingExport.model_validate(h)
                for h in await device_service.address_history_of(session, account)
            ],
            abuse_complaints=[
                AbuseComplaintExport.model_validate(c)
                for c in await abuse_service.naming(session, account.id)
            ],
        )

    # --- rectification ----------------------------------------------------------------------

    async def request_email_change(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        *,
        new_email: str,
        password: str,
    ) -> str:
        """A link goes to the new address; the address changes only when it is used, and the
        old address is told then."""
        return await account_service.request_email_change(
            session, runtime, account, new_email=new_email, password=password
        )

    # --- restriction and objection: consents ------------------------------------------------

    async def consents(self, session: AsyncSession, account: Account) -> list[ConsentState]:
        history = await PrivacyRepository(session).consents_of(account.id)
        newest = {row.purpose: row for row in history}
        states = []
        for purpose in ConsentPurpose:
            row = newest.get(purpose)
            states.append(
                ConsentState(
                    purpose=purpose,
                    granted=bool(row and row.granted),
                    changed_at=row.at if row else None,
                    description=CONSENT_DESCRIPTIONS[purpose],
                )
            )
        return states

    async def set_consents(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        changes: dict[ConsentPurpose, bool],
        *,
        source: str = "api",
    ) -> list[ConsentState]:
        """Give or withdraw consents; only a real change makes a row (with its time)."""
        current = {state.purpose: state.granted for state in await self.consents(session, account)}
        repository = PrivacyRepository(session)
        now = utcnow()
        withdrawn = []
        for purpose, granted in changes.items():
            if current[purpose] == granted:
                continue
            await repository.add_consent(
                Consent(
                    account_id=account.id, purpose=purpose, granted=granted, at=now, source=source
                )
            )
            if not granted:
                withdrawn.append(purpose.value)
        if withdrawn:
            await self._record_done(
                session,
                account,
                PrivacyRequestKind.objection,
                "Consent withdrawn for " + ", ".join(withdrawn) + "; that processing stopped.",
            )
        return await self.consents(session, account)

    # --- requests that need a person --------------------------------------------------------

    async def open_request(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        kind: PrivacyRequestKind,
        details: str,
    ) -> PrivacyRequest:
        repository = PrivacyRepository(session)
        await repository.lock_account(account.id)
        if await repository.pending_count(account.id) >= MAX_PENDING_REQUESTS:
            raise TooManyPendingRequests()
        now = utcnow()
        request = await repository.add_request(
            PrivacyRequest(
                account_id=account.id,
                kind=kind,
                status=PrivacyRequestStatus.pending,
                received_at=now,
                due_at=now + timedelta(days=runtime.policy.privacy.request_response_days),
                details=details.strip(),
            )
        )
        contact = runtime.policy.provider.contact_email
        subject = f"New privacy request {request.id} ({kind.value})"
        body = (
            f"A customer made a {kind.value} request that needs a person. Answer it by "
            f"{request.due_at.date().isoformat()} in the admin panel "
            f"(GET /api/v1/admin/privacy-requests).\n"
        )
        after_commit(session, lambda: runtime.mailer.send(contact, subject, body))
        return request

    async def own_requests(self, session: AsyncSession, account: Account) -> list[PrivacyRequest]:
        return list(await PrivacyRepository(session).requests_of(account.id))

    async def queue(self, session: AsyncSession, limit: int = 200) -> list[QueuedRequest]:
        """For administrators: pending requests first, nearest deadline first."""
        rows = await PrivacyRepository(session).queue(max(1, min(limit, 1000)))
        return [QueuedRequest(request, email) for request, email in rows]

    async def resolve(
        self,
        session: AsyncSession,
        runtime: Runtime,
        admin: Account,
        request_id: int,
        status: PrivacyRequestStatus,
        outcome: str,
    ) -> QueuedRequest:
        repository = PrivacyRepository(session)
        request = await repository.get_request(request_id)
        if request is None:
            raise PrivacyRequestNotFound(request_id)
        if request.status is not PrivacyRequestStatus.pending:
            raise PrivacyRequestClosed(request)
        # Compare-and-set: of two admins answering at once, one decides and the other is told.
        decided = await repository.close_pending(
            request,
            {
                "status": status,
                "outcome": outcome.strip(),
                "completed_at": utcnow(),
                "handled_by": admin.id,
            },
        )
        if not decided:
            raise PrivacyRequestClosed(request)
        await admin_audit.record(
            session,
            admin,
            f"privacy_request.{'resolve' if status == 'done' else 'refuse'}",
            "privacy_request",
            request.id,
            request.outcome,
            {"kind": request.kind.value, "status": status.value},
        )
        account = (
            await AccountRepository(session).get(request.account_id)
            if request.account_id is not None
            else None
        )
        if account is not None and account.status is not AccountStatus.erased:
            to = account.email
            subject = f"Your privacy request {request.id} was answered"
            body = (
                f"Hello,\n\nyour {request.kind.value} request of "
                f"{request.received_at.date().isoformat()} was "
                f"{'done' if status == 'done' else 'refused'}:\n\n{request.outcome}\n"
            )
            after_commit(session, lambda: runtime.mailer.send(to, subject, body))
        return QueuedRequest(request, account.email if account is not None else None)

    # --- erasure ------------------------------------------------------------------------------

    async def erase(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        *,
        password: str,
        totp_code: str | None = None,
    ) -> Erased:
        """Delete the account: access ends now, personal data goes, invoices stay anonymised."""
        await account_service.confirm_identity(
            session, runtime, account, password=password, totp_code=totp_code, require_totp=True
        )
        now = utcnow()
        old_email = account.email
        current = await subscription_service.current(session, account.id)
        if (
            current is not None
            and current.provider_subscription_id
            and not current.cancel_at_period_end
            and current.current_period_end > now
        ):
            # A provider that renews by itself (Stripe) is told first, so the card is not
            # charged after the account is gone; unreachable, nothing is erased and the
            # customer tries again (the error says so).
            await subscription_service.cancel(session, runtime, account.id)
        # Not active any more, so the desired state serves none of its devices from here on.
        account.status = AccountStatus.erased
        await session.flush()
        await subscription_service.end_now(session, runtime, account.id)
        for device in await device_service.list(session, account):
            await device_service.remove(session, runtime, account, device.id)
        await desired_state_service.refresh_account(session, runtime, account.id)

        # Before the address and the card fingerprints go: a person who was granted a refund
        # leaves keyed digests of them (linked to no account), so the one-refund-per-person
        # rule still holds after an erasure. Purged with the invoices.
        await refund_service.remember_refunded_person(session, runtime, account)
        repository = PrivacyRepository(session)
        # The affiliate program ends for it; its payouts stay, anonymised, as invoices do.
        await affiliate_service.erase(session, runtime, account.id)
        await repository.erase_owned_rows(account.id)
        # Support conversations are the person's own words: they go, signed-out ones from the
        # same address too.
        await support_service.erase(session, account)
        await repository.anonymise_money(account.id)
        await repository.close_requests(account.id, now, "Closed: the account was erased.")
        await repository.scrub_webhook_payloads(old_email)
        # The trial claim stays: a keyed digest (HMAC with the server's secret) of the address,
        # not the address, linked to no account. Without it, deleting an account and signing
        # up again would give the once-per-person trial again.

        account.email = f"erased-{account.id}@{ERASED_EMAIL_DOMAIN}"
        account.password_hash = ERASED_PASSWORD_HASH
        account.totp_secret = None
        account.totp_enabled = False
        account.totp_last_step = None
        account.is_admin = False
        account.email_verified_at = None
        account.age_attestation = None
        account.terms_version_accepted = None
        account.terms_accepted_at = None
        account.status_reason = "Erased at the customer's request."
        account.status_changed_at = now
        account.last_login_ip = None
        account.last_login_ip_at = None
        account.erased_at = now
        retention = retention_statement(runtime.policy)
        request = await repository.add_request(
            PrivacyRequest(
                account_id=None,
                kind=PrivacyRequestKind.erasure,
                status=PrivacyRequestStatus.done,
                received_at=now,
                due_at=now,
                completed_at=now,
                outcome="The account was erased. " + " ".join(retention[1:2]),
            )
        )
        await session.flush()
        provider = runtime.policy.provider.name
        subject = f"Your {provider} account was deleted"
        body = (
            f"Hello,\n\nas you asked, your {provider} account was deleted and your devices no "
            "longer connect. This is the last message we send to this address.\n\n"
            + "\n\n".join(retention)
            + "\n"
        )
        after_commit(session, lambda: runtime.mailer.send(old_email, subject, body))
        log.info("account %s erased at its owner's request", account.id)
        return Erased(request=request, retention=retention)

    # --- timed work ---------------------------------------------------------------------------

    async def purge_expired_invoices(self, session: AsyncSession, runtime: Runtime) -> int:
        """Delete erased accounts' orders older than the invoice retention, then the accounts
        left without orders and the refunded persons' digests kept as long; returns how many
        orders went."""
        before = _years_before(utcnow(), runtime.policy.privacy.invoice_retention_years)
        repository = PrivacyRepository(session)
        orders = await repository.delete_erased_orders_before(before)
        await repository.delete_empty_erased_accounts()
        await repository.delete_detached_requests_before(before)
        await repository.delete_refunded_persons_before(before)
        return orders

    async def clear_old_login_ips(self, session: AsyncSession, runtime: Runtime) -> int:
        """Forget last-login addresses past ``privacy.last_login_ip_retention_days``; every one
        when the policy does not keep them (left from a time it did)."""
        privacy = runtime.policy.privacy
        repository = PrivacyRepository(session)
        if not privacy.store_last_login_ip:
            return await repository.clear_login_ips(None)
        days = privacy.last_login_ip_retention_days or 0
        return await repository.clear_login_ips(utcnow() - timedelta(days=days))

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    async def _record_done(
        session: AsyncSession, account: Account, kind: PrivacyRequestKind, outcome: str
    ) -> PrivacyRequest:
        """A request burrow answered at once: received, due and completed now."""
        now = utcnow()
        return await PrivacyRepository(session).add_request(
            PrivacyRequest(
                account_id=account.id,
                kind=kind,
                status=PrivacyRequestStatus.done,
                received_at=now,
                due_at=now,
                completed_at=now,
                outcome=outcome,
            )
        )


privacy = PrivacyService()
