"""Termination is offered only for the clauses of the terms that describe prohibited conduct."""

from __future__ import annotations

from burrow.control.policy.clauses import terms_clauses
from burrow.control.policy.schemas import TermsProse
from burrow.control.policy.service import check_file
from burrow.control.runtime import Runtime
from tests.conftest import ROOT

POLICIES = ROOT / "examples" / "policies"


def test_only_prohibited_conduct_is_a_clause(runtime: Runtime) -> None:
    clauses = terms_clauses(runtime.policy)
    assert "Prohibited activities" in clauses
    assert "Prohibited activities: distributing malware" in clauses
    for title in ("General", "Your rights", "Service quality", "Bonus services"):
        assert not [c for c in clauses if c == title or c.startswith(f"{title}:")], title


def test_unmarked_terms_fall_back_to_the_terms_as_a_whole(runtime: Runtime) -> None:
    terms = runtime.policy.terms.model_copy(
        update={"sections": [TermsProse(title="General", body="- be nice")]}
    )
    policy = runtime.policy.model_copy(update={"terms": terms})
    assert terms_clauses(policy) == [f"Terms of service, version {terms.version}"]


def test_the_example_policies_mark_their_conduct_sections_and_pass_the_check() -> None:
    for name, marked in (
        ("strict-no-logs.toml", "Prohibited activities"),
        ("metered.toml", "Policy for using our services"),
    ):
        policy, problems = check_file(POLICIES / name)
        assert policy is not None, problems
        assert [s.title for s in policy.terms.sections if s.prohibited_conduct] == [marked]
