"""Timed work of the audit trail: none.

The audit trail is kept for as long as the operator keeps the database; nothing in it is a
customer's activity, so no retention rule of the policy applies to it.
"""

from __future__ import annotations
