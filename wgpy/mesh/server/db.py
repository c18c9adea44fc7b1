"""SQLite (aiosqlite) and PostgreSQL (asyncpg) behind one small interface.

Queries are written once, with ``?`` placeholders (PostgreSQL gets ``$1``, ``$2``, ... in
their place): every value travels as a parameter, never inside the SQL text. Work happens in
:meth:`Database.transaction`; a unique-constraint violation raises :class:`IntegrityConflict`
so callers can retry or report it. A transaction whose task is cancelled (aiohttp cancels the
handler of a client that hung up) at any of its awaits commits all of its writes or none, and
leaves the connection ready for the next one (tests/mesh/test_db_cancel.py); on SQLite, a
ROLLBACK that fails with the transaction still open closes the connection, and the next
transaction opens a new one.

Change notification: a transaction records which nodes it changed (and whether the policy
did) with :meth:`Tx.changed`. When it commits, the database's ``on_change`` callback runs in
this process; on PostgreSQL the transaction also sends ``NOTIFY changes`` with the same
content before it commits, so every replica listening on the channel (this one too) hears of it
once the data is visible. A replica whose listening connection drops reconnects and reloads
all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import asyncpg

from wgpy.log import get_logger

from . import statedir

CHANNEL = "changes"
DATABASE_FILE = "wgpy.db"  # in the state directory
MAX_NOTIFIED_IDS = 500  # more than this and the notification says "reload everything"
MAX_PAYLOAD = 7000
Row = Mapping[str, Any]
T = TypeVar("T")


class IntegrityConflict(Exception):
    """A unique (or other integrity) constraint refused a write."""


class DatabaseUnavailable(Exception):
    """The database cannot be opened or reached; the message says which and why."""


@dataclass(frozen=True)
class Change:
    """What a committed transaction changed: some nodes, the policy, or (``everything``)
    anything (a replica that may have missed notifications reloads all)."""

    nodes: frozenset[int] = frozenset()
    policy: bool = False
    everything: bool = False

    def __bool__(self) -> bool:
        return bool(self.nodes) or self.policy or self.everything

    def __or__(self, other: Change) -> Change:
        return Change(
            self.nodes | other.nodes,
            self.policy or other.policy,
            self.everything or other.everything,
        )

    def to_payload(self, replica: str) -> str:
        """The NOTIFY payload (PostgreSQL allows under 8000 bytes)."""
        everything = json.dumps({"r": replica, "all": True})
        if self.everything or len(self.nodes) > MAX_NOTIFIED_IDS:
            return everything
        payload = json.dumps({"r": replica, "n": sorted(self.nodes), "p": self.policy})
        return payload if len(payload) < MAX_PAYLOAD else everything

    @classmethod
    def from_payload(cls, payload: str) -> tuple[str, Change]:
        data = json.loads(payload)
        if data.get("all"):
            return str(data["r"]), cls(everything=True)
        return str(data["r"]), cls(frozenset(int(i) for i in data["n"]), bool(data["p"]))


class Tx(ABC):
    """One transaction's connection."""

    def __init__(self) -> None:
        self.change = Change()

    def changed(self, nodes: Iterable[int] = (), *, policy: bool = False) -> None:
        self.change = self.change | Change(frozenset(nodes), policy)

    @abstractmethod
    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement; the number of rows it touched."""

    @abstractmethod
    async def fetch(self, sql: str, *args: object) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: object) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else cast(Any, row)[0]  # both row types index by position


Setup = Callable[["Database"], Awaitable[object]]


class Database(ABC):
    dialect: str

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.on_change: Callable[[Change], None] | None = None
        self.log = get_logger(component="db", replica=replica)

    @abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def listen(self) -> None:  # noqa: B027 - only PostgreSQL has something to do
        """Start hearing other replicas' changes (PostgreSQL); nothing to do for SQLite."""

    def _committed(self, change: Change) -> None:
        if change and self.on_change is not None:
            self.on_change(change)


# ----------------------------------------------------------------------------------------
# SQLite


class _SqliteTx(Tx):
    # One round trip to aiosqlite's thread per statement (each costs far more than the
    # statement itself); the cursor is left to the garbage collector.
    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__()
        self.conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        try:
            cursor = await self.conn.execute(sql, args)
        except sqlite3.IntegrityError as e:
            raise IntegrityConflict(str(e)) from None
        return cursor.rowcount

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        try:
            rows = await self.conn.execute_fetchall(sql, args)  # sqlite3.Row: by column name
        except sqlite3.IntegrityError as e:
            raise IntegrityConflict(str(e)) from None
        return cast(list[Row], list(rows))


_BUSY_TIMEOUT = 10.0  # seconds a statement waits for another connection's lock
_LOCKED_RETRY = 0.05  # seconds between attempts to set up a connection a lock refused


async def _sqlite_connect(path: Path) -> aiosqlite.Connection:
    """A connection with the busy timeout, in WAL mode. Switching to WAL (and reading the
    WAL index while another process checkpoints on closing) can fail at once with "database
    is locked", without the busy handler: that is retried until the busy timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _BUSY_TIMEOUT
    while True:
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT)
        conn.row_factory = sqlite3.Row
        try:
            for pragma in (
                f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}",
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=NORMAL",
                "PRAGMA foreign_keys=ON",
            ):
                await conn.execute(pragma)
            return conn
        except BaseException as e:
            await conn.close()
            locked = isinstance(e, sqlite3.OperationalError) and "locked" in str(e)
            if not locked or loop.time() >= deadline:
                raise
        await asyncio.sleep(_LOCKED_RETRY)


class SqliteDatabase(Database):
    """One connection in WAL mode; transactions take turns (``BEGIN IMMEDIATE``)."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, replica: str, path: Path) -> None:
        super().__init__(replica)
        self._conn: aiosqlite.Connection | None = conn
        self._path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, replica: str, setup: Setup | None = None) -> SqliteDatabase:
        """Open (or create) the database in WAL mode and run ``setup`` (the migrations) on
        it, while holding the opener's lock (statedir.py): processes that open one file
        together take turns, and each waits at most ``_BUSY_TIMEOUT`` seconds."""
        try:
            statedir.secure(path.parent, path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)  # mode, before sqlite
            os.close(fd)
            async with statedir.opening(path, _BUSY_TIMEOUT):
                db = cls(await _sqlite_connect(path), replica, path)
                try:
                    if setup is not None:
                        await setup(db)
                except BaseException as e:
                    # aiosqlite's worker thread is not a daemon: a connection left open would
                    # keep the process from exiting.
                    await db.close()
                    if isinstance(e, sqlite3.Error):
                        raise DatabaseUnavailable(f"cannot open the database {path}: {e}") from None
                    raise
        except statedir.StateDirError as e:
            raise DatabaseUnavailable(str(e)) from None
        except (OSError, sqlite3.Error) as e:
            message = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise DatabaseUnavailable(f"cannot open the database {path}: {message}") from None
        return db

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        # aiohttp cancels a handler whose client hung up, at whatever it awaits. A statement
        # runs to its end in aiosqlite's thread even when its caller is cancelled, so the
        # connection's state is known only once BEGIN, COMMIT and ROLLBACK have finished:
        # they run to the end (and the cancellation is raised after), and the lock passes
        # on only with the connection outside any transaction (or closed, see _rollback).
        async with self._lock:
            conn = await to_the_end(self._connection())
            try:
                await to_the_end(conn.execute("BEGIN IMMEDIATE"))
            except BaseException:
                await to_the_end(self._rollback())  # BEGIN may have run all the same
                raise
            tx = _SqliteTx(conn)
            try:
                yield tx
            except BaseException:
                await to_the_end(self._rollback())
                raise
            # A request cancelled now (its client left) must not lose the news of what it
            # committed: the commit and the announcement finish regardless.
            await to_the_end(self._commit(conn, tx.change))

    async def _connection(self) -> aiosqlite.Connection:
        """The connection; a new one (same file, same pragmas) if a failed rollback closed
        the last one."""
        if self._conn is None:
            self._conn = await _sqlite_connect(self._path)
            self.log.info("opened the database again", path=str(self._path))
        return self._conn

    async def _commit(self, conn: aiosqlite.Connection, change: Change) -> None:
        try:
            await conn.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        self._committed(change)

    async def _rollback(self) -> None:
        """Roll back whatever is open (statements queued before this one finish first).

        A ROLLBACK that fails and leaves the transaction open would leave it open for every
        later one ("cannot start a transaction within a transaction"): the connection is
        closed instead (SQLite rolls back what it had not committed) and the next
        transaction opens a new one."""
        if self._conn is None:
            return
        try:
            await self._conn.execute("ROLLBACK")
        except Exception as e:
            if not self._in_transaction():
                if isinstance(e, sqlite3.OperationalError):
                    return  # "no transaction is active": BEGIN failed or never ran
                raise
            self.log.error("rolling back failed; closing the connection", error=str(e))
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    def _in_transaction(self) -> bool:
        try:
            return self._conn is not None and self._conn.in_transaction
        except (ValueError, sqlite3.Error):  # the connection is gone: nothing to roll back
            return False

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


# ----------------------------------------------------------------------------------------
# PostgreSQL


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``, ... (no query has a literal ``?``)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class _PostgresTx(Tx):
    def __init__(self, conn: Any) -> None:
        super().__init__()
        self.conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        try:
            status: str = await self.conn.execute(_numbered(sql), *args)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityConflict(str(e)) from None
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        try:
            rows: list[Row] = await self.conn.fetch(_numbered(sql), *args)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityConflict(str(e)) from None
        return rows


class PostgresDatabase(Database):
    """An asyncpg pool, and one more connection that LISTENs on ``changes``."""

    dialect = "postgresql"
    RECONNECT_DELAY = 1.0

    def __init__(self, pool: Any, dsn: str, replica: str) -> None:
        super().__init__(replica)
        self._pool = pool
        self._dsn = dsn
        self._listener: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    async def open(cls, dsn: str, replica: str, *, pool_size: int = 10) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            raise DatabaseUnavailable(
                f"cannot connect to the PostgreSQL database: {_describe(e)}"
            ) from None
        return cls(pool, dsn, replica)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._pool.acquire() as conn, conn.transaction():
            tx = _PostgresTx(conn)
            yield tx
            if tx.change:
                await conn.execute(
                    "SELECT pg_notify($1, $2)", CHANNEL, tx.change.to_payload(self.replica)
                )
        self._committed(tx.change)

    async def listen(self) -> None:
        try:
            await self._connect_listener()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            raise DatabaseUnavailable(
                f"cannot listen for changes on the PostgreSQL database: {_describe(e)}"
            ) from None

    async def _connect_listener(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=10)
        conn.add_termination_listener(self._listener_lost)
        await conn.add_listener(CHANNEL, self._notified)
        self._listener = conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            _, change = Change.from_payload(payload)
        except (ValueError, KeyError, TypeError):
            self.log.error("unreadable change notification", length=len(payload))
            change = Change(everything=True)
        # This replica's own changes come back too: usually within the 50 ms in which the
        # hub gathers changes, so they cost nothing more; and a change whose request was
        # cancelled between COMMIT and the local announcement is not lost.
        self._committed(change)

    def _listener_lost(self, _conn: Any) -> None:
        if not self._closing and self._listen_task is None:
            self._listen_task = asyncio.get_running_loop().create_task(self._relisten())

    async def _relisten(self) -> None:
        try:
            while not self._closing:
                self.log.error("lost the notification connection; reconnecting")
                await asyncio.sleep(self.RECONNECT_DELAY)
                try:
                    await self._connect_listener()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    continue
                self._committed(Change(everything=True))  # what was missed meanwhile
                return
        finally:
            self._listen_task = None

    async def close(self) -> None:
        self._closing = True
        if self._listen_task is not None:
            self._listen_task.cancel()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
        await self._pool.close()


async def to_the_end(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile; the cancellation
    is raised once ``work`` is done (its own error, if it failed, is chained to it)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled() and task.exception() is not None:
            raise asyncio.CancelledError() from task.exception()
        raise asyncio.CancelledError()
    return task.result()


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


async def open_database(
    *,
    state_dir: Path | None,
    database_url: str | None,
    replica: str,
    setup: Setup | None = None,
) -> Database:
    """The database, after ``setup`` (the migrations) ran on it. SQLite: one process at a
    time opens and sets up the file; PostgreSQL: ``setup`` takes its own lock."""
    if database_url:
        db: Database = await PostgresDatabase.open(database_url, replica)
        if setup is not None:
            try:
                await setup(db)
            except BaseException:
                await db.close()
                raise
        return db
    if state_dir is None:
        raise DatabaseUnavailable("give a state directory or a database URL")
    return await SqliteDatabase.open(state_dir / DATABASE_FILE, replica, setup)


def placeholders(values: Sequence[object]) -> str:
    """``?, ?, ?`` for an ``IN (...)`` list of ``values``."""
    return ", ".join("?" * len(values))
