"""Subscriptions: trials, the current subscription, cancel and resume, admin grants, expiry.

An account has at most one current subscription: the newest that has not ended (trialing,
active or past_due). It gives VPN access while it is trialing or active and its period has not
ended (one the provider renews: until a day after, while the renewal is charged), or while it
is past_due within the policy's grace, and only while the account is active (the desired state
checks the account; ``models.gives_access_clause`` is the rule in SQL). A provider's events
(Stripe's) change it through the ``provider_*`` methods, ordered by the events' own times. Every
change that alters access tells the desired state, which moves the peers on every node.
"""

from __future__ import annotations

import calendar
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.service import Actor, admin_audit
from burrow.control.db import after_commit
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.errors import BurrowError, Conflict, Forbidden, InvalidInput, NotFound
from burrow.control.models import (
    Account,
    AccountStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
    access_until,
    utcnow,
)
from burrow.control.payments.providers import ProviderNotConfigured, ProviderUnavailable
from burrow.control.payments.registry import registry as payment_providers
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest
from burrow.control.subscriptions.repository import OPEN_STATUSES, SubscriptionRepository

log = logging.getLogger(__name__)


class TrialNotOffered(Forbidden):
    title = "No trial offered"
    type_slug = "trial-not-offered"

    def __init__(self) -> None:
        super().__init__(
            "This provider does not offer a free trial. Choose a plan from GET /api/v1/plans."
        )


class EmailNotVerified(Forbidden):
    title = "Email not verified"
    type_slug = "email-not-verified"

    def __init__(self) -> None:
        super().__init__(
            "Verify your email address before starting the trial: open the link we emailed you "
            "when you registered (you can ask for a new link from your account), then try again."
        )


class AccountNotActive(Forbidden):
    title = "Account not active"
    type_slug = "account-not-active"

    def __init__(self) -> None:
        super().__init__(
            "Your account is suspended or terminated, so no trial can start. "
            "Contact support to find out why."
        )


class TrialAlreadyUsed(Conflict):
    title = "Trial already used"
    type_slug = "trial-already-used"

    def __init__(self) -> None:
        super().__init__(
            "This email address has already had its free trial, and a trial is given once per "
            "address. Choose a plan from GET /api/v1/plans to keep using the VPN."
        )


class AlreadySubscribed(Conflict):
    title = "Already subscribed"
    type_slug = "already-subscribed"

    def __init__(self, until: datetime) -> None:
        super().__init__(
            f"You already have access until {_day(until)}; a trial is only for accounts "
            "without a subscription.",
            current_period_end=until.isoformat(),
        )


class NoSubscription(NotFound):
    title = "No subscription"
    type_slug = "no-subscription"

    def __init__(self) -> None:
        super().__init__(
            "You have no subscription yet. Start the free trial with "
            "POST /api/v1/subscriptions/trial, or choose a plan from GET /api/v1/plans."
        )


class SubscriptionEnded(Conflict):
    title = "Subscription ended"
    type_slug = "subscription-ended"

    def __init__(self, ended: datetime, action: str) -> None:
        super().__init__(
            f"Your subscription ended on {_day(ended)}, so it can no longer be {action}. "
            "Choose a plan from GET /api/v1/plans to subscribe again."
        )


class AccountNotFound(NotFound):
    title = "Unknown account"
    type_slug = "unknown-account"

    def __init__(self, account_id: int) -> None:
        super().__init__(f"There is no account with the id {account_id}.")


class AccountTerminated(Conflict):
    title = "Account terminated"
    type_slug = "account-terminated"

    def __init__(self, account_id: int) -> None:
        super().__init__(
            f"Account {account_id} is terminated; a terminated account cannot be given a period."
        )


class BillingUnreachable(BurrowError):
    status = 502
    title = "Card billing unreachable"
    type_slug = "billing-unreachable"

    def __init__(self, provider: str, action: str, state: str) -> None:
        super().__init__(
            f"Your subscription is billed by {provider.title()}, which we could not reach, so "
            f"it was not {action} and nothing changed (now: {state}). Try again in a few minutes; "
            "if it keeps failing, contact support."
        )


@dataclass(frozen=True)
class SubscriptionDetails:
    """A subscription with its plan, and a sentence for the customer when something changed."""

    subscription: Subscription
    plan: Plan
    message: str = ""


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def gives_access(subscription: Subscription, now: datetime | None = None) -> bool:
    """Trialing or active until the period end, past_due until its grace ends (the account
    is checked elsewhere). The same rule as ``models.gives_access_clause`` in SQL."""
    until = access_until(subscription)
    return until is not None and until > (now or utcnow())


def describe_next(subscription: Subscription, now: datetime | None = None) -> str:
    """What happens next to this subscription, in the customer's words."""
    now = now or utcnow()
    sub = subscription
    if sub.status == SubscriptionStatus.canceled:
        return f"Ended on {_day(sub.ended_at or sub.current_period_end)} because you cancelled"
    if sub.status == SubscriptionStatus.expired:
        return f"Expired on {_day(sub.ended_at or sub.current_period_end)}"
    end = _day(sub.current_period_end)
    if sub.status == SubscriptionStatus.past_due:
        grace = sub.grace_until or sub.current_period_end
        if grace <= now:
            return f"Payment failed; access ended on {_day(grace)}"
        return (
            f"Payment failed; access continues until {_day(grace)} and then ends unless "
            "the payment goes through"
        )
    if sub.current_period_end <= now and gives_access(sub, now):
        return f"Renewing: the payment for the period after {end} is being taken"
    if sub.current_period_end <= now:
        # The period is over and the expiry job has not run yet: access is already gone.
        if sub.cancel_at_period_end:
            return f"Ended on {end} because you cancelled"
        return f"Expired on {end}"
    if sub.status == SubscriptionStatus.trialing:
        if sub.cancel_at_period_end:
            return f"Trial ends on {end} because you cancelled"
        return f"Trial ends on {end}"
    if sub.cancel_at_period_end:
        return f"Ends on {end} because you cancelled"
    return f"Renews on {end}"


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months; the 31st becomes the last day of a shorter month."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _extend(moment: datetime, months: int | None, days: int | None) -> datetime:
    try:
        if months is not None:
            return add_months(moment, months)
        return moment + timedelta(days=days or 0)
    except (OverflowError, ValueError) as exc:
        raise InvalidInput("That period would end after the year 9999; grant less.") from exc


def _length(months: int | None, days: int | None) -> str:
    if months is not None:
        return f"{months} month" + ("s" if months != 1 else "")
    return f"{days} day" + ("s" if days != 1 else "")


def trial_email_key(email: str) -> str:
    """The form of an address that identifies its mailbox for the once-per-email trial rule.

    Case and a ``+tag`` in the local part do not make a new mailbox.
    """
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    return f"{local}@{domain}"


def _supersede(subscription: Subscription, now: datetime) -> None:
    # Replaced by a newer subscription (a grant ending a trial): it stops now.
    subscription.status = SubscriptionStatus.canceled
    subscription.cancel_at_period_end = False
    subscription.canceled_at = subscription.canceled_at or now
    subscription.ended_at = now


def _link(
    subscription: Subscription, provider: str | None, provider_subscription_id: str | None
) -> None:
    if provider and provider_subscription_id:
        subscription.provider = provider
        subscription.provider_subscription_id = provider_subscription_id


def _newer(subscription: Subscription, at: datetime) -> bool:
    """Note ``at`` as the provider's newest time unless an event newer than it was applied."""
    seen = subscription.provider_updated_at
    if seen is not None and at < seen:
        return False
    subscription.provider_updated_at = at
    return True


class SubscriptionService:
    # --- what other domains ask -------------------------------------------------------------

    async def current(self, session: AsyncSession, account_id: int) -> Subscription | None:
        """The account's current subscription: the newest that has not ended."""
        return await SubscriptionRepository(session).current(account_id)

    async def access_plan(self, session: AsyncSession, account_id: int) -> Plan | None:
        """The plan of the subscription that gives access now (trialing or active, period not
        ended), else None. The account's own status is not checked here."""
        subscription = await SubscriptionRepository(session).current(account_id)
        if subscription is None or not gives_access(subscription):
            return None
        return await plan_service.get(session, subscription.plan_id)

    # --- the customer's own subscription ----------------------------------------------------

    async def overview(self, session: AsyncSession, account_id: int) -> SubscriptionDetails:
        """The current subscription, or else the last one that ended (to say when it ended)."""
        repository = SubscriptionRepository(session)
        subscription = await repository.current(account_id) or await repository.latest(account_id)
        if subscription is None:
            raise NoSubscription()
        return await self._details(session, subscription)

    async def start_trial(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> SubscriptionDetails:
        trial = runtime.policy.trial
        if trial is None or not trial.enabled:
            raise TrialNotOffered()
        if account.status != AccountStatus.active:
            raise AccountNotActive()
        if account.email_verified_at is None:
            raise EmailNotVerified()
        repository = SubscriptionRepository(session)
        # The current subscription is read under the account's lock: a trial started at the
        # same moment as another (or as a paid period) sees it.
        await repository.lock_account(account.id)
        now = utcnow()
        current = await repository.current(account.id)
        if current is not None and gives_access(current, now):
            raise AlreadySubscribed(current.current_period_end)
        secret = runtime.settings.secret_key.get_secret_value()
        digest = keyed_digest(secret, trial_email_key(account.email))
        if await repository.trial_claimed(digest):
            raise TrialAlreadyUsed()
        plan = await plan_service.get_offered(session, trial.plan)
        try:
            await repository.add_trial_claim(digest)
        except IntegrityError as exc:
            # A concurrent request claimed it first; the unit of work rolls back.
            raise TrialAlreadyUsed() from exc
        if current is not None:
            _supersede(current, now)
        subscription = await repository.add(
            Subscription(
                account_id=account.id,
                plan_id=plan.id,
                status=SubscriptionStatus.trialing,
                current_period_start=now,
                current_period_end=now + timedelta(days=trial.days),
            )
        )
        await desired_state_service.refresh_account(session, runtime, account.id)
        end = _day(subscription.current_period_end)
        return SubscriptionDetails(
            subscription,
            plan,
            f"Your free trial of {plan.name} has started and ends on {end}. "
            "Add a device to connect.",
        )

    async def cancel(
        self, session: AsyncSession, runtime: Runtime, account_id: int
    ) -> SubscriptionDetails:
        """Cancel at the period end: access stays until then, and no renewal follows.

        A subscription the provider renews is cancelled there first (so the card is not
        charged again); if the provider cannot be reached, nothing changes here either.
        """
        subscription = await self._open_for_change(session, account_id, "cancelled")
        if subscription.cancel_at_period_end:
            until = _day(access_until(subscription) or subscription.current_period_end)
            message = f"Already cancelled. You keep access until {until}; then it ends."
        else:
            charged = await self._tell_provider(runtime, subscription, cancel=True)
            subscription.cancel_at_period_end = True
            subscription.canceled_at = utcnow()
            # Once cancelled, no renewal margin: access ends with the period (or the grace).
            until = _day(access_until(subscription) or subscription.current_period_end)
            what = "trial" if subscription.status == SubscriptionStatus.trialing else "subscription"
            message = (
                f"Cancelled. You keep access until {until}; then your {what} ends and is not "
                f"renewed{charged}. You can resume it until {until}."
            )
        await session.flush()
        return await self._details(session, subscription, message)

    async def resume(
        self, session: AsyncSession, runtime: Runtime, account_id: int
    ) -> SubscriptionDetails:
        """Undo a cancellation; allowed until the period end (and at the provider too)."""
        subscription = await self._open_for_change(session, account_id, "resumed")
        if not subscription.cancel_at_period_end:
            prefix = "Nothing to resume: your subscription is not cancelled."
        else:
            await self._tell_provider(runtime, subscription, cancel=False)
            subscription.cancel_at_period_end = False
            subscription.canceled_at = None
            prefix = "Resumed."
        await session.flush()
        message = f"{prefix} {describe_next(subscription)}."
        return await self._details(session, subscription, message)

    async def _tell_provider(
        self, runtime: Runtime, subscription: Subscription, *, cancel: bool
    ) -> str:
        """Set the provider's own cancel-at-period-end; returns words for the message."""
        gateway = payment_providers.renewals(subscription.provider, runtime.settings)
        if gateway is None or not subscription.provider_subscription_id:
            return ""
        provider = subscription.provider or ""
        action = "cancelled" if cancel else "resumed"
        # A fresh key per request: cancel, resume and cancel again are three real changes,
        # while the library's own retries of one request reuse its key.
        key = f"burrow-subscription-{subscription.id}-{action}-{uuid.uuid4().hex}"
        try:
            await gateway.set_cancel_at_period_end(
                subscription.provider_subscription_id, cancel, key
            )
        except (ProviderNotConfigured, ProviderUnavailable) as exc:
            log.warning("%s subscription of %s not %s: %s", provider, subscription.id, action, exc)
            raise BillingUnreachable(provider, action, describe_next(subscription)) from exc
        log.info("%s subscription of %s %s at its period end", provider, subscription.id, action)
        return ", and your card is not charged again" if cancel else ""

    # --- administrators ---------------------------------------------------------------------

    async def grant_by(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        account_id: int,
        plan_code: str,
        *,
        months: int | None = None,
        days: int | None = None,
        reason: str | None = None,
    ) -> SubscriptionDetails:
        """An operator's grant (the admin panel's "grant time"), with its audit-trail row."""
        details = await self.grant(
            session, runtime, account_id, plan_code, months=months, days=days
        )
        await admin_audit.record(
            session,
            actor,
            "subscription.grant",
            "account",
            account_id,
            reason,
            {
                "plan_code": plan_code,
                "months": months,
                "days": days,
                "subscription_id": details.subscription.id,
                "period_end": details.subscription.current_period_end,
            },
        )
        return details

    async def grant(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account_id: int,
        plan_code: str,
        *,
        months: int | None = None,
        days: int | None = None,
        provider: str | None = None,
        provider_subscription_id: str | None = None,
        until: datetime | None = None,
    ) -> SubscriptionDetails:
        """Give a paid period (an admin's grant, or a paid order's period).

        An active subscription on the same plan is extended from its period end, and so is an
        overdue one still in its grace (the late payment settles it: active again); anything
        else current (a trial, another plan) is ended and a new active subscription starts
        now. ``provider_subscription_id`` links the provider's recurring subscription, and
        ``until`` is the period end the provider itself counts (its invoice's), used instead of
        adding the length to the current end so a renewal the provider already reported is not
        counted twice.
        """
        if (months is None) == (days is None):
            raise InvalidInput("Give the length of the grant as either months or days.")
        repository = SubscriptionRepository(session)
        account = await repository.get_account(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        if account.status == AccountStatus.terminated:
            raise AccountTerminated(account_id)
        plan = await plan_service.get_offered(session, plan_code)
        now = utcnow()
        length = _length(months, days)
        current = await repository.current(account_id)
        if (
            current is not None
            and current.plan_id == plan.id
            and current.status in (SubscriptionStatus.active, SubscriptionStatus.past_due)
            and gives_access(current, now)
        ):
            current.current_period_end = (
                max(current.current_period_end, until)
                if until is not None
                else _extend(current.current_period_end, months, days)
            )
            current.status = SubscriptionStatus.active
            current.grace_until = None
            _link(current, provider, provider_subscription_id)
            await session.flush()
            subscription = current
            message = (
                f"Extended {plan.name} by {length}; the period now ends on "
                f"{_day(current.current_period_end)}."
            )
        else:
            end = until if until is not None and until > now else _extend(now, months, days)
            if current is not None:
                _supersede(current, now)
            subscription = await repository.add(
                Subscription(
                    account_id=account_id,
                    plan_id=plan.id,
                    status=SubscriptionStatus.active,
                    current_period_start=now,
                    current_period_end=end,
                    provider=provider if provider_subscription_id else None,
                    provider_subscription_id=provider_subscription_id,
                )
            )
            message = f"Granted {length} of {plan.name}, from now until {_day(end)}."
        await desired_state_service.refresh_account(session, runtime, account_id)
        log.info("admin granted %s of plan %s to account %s", length, plan.code, account_id)
        return SubscriptionDetails(subscription, plan, message)

    async def end_now(
        self, session: AsyncSession, runtime: Runtime, account_id: int
    ) -> Subscription | None:
        """End the account's current subscription at once (a refunded order) and remove its
        access; returns it, or None when nothing was current.

        A subscription the provider renews is ended there too once this commits, so the
        refunded customer is not charged again.
        """
        current = await SubscriptionRepository(session).current(account_id)
        if current is None:
            return None
        _supersede(current, utcnow())
        await session.flush()
        await desired_state_service.refresh_account(session, runtime, account_id)
        gateway = payment_providers.renewals(current.provider, runtime.settings)
        if gateway is not None and current.provider_subscription_id:
            remote, local, where = current.provider_subscription_id, current.id, current.provider

            async def end_at_provider() -> None:
                try:
                    await gateway.cancel_now(remote)
                except (ProviderNotConfigured, ProviderUnavailable) as exc:
                    # The money is already back; a person must stop the renewal by hand.
                    log.warning(
                        "subscription %s ended here but not at %s (%s); cancel %s in its dashboard",
                        local,
                        where,
                        exc,
                        remote,
                    )

            after_commit(session, end_at_provider)
        return current

    # --- a provider's recurring subscription (its events) ------------------------------------
    #
    # Each change carries the time of the provider object it comes from (``at``). An event
    # older than the newest one applied changes nothing, so a late delivery never undoes a
    # newer state.

    async def by_provider(
        self, session: AsyncSession, provider: str, provider_subscription_id: str
    ) -> Subscription | None:
        return await SubscriptionRepository(session).by_provider_id(
            provider, provider_subscription_id
        )

    def note_provider_time(self, subscription: Subscription, at: datetime) -> None:
        """A provider event that always applies (money received) still moves the clock, so
        an older event arriving after it changes nothing."""
        _newer(subscription, at)

    async def provider_payment_failed(
        self, session: AsyncSession, runtime: Runtime, subscription: Subscription, at: datetime
    ) -> bool:
        """A renewal payment failed: past_due, with access for the policy's grace from ``at``
        (no grace: access ends now). A second failure keeps the first one's grace."""
        sub = subscription
        if sub.status not in (SubscriptionStatus.active, SubscriptionStatus.past_due):
            return False
        if not _newer(sub, at):
            return False
        if sub.status == SubscriptionStatus.active:
            grace = runtime.policy.payment_methods.past_due_grace_days
            sub.status = SubscriptionStatus.past_due
            sub.grace_until = at + timedelta(days=grace)
            log.info("subscription %s past_due until %s", sub.id, sub.grace_until)
        await session.flush()
        await desired_state_service.refresh_account(session, runtime, sub.account_id)
        return True

    async def provider_updated(
        self,
        session: AsyncSession,
        runtime: Runtime,
        subscription: Subscription,
        at: datetime,
        *,
        cancel_at_period_end: bool,
        period_end: datetime | None,
        renewing: bool,
    ) -> bool:
        """Mirror the provider's subscription: its cancel-at-period-end and, while the
        provider counts it as paid up (``renewing``), its period end."""
        sub = subscription
        if sub.status not in OPEN_STATUSES or not _newer(sub, at):
            return False
        sub.cancel_at_period_end = cancel_at_period_end
        if cancel_at_period_end:
            sub.canceled_at = sub.canceled_at or at
        else:
            sub.canceled_at = None
        if renewing and period_end is not None:
            sub.current_period_end = period_end
            if sub.status == SubscriptionStatus.past_due:
                # Paid up at the provider after all (the invoice's own event records the money).
                sub.status = SubscriptionStatus.active
                sub.grace_until = None
        await session.flush()
        await desired_state_service.refresh_account(session, runtime, sub.account_id)
        return True

    async def provider_ended(
        self, session: AsyncSession, runtime: Runtime, subscription: Subscription, at: datetime
    ) -> bool:
        """The provider ended its subscription (cancelled, or unpaid after its retries): it
        ends here now and access goes. Final at the provider, so it applies whatever its age."""
        sub = subscription
        if sub.status not in OPEN_STATUSES:
            return False
        _newer(sub, at)
        sub.status = (
            SubscriptionStatus.canceled if sub.cancel_at_period_end else SubscriptionStatus.expired
        )
        sub.ended_at = utcnow()
        await session.flush()
        await desired_state_service.refresh_account(session, runtime, sub.account_id)
        return True

    # --- the scheduler ----------------------------------------------------------------------

    async def expire_due(
        self, session: AsyncSession, runtime: Runtime, *, now: datetime, limit: int
    ) -> int:
        """End up to ``limit`` subscriptions whose period ended by ``now``; returns how many."""
        due = await SubscriptionRepository(session).due(now, limit)
        for subscription in due:
            # Access ended at the period end (or a past_due one's grace end), whenever this
            # job got to it.
            subscription.ended_at = (
                subscription.grace_until or subscription.current_period_end
                if subscription.status == SubscriptionStatus.past_due
                else subscription.current_period_end
            )
            subscription.status = (
                SubscriptionStatus.canceled
                if subscription.cancel_at_period_end
                else SubscriptionStatus.expired
            )
        await session.flush()
        for account_id in sorted({subscription.account_id for subscription in due}):
            await desired_state_service.refresh_account(session, runtime, account_id)
        return len(due)

    # --- helpers ----------------------------------------------------------------------------

    async def _open_for_change(
        self, session: AsyncSession, account_id: int, action: str
    ) -> Subscription:
        repository = SubscriptionRepository(session)
        subscription = await repository.current(account_id)
        if subscription is None:
            latest = await repository.latest(account_id)
            if latest is None:
                raise NoSubscription()
            raise SubscriptionEnded(latest.ended_at or latest.current_period_end, action)
        until = access_until(subscription)
        if until is None or until <= utcnow():
            raise SubscriptionEnded(until or subscription.current_period_end, action)
        return subscription

    async def _details(
        self, session: AsyncSession, subscription: Subscription, message: str = ""
    ) -> SubscriptionDetails:
        plan = await plan_service.get(session, subscription.plan_id)
        assert plan is not None  # a foreign key; plans are never deleted
        return SubscriptionDetails(subscription, plan, message)


subscription = SubscriptionService()
