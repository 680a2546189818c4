"""What every CLI command shares: one clear line on error, a non-zero exit, no traceback."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.service import CliOperator
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.errors import BurrowError
from burrow.control.policy.service import PolicyProblem, format_problems
from burrow.control.runtime import Runtime
from burrow.control.startup import DatabaseNotReady, check_database, explain_database_error

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

# Exit codes: 1 for a refused request, 2 for usage (Typer's own), 3 for setup problems,
# 4 for a fault of burrow itself (reported in one line; BURROW_DEBUG=1 shows the traceback).
EXIT_REFUSED = 1
EXIT_SETUP = 3
EXIT_BUG = 4

PROJECT_ROOT = Path(__file__).resolve().parents[3]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def operator() -> CliOperator:
    """Who runs the command, for the admin audit trail: the operating system's user name."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        name = "unknown"
    return CliOperator(name)


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        fail(f"BURROW_{where.upper()}: {first['msg'].removeprefix('Value error, ')}", EXIT_SETUP)


def refuse_policy(path: Path, problems: list[PolicyProblem], consequence: str) -> NoReturn:
    """One line for one problem; a longer list is printed first, as `burrow policy check` does."""
    if len(problems) == 1:
        fail(f"{format_problems(path, problems)[0]}; {consequence}", EXIT_SETUP)
    for line in format_problems(path, problems):
        typer.echo(line, err=True)
    fail(f"the policy file is invalid; {consequence}", EXIT_SETUP)


def explain(exc: BaseException, settings: Settings | None = None) -> tuple[str, int]:
    """One line and an exit code for anything a command can fail with."""
    if isinstance(exc, BurrowError):
        return exc.message, EXIT_REFUSED
    if isinstance(exc, RecursionError):
        return "the input nests too deeply to be read; flatten it", EXIT_SETUP
    url = settings.database_url if settings is not None else ""
    described = explain_database_error(url, exc)
    if described is not None:
        return described, EXIT_SETUP
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", EXIT_SETUP
    return (
        f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
        "(a fault in burrow: run again with BURROW_DEBUG=1 for the details, and report it)",
        EXIT_BUG,
    )


def fail_with(exc: BaseException, settings: Settings | None = None) -> NoReturn:
    if os.environ.get("BURROW_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    message, code = explain(exc, settings)
    fail(message, code)


def run(coro: Coroutine[Any, Any, T], settings: Settings | None = None) -> T:
    """Run a coroutine, turning every failure into one line and an exit code."""
    try:
        return asyncio.run(coro)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        fail_with(exc, settings or settings_or_none())


def settings_or_none() -> Settings | None:
    try:
        return Settings()
    except ValidationError:
        return None


def expected_revisions() -> frozenset[str] | None:
    """The migration heads this burrow's schema is built by (None outside a source checkout)."""
    if not ALEMBIC_INI.exists():
        return None
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_heads())


def require_database(settings: Settings, *, schema: bool = True) -> None:
    """Stop with one line unless the database is reachable, writable and (``schema``) migrated."""
    expected = expected_revisions() if schema else None
    try:
        asyncio.run(check_database(settings.database_url, expected=expected))
    except DatabaseNotReady as exc:
        fail(str(exc), EXIT_SETUP)


async def with_session(
    work: Callable[[AsyncSession, Runtime], Awaitable[T]], settings: Settings | None = None
) -> T:
    """Build a runtime, run ``work`` in one unit of work, commit, close."""
    settings = settings or load_settings()
    await check_database(settings.database_url, expected=expected_revisions())
    runtime = Runtime.build(settings)
    try:
        async with unit_of_work(runtime.sessionmaker) as session:
            return await work(session, runtime)
    finally:
        await runtime.close()
