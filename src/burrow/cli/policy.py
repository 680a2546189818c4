"""``burrow policy``: check a policy file, and preview the terms it renders.

``burrow policy check FILE`` prints every problem, one line each (``FILE: where: rule``), in
the same words ``burrow serve`` uses when it refuses to start, and exits 1; a valid file
prints ``policy OK: ...`` and exits 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from burrow.cli.common import EXIT_REFUSED
from burrow.control.policy.dns import filter_lists
from burrow.control.policy.service import check_file, format_problems, summary
from burrow.control.terms.service import terms as terms_service

policy_app = typer.Typer(help="The policy file: check it, preview its terms.", no_args_is_help=True)

PolicyFile = Annotated[Path, typer.Argument(help="The policy file (TOML).")]


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def check(path: PolicyFile) -> None:
    """Validate a policy file; print every problem with where it is and the rule it breaks."""
    policy, problems = check_file(path)
    if policy is None:
        for line in format_problems(path, problems):
            typer.echo(line)
        count = len(problems)
        typer.echo(f"policy invalid: {count} problem{'s' if count != 1 else ''}", err=True)
        raise typer.Exit(EXIT_REFUSED)
    typer.echo(f"policy OK: {summary(policy)}")
    for entry in filter_lists.lists(policy.dns, path.parent):
        state = f"cannot be used: {entry.error}" if entry.error else f"{entry.count} names"
        typer.echo(
            f"dns filter {entry.name}: {state}; {entry.malformed} malformed lines skipped "
            f"(sha256 {entry.sha256[:12]})"
        )


@policy_app.command("terms")
def terms(
    path: PolicyFile,
    html: Annotated[bool, typer.Option("--html", help="HTML instead of Markdown.")] = False,
) -> None:
    """Print the terms of service that a policy file renders (what /terms will show)."""
    policy, problems = check_file(path)
    if policy is None:
        for line in format_problems(path, problems):
            typer.echo(line, err=True)
        raise typer.Exit(EXIT_REFUSED)
    typer.echo(
        terms_service.html(policy) if html else terms_service.render(policy).markdown, nl=False
    )
