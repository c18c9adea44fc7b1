"""The audit log (store/audit.py) on SQLite and PostgreSQL: events recorded with the store's
clock, listed oldest first with limit, since and user, fields cut to a bounded length."""

from __future__ import annotations

import pytest

from wgpy.mesh.server.store.audit import MAX_DETAIL, MAX_FIELD, MAX_LIST

from .conftest import Database
from .test_server_store import Clock, opened


async def test_events_are_recorded_and_listed(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        first = await store.audit.record(
            "register", result="ok", method="authkey", user="alice", node_id=3, source="10.0.0.1"
        )
        assert (first.at, first.event, first.result, first.method) == (
            clock.now,
            "register",
            "ok",
            "authkey",
        )
        assert (first.user, first.node_id, first.source, first.detail) == (
            "alice",
            3,
            "10.0.0.1",
            None,
        )
        clock.now += 10
        await store.audit.record(
            "login", result="refused", method="token", source="10.0.0.2", detail="expired"
        )
        clock.now += 10
        third = await store.audit.record("register", result="ok", user="bob")

        events = await store.audit.list()
        assert [e.event for e in events] == ["register", "login", "register"]  # oldest first
        assert [e.id for e in await store.audit.list(limit=2)] == [events[1].id, third.id]
        assert [e.user for e in await store.audit.list(user="alice")] == ["alice"]
        assert [e.id for e in await store.audit.list(since=clock.now - 10)] == [
            events[1].id,
            third.id,
        ]
        assert await store.audit.list(user="alice", since=clock.now - 10) == []
        assert await store.audit.list(limit=0) == []
        assert third.to_json()["at"] == "2027-01-15T08:00:20.000Z"
        assert third.to_json()["node"] is None


async def test_fields_are_cut_and_an_event_needs_a_name(backend: str, database: Database) -> None:
    async with opened(database) as store:
        long = await store.audit.record(
            "x" * 1000, result="refused", user="u" * 1000, detail="d" * 10_000
        )
        assert len(long.event) == MAX_FIELD and long.event.endswith("\u2026")
        assert long.user is not None and len(long.user) == MAX_FIELD
        assert long.detail is not None and len(long.detail) == MAX_DETAIL
        with pytest.raises(ValueError, match="needs an event name and a result"):
            await store.audit.record("", result="ok")
        assert len(await store.audit.list(limit=MAX_LIST + 5)) == 1
