"""Transactions cancelled at every point they wait (db.py), on SQLite and PostgreSQL.

aiohttp cancels a request's handler when its client hangs up, wherever the handler waits: on
the lock that orders SQLite's transactions, on ``BEGIN``, on a statement, on ``COMMIT`` or
``ROLLBACK``, on a pool connection. Each test here runs a transaction in a task and cancels
it at its first, second, third ... wait (a *wait* is a future the task sleeps on, read from
``Task._fut_waiter``), then checks that the next transactions run and that the cancelled one
left all of its writes or none. And on SQLite, a ROLLBACK that fails leaves no transaction
open for the next ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from wgpy.mesh.server.db import SqliteDatabase
from wgpy.mesh.server.store import Store, open_store

from .conftest import Database
from .support import captured_logs

MAX_WAITS = 60  # more than any transaction here waits for
STEP_LIMIT = 20_000  # loop iterations spent looking for one wait


@contextlib.asynccontextmanager
async def opened(database: Database) -> AsyncIterator[Store]:
    store = await open_store(
        state_dir=database.state_dir, database_url=database.database_url, replica="r1"
    )
    try:
        yield store
    finally:
        await store.close()


async def cancel_at_wait(task: asyncio.Task[Any], n: int) -> bool:
    """Run the loop until ``task`` sleeps on its ``n``-th distinct future (0 is the first),
    then cancel it there. False if the task finished first."""
    seen: list[object] = []
    for _ in range(STEP_LIMIT):
        if task.done():
            return False
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is not None and (not seen or seen[-1] is not waiter):
            seen.append(waiter)
            if len(seen) > n:
                task.cancel()
                return True
        await asyncio.sleep(0)
    raise AssertionError(f"the task neither finished nor waited {n + 1} times")


async def sweep(
    make: Callable[[int], Awaitable[Any]],
    check: Callable[[int], Awaitable[None]],
) -> int:
    """Cancel ``make(i)`` at its wait i, for i = 0, 1, ... until it finishes uncancelled;
    ``check(i)`` after each. The number of waits it was cancelled at."""
    for i in range(MAX_WAITS):
        task = asyncio.ensure_future(make(i))
        cancelled = await cancel_at_wait(task, i)
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5.0)
        await asyncio.wait_for(check(i), 5.0)
        if not cancelled:
            return i
    raise AssertionError(f"the transaction still waited after {MAX_WAITS} waits")


async def names(store: Store, *wanted: str) -> set[str]:
    async with store.db.transaction() as tx:
        rows = await tx.fetch(
            f"SELECT name FROM users WHERE name IN ({', '.join('?' * len(wanted))})", *wanted
        )
    return {r["name"] for r in rows}


async def two_users(store: Store, i: int) -> None:
    async with store.db.transaction() as tx:
        for name in (f"a{i}", f"b{i}"):
            await tx.execute("INSERT INTO users (name, created_at) VALUES (?, 0)", name)
        await tx.fetchval("SELECT COUNT(*) FROM users")
        tx.changed(policy=True)


async def test_a_transaction_cancelled_at_any_wait_keeps_all_or_nothing(
    backend: str, database: Database
) -> None:
    async with opened(database) as store:
        announced: list[object] = []
        store.db.on_change = announced.append

        async def check(i: int) -> None:
            assert await names(store, f"a{i}", f"b{i}") in (set(), {f"a{i}", f"b{i}"})
            # and the database takes writes: the transaction did not stay open
            await store.users.create(f"after{i}")

        waits = await sweep(lambda i: two_users(store, i), check)
        assert waits >= 4  # at least BEGIN, two statements and COMMIT
        assert await names(store, f"a{waits}", f"b{waits}") == {f"a{waits}", f"b{waits}"}
        assert len(await store.users.all()) >= waits + 2


async def test_a_failing_transaction_cancelled_while_it_rolls_back(
    backend: str, database: Database
) -> None:
    async with opened(database) as store:

        async def fails(i: int) -> None:
            async with store.db.transaction() as tx:
                await tx.execute("INSERT INTO users (name, created_at) VALUES (?, 0)", f"x{i}")
                raise ValueError("the handler failed")

        async def check(i: int) -> None:
            assert await names(store, f"x{i}") == set()
            await store.users.create(f"after{i}")

        assert await sweep(fails, check) >= 3


async def test_a_transaction_cancelled_while_waiting_for_its_turn(
    backend: str, database: Database
) -> None:
    """Three transactions at once; the middle one is cancelled at each of its waits (SQLite:
    among them the lock handed on by the first); the others finish."""
    async with opened(database) as store:
        others: list[asyncio.Future[Any]] = []

        def three(i: int) -> Awaitable[None]:
            others[:] = [asyncio.ensure_future(two_users(store, 1000 + i))]
            middle = asyncio.ensure_future(two_users(store, i))
            others.append(asyncio.ensure_future(two_users(store, 2000 + i)))
            return middle

        async def check(i: int) -> None:
            await asyncio.gather(*others)
            assert await names(store, f"a{i}", f"b{i}") in (set(), {f"a{i}", f"b{i}"})
            for j in (1000 + i, 2000 + i):
                assert await names(store, f"a{j}", f"b{j}") == {f"a{j}", f"b{j}"}

        assert await sweep(three, check) >= 4


class FailingConnection:
    """SQLite's connection, except that the statements named in ``fail`` fail once each,
    without running (a real ROLLBACK failure is hard to provoke): only the failure is fake."""

    def __init__(self, conn: Any, fail: set[str]) -> None:
        self.real = conn
        self.fail = fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def execute(self, sql: str, *args: Any) -> Any:
        if sql in self.fail:
            self.fail.discard(sql)
            raise sqlite3.OperationalError(f"{sql} failed (injected by the test)")
        return await self.real.execute(sql, *args)


@pytest.mark.parametrize("fail", [{"ROLLBACK"}, {"COMMIT", "ROLLBACK"}])
async def test_a_rollback_that_fails_leaves_no_transaction_open(
    database: Database, fail: set[str]
) -> None:
    """SQLite: a ROLLBACK that fails (after the handler failed, or after COMMIT failed)
    leaves its transaction open on the connection; the next transaction still starts clean
    and sees none of the failed one's writes."""
    with captured_logs() as logs:
        async with opened(database) as store:
            assert isinstance(store.db, SqliteDatabase)
            store.db._conn = FailingConnection(store.db._conn, set(fail))  # type: ignore[assignment]
            with pytest.raises(sqlite3.OperationalError, match="ROLLBACK failed"):
                async with store.db.transaction() as tx:
                    await tx.execute("INSERT INTO users (name, created_at) VALUES ('half', 0)")
                    if "COMMIT" not in fail:
                        raise ValueError("the handler failed")
            await store.users.create("after")
            assert await names(store, "half", "after") == {"after"}
    events = [e["event"] for e in logs if e["log_level"] in ("error", "info")]
    assert "rolling back failed; closing the connection" in events
    assert "opened the database again" in events
    async with opened(database) as store:  # and on disk
        assert await names(store, "half", "after") == {"after"}
