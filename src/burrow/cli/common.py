"""What every CLI command shares: one clear line on error, a non-zero exit, no traceback."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.admin.service import CliOperator
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.errors import BurrowError
from burrow.control.runtime import Runtime

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

# Exit codes: 1 for a refused request, 2 for usage (Typer's own), 3 for setup problems.
EXIT_REFUSED = 1
EXIT_SETUP = 3


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


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning known failures into one line and an exit code."""
    try:
        return asyncio.run(coro)
    except BurrowError as exc:
        fail(exc.message)
    except (OperationalError, ProgrammingError) as exc:
        text = str(exc.orig) if exc.orig is not None else str(exc)
        if "no such table" in text or "does not exist" in text:
            fail("the database has no schema yet: run `burrow db upgrade` first", EXIT_SETUP)
        fail(f"database error: {text.splitlines()[0]}", EXIT_SETUP)
    except OSError as exc:
        fail(f"{exc.strerror or exc}", EXIT_SETUP)


async def with_session(
    work: Callable[[AsyncSession, Runtime], Awaitable[T]], settings: Settings | None = None
) -> T:
    """Build a runtime, run ``work`` in one unit of work, commit, close."""
    runtime = Runtime.build(settings or load_settings())
    try:
        async with unit_of_work(runtime.sessionmaker) as session:
            return await work(session, runtime)
    finally:
        await runtime.close()
