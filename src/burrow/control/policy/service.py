"""Loading and checking the policy file.

``check_text`` reports every problem at once: each section is validated on its own (so a typo
in one section does not hide a contradiction elsewhere), then the rules between the sections
that parsed run (``schemas.cross_check``). ``format_problems`` is the one formatter that
``burrow policy check`` and ``burrow serve`` share, so both print the same lines.
"""

from __future__ import annotations

import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from burrow.control.errors import BurrowError
from burrow.control.policy.schemas import (
    PlanSection,
    Policy,
    PolicyParts,
    PolicyProblem,
    cross_check,
)

__all__ = [
    "PolicyInvalid",
    "PolicyProblem",
    "check_file",
    "check_text",
    "format_problems",
    "load_policy",
    "summary",
]


class PolicyInvalid(BurrowError):
    status = 500
    title = "Invalid policy"
    type_slug = "policy-invalid"

    def __init__(self, path: Path, problems: list[PolicyProblem]) -> None:
        super().__init__(f"{path}: " + "; ".join(str(problem) for problem in problems))
        self.path = path
        self.problems = problems


def format_problems(path: Path | str, problems: list[PolicyProblem]) -> list[str]:
    """One line per problem: ``FILE: where: the rule it breaks``."""
    return [f"{path}: {problem}" for problem in problems]


def _unwrap(annotation: Any) -> Any:
    """The type inside ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            others = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(others) != 1:
                return annotation
            annotation = others[0]
        else:
            return annotation


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The section model that holds the setting at ``loc`` (for listing its known keys)."""
    current: Any = Policy
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _message(err: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    """The rule a pydantic error stands for, in the policy file's words."""
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    found = err.get("input")
    scalar = isinstance(found, str | int | float | bool) and not isinstance(found, dict)
    got = f" (found {_shown(found)})" if scalar else ""
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = f" (known: {', '.join(model.model_fields)})" if model else ""
        return f"is not a known setting{known}"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "currency":
        return f'must be a three-letter ISO 4217 code such as "USD"{got}'
    simple = {
        "greater_than_equal": "must be at least {ge}",
        "less_than_equal": "must be at most {le}",
        "greater_than": "must be more than {gt}",
        "less_than": "must be less than {lt}",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a table",
        "model_type": "must be a table",
        "model_attributes_type": "must be a table",
    }
    if kind.startswith("date"):
        return f"must be a date such as 2026-11-01, without a time of day{got}"
    if kind in simple:
        return simple[kind].format(**ctx) + got
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} entries"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if kind == "literal_error":
        return f"must be one of: {ctx.get('expected')}{got}"
    return str(err["msg"]).removeprefix("Value error, ") + got


def _problems_of(exc: ValidationError, prefix: tuple[int | str, ...]) -> list[PolicyProblem]:
    problems = []
    for err in exc.errors():
        # A bad dict key is reported at the key; pydantic adds a "[key]" marker after it.
        loc = prefix + tuple(part for part in err["loc"] if part != "[key]")
        location = ".".join(str(part) for part in loc) or "(file)"
        problems.append(PolicyProblem(location, _message(err, loc)))
    return problems


def _section_adapter(name: str) -> TypeAdapter[Any]:
    field = Policy.model_fields[name]
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    return TypeAdapter(annotation)


_ADAPTERS = {name: _section_adapter(name) for name in Policy.model_fields}
_PLAN = TypeAdapter(PlanSection)


def check_data(raw: dict[str, Any]) -> tuple[Policy | None, list[PolicyProblem]]:
    """Validate parsed TOML: every section, then the rules between them.

    The rules that involve a section with errors of its own run once those are fixed (a
    broken plan's rules once that plan is fixed); everything else is reported in one go.
    """
    problems: list[PolicyProblem] = []
    parsed: dict[str, Any] = {}
    plan_codes: list[str] | None = None
    for name, field in Policy.model_fields.items():
        if name not in raw:
            if field.is_required():
                problems.append(
                    PolicyProblem(name, f"the [{name}] section is required but missing")
                )
            else:
                parsed[name] = field.get_default(call_default_factory=True)
            continue
        if name == "plans" and isinstance(raw[name], dict) and raw[name]:
            # Plan by plan, so that one broken plan does not hide the rules of the others.
            plans = {}
            for code, entry in raw[name].items():
                try:
                    plans[code] = _PLAN.validate_python(entry)
                except ValidationError as exc:
                    problems += _problems_of(exc, (name, code))
            parsed[name] = plans
            plan_codes = list(raw[name])
            continue
        try:
            parsed[name] = _ADAPTERS[name].validate_python(raw[name])
        except ValidationError as exc:
            problems += _problems_of(exc, (name,))
    for name in raw:
        if name not in Policy.model_fields:
            problems.append(
                PolicyProblem(
                    name, f"is not a known section (known: {', '.join(Policy.model_fields)})"
                )
            )
    problems += cross_check(PolicyParts(**parsed, plan_codes=plan_codes))
    if problems:
        return None, problems
    try:
        return Policy.model_validate(raw), []
    except ValidationError as exc:  # not expected: the sections and their rules all passed
        return None, _problems_of(exc, ())


def check_text(text: str) -> tuple[Policy | None, list[PolicyProblem]]:
    # A policy is a few tables deep; thousands of nested arrays exhaust the parsers' stacks.
    too_deep = PolicyProblem("(file)", "nested too deeply to be a policy; flatten it")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [PolicyProblem("(file)", f"not valid TOML: {exc}")]
    except RecursionError:
        return None, [too_deep]
    try:
        return check_data(raw)
    except RecursionError:
        return None, [too_deep]


def check_file(path: Path) -> tuple[Policy | None, list[PolicyProblem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [PolicyProblem("(file)", f"cannot read: {exc.strerror or exc}")]
    except UnicodeDecodeError:
        return None, [PolicyProblem("(file)", "cannot read: not UTF-8 text")]
    return check_text(text)


def load_policy(path: Path) -> Policy:
    policy, problems = check_file(path)
    if policy is None:
        raise PolicyInvalid(path, problems)
    return policy


def summary(policy: Policy) -> str:
    """One line that says what a valid policy decides."""
    privacy = policy.privacy
    parts = [policy.provider.name]
    if privacy.mode == "strict":
        parts.append("strict privacy (no connection records)")
    else:
        parts.append(
            f"metered privacy (connection records kept "
            f"{privacy.connection_record_retention_days} days)"
        )
    network = policy.network
    if network.nat == "deterministic":
        parts.append(
            f"deterministic NAT ({network.nat_devices_per_egress_ip} blocks of "
            f"{network.nat_ports_per_device} ports per address, address history kept "
            f"{privacy.address_history_retention_days} days)"
        )
    else:
        parts.append("random NAT (no complaint can be traced)")
    parts.append(f"{len(policy.plans)} plan{'s' if len(policy.plans) != 1 else ''}")
    trial = policy.trial
    if trial is not None and trial.enabled:
        parts.append(f"{trial.days}-day trial on {trial.plan}")
    else:
        parts.append("no trial")
    refunds = policy.refunds
    parts.append(f"refunds within {refunds.window_days} days" if refunds else "no refunds")
    if policy.age.attestation_required:
        parts.append(f"age {policy.age.minimum_age}+ attested")
    parts.append(f"terms {policy.terms.version} effective {policy.terms.effective_date}")
    return ", ".join(parts)
