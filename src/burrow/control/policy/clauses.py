"""The clauses of the operator's terms an account can be terminated for breaking."""

from __future__ import annotations

import re

from burrow.control.errors import InvalidInput
from burrow.control.policy.schemas import Policy

# The length of accounts.terminated_clause (admin.schemas.CLAUSE_MAX says the same to the API;
# not imported from there, because the schemas use the accounts domain's text types).
CLAUSE_MAX = 200
_BULLET = re.compile(r"^\s*[-*]\s+(.+?)\s*$")


class UnknownClause(InvalidInput):
    pass


def terms_clauses(policy: Policy) -> list[str]:
    """The clauses an account can be terminated for breaking, from the policy's own terms.

    Only the sections marked ``prohibited_conduct = true`` describe conduct an account can be
    terminated for; each is a clause, and so is each item of a list inside one ("Prohibited
    activities: spam or unsolicited bulk messaging"), so that the finding names the very rule.
    Sections such as "General" or "Your rights" are never offered. Terms with no section so
    marked have one clause: the terms as a whole.
    """
    clauses: list[str] = []
    for section in policy.terms.sections:
        if not section.prohibited_conduct:
            continue
        title = section.title.strip()
        clauses.append(title[:CLAUSE_MAX])
        for line in section.body.splitlines():
            match = _BULLET.match(line)
            if match:
                clauses.append(f"{title}: {match.group(1)}"[:CLAUSE_MAX])
    if not clauses:
        clauses.append(f"Terms of service, version {policy.terms.version}"[:CLAUSE_MAX])
    return list(dict.fromkeys(clauses))
