"""What a control-plane process does once at start: check that the database can serve it
(before anything says "serving"), then, after migrations, sync the policy's plans and terms."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)

from burrow.control.config import PLACEHOLDER_SECRET
from burrow.control.db import create_engine, unit_of_work
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
from burrow.control.terms.service import terms as terms_service

log = logging.getLogger(__name__)


async def prepare(runtime: Runtime) -> None:
    if runtime.settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET:
        log.warning("settings.placeholder_secret_key")
    async with unit_of_work(runtime.sessionmaker) as session:
        await plan_service.sync_from_policy(session, runtime.policy)
        await terms_service.publish(session, runtime.policy)


# --- Is the database there, reachable, writable and migrated? --------------------------------

SUPPORTED_URLS = "sqlite+aiosqlite:///path/to/burrow.db or postgresql+asyncpg://user:pass@host/db"


class DatabaseNotReady(Exception):
    """The database cannot serve this process; the message says what the operator should do."""


def describe_url(url: str) -> str:
    """The URL as an operator may see it in a message: never the password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseNotReady(
            f"BURROW_DATABASE_URL is not a database URL; set it to {SUPPORTED_URLS}"
        ) from None
    if (parsed.get_backend_name(), parsed.get_driver_name()) not in (
        ("sqlite", "aiosqlite"),
        ("postgresql", "asyncpg"),
    ):
        raise DatabaseNotReady(
            f"BURROW_DATABASE_URL {describe_url(url)} names a database burrow does not speak; "
            f"set it to {SUPPORTED_URLS}"
        )
    return parsed


def _check_sqlite_path(parsed: URL) -> None:
    if not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    hint = "choose a writable place in BURROW_DATABASE_URL (or fix the permissions)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseNotReady(
            f"cannot make the directory of the SQLite database {path}: "
            f"{exc.strerror or exc}; {hint}"
        ) from None
    for target in (path, path.parent):
        if target.exists() and not os.access(target, os.W_OK):
            raise DatabaseNotReady(f"the SQLite database {path} is not writable; {hint}")
    if path.exists() and not path.is_file():
        raise DatabaseNotReady(f"the SQLite database {path} is not a file; {hint}")


def _class_names(exc: BaseException) -> set[str]:
    """The class names along an error's chain (SQLAlchemy wraps the driver's own error)."""
    names: set[str] = set()
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        names.add(type(seen).__name__)
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return names


def explain_database_error(url: str, exc: BaseException) -> str | None:
    """One line for an error that came from reaching the database, or None if it did not."""
    where = describe_url(url)
    sqlite = url.startswith("sqlite")
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if isinstance(exc, DatabaseNotReady):
        return str(exc)
    if url:
        try:
            _parse(url)
        except DatabaseNotReady as bad_url:
            return str(bad_url)  # whatever failed, a URL burrow cannot use came first
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return (
            f"BURROW_DATABASE_URL is not a database URL burrow speaks; set it to {SUPPORTED_URLS}"
        )
    if isinstance(exc, OperationalError | ProgrammingError):
        if "no such table" in first or ("relation" in first and "does not exist" in first):
            return "the database has no schema yet: run `burrow db upgrade` first"
        if sqlite and ("readonly" in first or "unable to open" in first):
            return (
                f"cannot write the SQLite database {where} ({first}); choose a writable "
                "place in BURROW_DATABASE_URL"
            )
    names = _class_names(exc)
    if names & {"InvalidPasswordError", "InvalidAuthorizationSpecificationError"}:
        return (
            f"the database at {where} refused the user or password ({first}); "
            "fix BURROW_DATABASE_URL"
        )
    if "InvalidCatalogNameError" in names:
        return f"{first} at {where}: create it (createdb) or fix BURROW_DATABASE_URL"
    if isinstance(exc, OSError | DBAPIError | asyncio.TimeoutError):
        reason = (exc.strerror if isinstance(exc, OSError) else None) or first
        if sqlite:
            return f"cannot use the SQLite database {where}: {reason}; check BURROW_DATABASE_URL"
        return (
            f"cannot reach the database at {where}: {reason}; start it or fix BURROW_DATABASE_URL"
        )
    return None


async def check_database(url: str, *, expected: frozenset[str] | None) -> None:
    """Raise ``DatabaseNotReady`` unless the database answers, can be written and, when
    ``expected`` is given, carries exactly those migration revisions (None: only be there)."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed)
    engine = create_engine(url)
    try:
        async with asyncio.timeout(15), engine.connect() as connection:
            # Alembic reads its own version table (an empty tuple when there is none).
            revisions = set(
                await connection.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_heads()
                )
            )
    except DatabaseNotReady:
        raise
    except (OSError, DBAPIError, ArgumentError, NoSuchModuleError, TimeoutError) as exc:
        raise DatabaseNotReady(explain_database_error(url, exc) or str(exc)) from None
    finally:
        await engine.dispose()
    if expected is None:
        return
    if not revisions:
        raise DatabaseNotReady("the database has no schema yet: run `burrow db upgrade` first")
    if revisions != expected:
        raise DatabaseNotReady(
            f"the database schema is at revision {', '.join(sorted(revisions))}, this burrow "
            f"needs {', '.join(sorted(expected))}: run `burrow db upgrade`"
        )
