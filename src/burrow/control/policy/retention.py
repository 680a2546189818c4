"""What is kept after an account is erased, and for how long, read from the policy alone.

A pure function of the policy, here so that both the published terms and the privacy center
(which re-exports it) say the same words without the terms importing the privacy domain.
"""

from __future__ import annotations

from burrow.control.policy.schemas import Policy


def retention_statement(policy: Policy) -> list[str]:
    """What is kept after an account is erased, and for how long, in plain sentences."""
    privacy = policy.privacy
    years = privacy.invoice_retention_years
    erased = [
        "your email address",
        "your password",
        "your two-factor secret",
        "your billing details",
        "your devices and their keys",
        "your sign-in sessions",
        "your consents and terms acceptances",
        "your requests to us",
    ]
    if privacy.store_last_login_ip:
        erased.append("the address of your last sign-in")
    if privacy.keeps_connection_records:
        erased.append("your connection records")
    if privacy.first_order_usage_counters:
        erased.append("your usage counters")
    statements = [
        "Deleted at once: " + ", ".join(erased[:-1]) + f" and {erased[-1]}. Your devices stop "
        "working on every server within seconds.",
        f"Kept for {years} years from the date of each order, because accounting law requires "
        "it: your orders and payments (amount, currency, date, payment method and the payment "
        "provider's reference), without your name, email address, billing address or card "
        "fingerprint. Refund decisions on those orders are kept with them, without the reason "
        "you gave. After that they are deleted.",
        f"Kept for {years} years: a record that your account was erased and when, which no "
        "longer names you.",
    ]
    if policy.network.nat == "deterministic" and privacy.mode == "metered":
        history = privacy.address_history_retention_days or 0
        statements.append(
            f"Kept for {history} days after each of your devices was removed, then deleted: "
            "which tunnel address it held and when, so that an abuse complaint about that time "
            "can still be traced to your account."
        )
    if policy.trial is not None:
        statements.append(
            "Kept: a keyed hash of your email address, so that the free trial cannot be taken "
            "again with the same address. It cannot be turned back into your address and is "
            "linked to nothing else."
        )
    if policy.refunds is not None and policy.refunds.one_per_person:
        statements.append(
            f"Kept for {years} years, only if you were given a refund: a keyed hash of your "
            "email address and of the card fingerprints of the refunded orders, so that the "
            "one-refund-per-person rule still applies to a new account. It cannot be turned "
            "back into your address or card and is linked to nothing else."
        )
    statements.append(
        "Actions our administrators took on your account (a suspension, for example) stay in "
        "our internal audit trail, which names the account by its number only."
    )
    statements.append(
        "Payment providers (a card processor, for example) keep their own records of your "
        "payments under their own terms; ask them to erase what they hold."
    )
    return statements
