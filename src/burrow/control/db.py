"""The durable store: engine, sessions, and the unit of work around each request.

Services never commit. ``unit_of_work`` commits or rolls back; callbacks
registered with ``after_commit`` (waking node long polls, sending email) run
only after a successful commit and are dropped on rollback.

Concurrency, the same guarantees on both databases:

- A *writing* unit of work (the default: every POST/PUT/PATCH/DELETE, every task and CLI
  command) is serialised with every other writer. PostgreSQL runs it at READ COMMITTED and
  code that counts or decides takes a row lock first (``lock_row``). SQLite has no row locks,
  so a writing unit starts with ``BEGIN IMMEDIATE``: it holds the database's one write lock
  from its first statement to its commit, and what it reads cannot change under it. The
  driver's own transaction handling (which reads outside any transaction and begins only at
  the first INSERT) is switched off for that; SQLAlchemy's documented recipe for pysqlite and
  aiosqlite.
- A *reading* unit (``writes=False``: GET pages and API reads, the node long poll) takes no
  lock while it only reads; WAL lets it read beside a writer. If it writes after all (a
  session's last-use time), the write lock is taken right then, before that first write.
- Connections used outside ``unit_of_work`` (``engine.connect()``) behave like a reading
  unit. Never open a writing unit inside another one that holds SQLite's lock: the inner one
  would wait for the outer until the lock timeout.
- A lock that cannot be had within the busy timeout (SQLite) or a deadlock / serialisation
  failure (PostgreSQL) becomes ``DatabaseBusy``: a 503 with Retry-After, never a 500.
- Decisions use compare-and-set (``compare_and_set``): the UPDATE's WHERE names the state
  the decision starts from, and the loser learns it lost from the row count.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, event, inspect, select, update
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from burrow.control.errors import Busy

log = logging.getLogger(__name__)
_Q = TypeVar("_Q", bound=Select[Any])

AfterCommit = Callable[[], Awaitable[None] | None]
_HOOKS = "burrow_after_commit"


# An execution option of a unit of work's connection: how SQLite begins its transaction.
_SQLITE_BEGIN = "burrow_sqlite_begin"
_IMMEDIATE, _ON_FIRST_WRITE = "immediate", "on_first_write"
# On the DBAPI connection: whether our BEGIN was sent in the current transaction.
_SQLITE_BEGUN = "burrow_sqlite_begun"
# A statement option: this read takes the write lock (``lock_row``), as a write would.
_TAKES_LOCK = "burrow_takes_lock"
_READS = ("SELECT", "PRAGMA", "EXPLAIN")
# SQLSTATEs of PostgreSQL that mean "retry later": serialization failure, deadlock, lock timeout.
_PG_BUSY = frozenset({"40001", "40P01", "55P03"})
BUSY_RETRY_AFTER_SECONDS = 2.0
# How long a unit of work waits for a lock (SQLite's write lock, a PostgreSQL row lock).
LOCK_TIMEOUT_SECONDS = 30.0


class DatabaseBusy(Busy):
    """The database lock this change needs could not be had in time."""

    def __init__(self) -> None:
        super().__init__(
            "We are handling too many changes at this moment to take yours; nothing was "
            "changed. Please try again in a few seconds.",
            retry_after=BUSY_RETRY_AFTER_SECONDS,
        )


def create_engine(url: str, *, lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> AsyncEngine:
    """The engine; a lock not had within ``lock_timeout_seconds`` ends in ``DatabaseBusy``."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": lock_timeout_seconds}
    else:
        kwargs["pool_pre_ping"] = True
        if parsed.get_driver_name() == "asyncpg":
            # A row lock waited for longer than this fails (55P03) instead of hanging.
            lock_ms = str(int(lock_timeout_seconds * 1000))
            kwargs["connect_args"] = {"server_settings": {"lock_timeout": lock_ms}}
    engine = create_async_engine(url, **kwargs)
    if backend == "sqlite":
        busy_ms = int(lock_timeout_seconds * 1000)
        event.listen(engine.sync_engine, "connect", partial(_sqlite_connect, busy_ms=busy_ms))
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        event.listen(engine.sync_engine, "before_cursor_execute", _sqlite_before_execute)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any, *, busy_ms: int) -> None:
    # The driver's own BEGIN (deferred, and only before an INSERT/UPDATE/DELETE) is switched
    # off: ``_sqlite_begin`` sends ours. COMMIT and ROLLBACK still go through the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Only a writing unit of work asks for IMMEDIATE; any other connection (the audit's
    # scan, a session made outside ``unit_of_work``) takes the lock at its first write.
    if conn.get_execution_options().get(_SQLITE_BEGIN) == _IMMEDIATE:
        conn.info[_SQLITE_BEGUN] = True
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.info[_SQLITE_BEGUN] = False


def _sqlite_before_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    _parameters: Any,
    context: Any,
    _executemany: bool,
) -> None:
    """A reading unit's reads run on their own; its first write (or lock) begins IMMEDIATE.

    So a reading unit never holds a read snapshot that a writer could make stale, which
    SQLite would answer with SQLITE_BUSY at the write, whatever the busy timeout.
    """
    if conn.info.get(_SQLITE_BEGUN, True):
        return
    takes_lock = context is not None and context.execution_options.get(_TAKES_LOCK, False)
    if takes_lock or not statement.lstrip().upper().startswith(_READS):
        conn.info[_SQLITE_BEGUN] = True
        cursor.execute("BEGIN IMMEDIATE")


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says a lock could not be had (worth a retry), on either database."""
    if isinstance(exc, sqlalchemy_exc.TimeoutError):
        return True  # no pooled connection came free in time
    # The BEGIN IMMEDIATE of a reading unit's first write is sent from an event hook, so its
    # failure arrives as the driver's own exception, not wrapped by SQLAlchemy.
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in _PG_BUSY:
        return True
    text = str(orig).lower()
    return isinstance(orig, sqlite3.OperationalError) and (
        "database is locked" in text or "database table is locked" in text
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run ``callback`` once the surrounding unit of work has committed."""
    session.info.setdefault(_HOOKS, []).append(callback)


def reading(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for work that only reads outside a unit of work (``burrow audit``).

    On SQLite it takes no write lock, so it can run while the request that started it holds
    one (the admin page's audit on demand) instead of waiting for that request to end.
    """
    return engine.execution_options(**{_SQLITE_BEGIN: _ON_FIRST_WRITE})


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession], *, writes: bool = True
) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on any exception.

    ``writes=False`` for a unit that mostly reads (see the module docstring); it may still
    write, and is then serialised from its first write on.
    """
    options = {_SQLITE_BEGIN: _IMMEDIATE if writes else _ON_FIRST_WRITE}
    async with sessionmaker(execution_options=options) as session:
        try:
            yield session
            await session.commit()
        except BaseException as exc:
            await session.rollback()
            session.info.pop(_HOOKS, None)
            if is_busy(exc):
                log.warning("database.busy: %s", type(exc).__name__)
                raise DatabaseBusy() from exc
            raise
        hooks: list[AfterCommit] = session.info.pop(_HOOKS, [])
        for hook in hooks:
            try:
                result = hook()
                if result is not None:
                    await result
            except Exception:
                log.exception("after-commit callback failed")


@asynccontextmanager
async def savepoint(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """One action inside a unit of work that may be refused without ending the unit.

    On an exception the changes made inside (and the ``after_commit`` callbacks registered
    inside) are undone, the exception goes on, and the unit of work stays usable: what the
    request did before (a session's last-use time) still commits. Rows changed inside are
    expired by the rollback, so a page shows frozen copies rather than those rows.
    """
    hooks: list[AfterCommit] = session.info.setdefault(_HOOKS, [])
    kept = len(hooks)
    try:
        async with session.begin_nested():
            yield session
    except BaseException:
        del hooks[kept:]
        raise


def locked(query: _Q) -> _Q:
    """``query`` reading rows to decide on: they stay locked until the unit of work ends.

    PostgreSQL: ``FOR UPDATE`` (a row deleted meanwhile is simply not found). SQLite: the
    database's write lock. The rows are read afresh even if the session holds them already.
    """
    options = {_TAKES_LOCK: True, "populate_existing": True}
    return query.with_for_update().execution_options(**options)


async def lock_row(session: AsyncSession, entity: type[Any], row_id: int) -> None:
    """Serialise with every other unit of work that locks the same row, until this one ends.

    Call it before reading what a limit counts or a decision checks, inside the same unit of
    work. PostgreSQL: ``SELECT ... FOR UPDATE`` of the row. SQLite: the database's write lock
    (a writing unit holds it already; a reading unit takes it here).
    """
    key = inspect(entity).primary_key[0]
    await session.execute(locked(select(key).where(key == row_id)))


async def compare_and_set(
    session: AsyncSession,
    row: Any,
    expected: ColumnElement[bool],
    values: dict[str, Any],
) -> bool:
    """``UPDATE ... SET values WHERE <row's key> AND expected``; True when this unit made it.

    On False another unit of work decided first: ``row`` is reloaded and shows what it
    decided. Call it before changing ``row`` in the session (a reload drops such changes).
    """
    mapper = inspect(type(row))
    key = mapper.primary_key[0]
    row_id = mapper.primary_key_from_instance(row)[0]
    statement = (
        update(type(row))
        .where(key == row_id, expected)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    await session.refresh(row)
    return int(getattr(result, "rowcount", 0) or 0) == 1
