"""Timed work of the affiliate program: commissions past their holding period become
payable, the program's rules are enforced (refund rate, inactivity), and, where the policy
enables it, payouts go out by themselves."""

from __future__ import annotations

from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.runtime import Runtime


async def release_held_commissions(runtime: Runtime) -> int:
    """Pending commissions past the holding period become payable."""
    if runtime.policy.affiliates is None or not runtime.policy.affiliates.enabled:
        return 0
    return await affiliate_service.release_due(runtime)


async def enforce_affiliate_rules(runtime: Runtime) -> dict[str, int]:
    """Suspend affiliates with a refund rate over the threshold; notify, then end, inactive
    ones."""
    return await affiliate_service.enforce(runtime)


async def scheduled_payouts(runtime: Runtime) -> int:
    """Send unfinished batches again and pay everyone due, when the policy says the
    scheduler pays out (otherwise an administrator starts each payout)."""
    program = runtime.policy.affiliates
    if program is None or not program.enabled or not program.scheduled_payouts:
        return 0
    batch = await affiliate_service.pay_out(runtime, None)
    return 0 if batch is None else 1


async def check_payout_batches(runtime: Runtime) -> int:
    """Batches not finished yet: sent again if PayPal's answer was lost, otherwise asked how
    their items ended (returned money goes back to the balance). Returns how many."""
    if runtime.policy.affiliates is None or not runtime.policy.affiliates.enabled:
        return 0
    return await affiliate_service.check_unfinished(runtime)
