"""Loading and checking the policy file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from burrow.control.errors import BurrowError
from burrow.control.policy.schemas import Policy


class PolicyInvalid(BurrowError):
    status = 500
    title = "Invalid policy"
    type_slug = "policy-invalid"

    def __init__(self, path: Path, problems: list[PolicyProblem]) -> None:
        lines = "; ".join(f"{p.location}: {p.message}" for p in problems)
        super().__init__(f"{path}: {lines}")
        self.path = path
        self.problems = problems


@dataclass(frozen=True)
class PolicyProblem:
    location: str
    message: str


def check_text(text: str) -> tuple[Policy | None, list[PolicyProblem]]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [PolicyProblem("(file)", f"not valid TOML: {exc}")]
    try:
        return Policy.model_validate(raw), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            location = ".".join(str(part) for part in err["loc"]) or "(file)"
            message = err["msg"].removeprefix("Value error, ")
            problems.append(PolicyProblem(location, message))
        return None, problems


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = PolicyProblem("(file)", f"cannot read: {exc.strerror}")
        raise PolicyInvalid(path, [problem]) from exc
    policy, problems = check_text(text)
    if policy is None:
        raise PolicyInvalid(path, problems)
    return policy
