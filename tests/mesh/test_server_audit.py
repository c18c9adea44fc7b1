"""The audit log: the store (store/audit.py) on SQLite and PostgreSQL (events recorded with
the store's clock, listed oldest first with limit, since and user, fields cut to a bounded
length); the events a real server records for registrations, logins, sign-ins and admin
actions, refused ones too, never with a secret; `GET /api/v1/audit` and `wgpy admin audit`."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest

from wgpy.mesh.server import MeshServer, ServerConfig
from wgpy.mesh.server.login import Passwords
from wgpy.mesh.server.models import iso
from wgpy.mesh.server.signin import Next, SignIn
from wgpy.mesh.server.store.audit import MAX_DETAIL, MAX_FIELD, MAX_LIST

from .conftest import Database, new_public_key, register, running
from .test_server_machines import wgpy
from .test_server_store import Clock, opened

FAST_HASH = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


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
        assert await store.audit.prune(retention=15) == 1  # the first, 20 s old
        assert [e.event for e in await store.audit.list()] == ["login", "register"]
        assert await store.audit.prune() == 0
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


def events_of(reply: dict[str, Any], event: str | None = None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = reply["events"]
    return [e for e in events if event is None or e["event"] == event]


async def test_registrations_logins_and_admin_actions_are_recorded(config: ServerConfig) -> None:
    async with running(config) as r:
        admin = r.admin
        await admin.user("alice")
        key = await admin.auth_key("alice")
        node = await register(admin, key, "laptop")
        # the used key again, and a well-formed key the server never made: refused
        await admin.using(None).error(
            "POST",
            "/register",
            {"auth_key": key, "public_key": new_public_key(), "hostname": "x"},
            status=403,
        )
        forged = "wgpy_auth_0123456789abcdef_" + "A" * 43
        await admin.using(None).error(
            "POST",
            "/register",
            {"auth_key": forged, "public_key": new_public_key(), "hostname": "y"},
            status=401,
        )
        new_key = new_public_key()
        await node.client.call("POST", "/login", {"public_key": new_key, "hostname": "laptop"})
        await admin.using("wgpy_node_0123456789abcdef_" + "B" * 43).error(
            "POST", "/login", {"public_key": new_key, "hostname": "laptop"}, status=401
        )
        await admin.call("POST", f"/nodes/{node.id}/expire", {})
        other = await register(admin, await admin.auth_key("alice"), "other")
        await other.client.call("POST", "/logout", {})
        await admin.error("DELETE", "/nodes/999", status=404)
        await admin.using("wgpy_api_0123456789abcdef_" + "C" * 43).error(
            "GET", "/nodes", status=401
        )
        await asyncio.sleep(0.01)
        before_bob = iso(time.time())  # milliseconds: between the last event and the next
        await asyncio.sleep(0.01)
        await admin.call("POST", "/users", {"name": "bob"})

        reply = await admin.call("GET", "/audit")
        summary = [(e["event"], e["result"], e["method"], e["user"]) for e in events_of(reply)]
        assert summary == [
            ("users.create", "ok", "apikey", "alice"),
            ("preauthkeys.create", "ok", "apikey", "alice"),
            ("register", "ok", "authkey", "alice"),
            ("register", "refused", "authkey", None),
            ("register", "refused", "authkey", None),
            ("login", "ok", "token", "alice"),
            ("login", "refused", "token", None),
            ("nodes.expire", "ok", "apikey", None),
            ("preauthkeys.create", "ok", "apikey", "alice"),
            ("register", "ok", "authkey", "alice"),
            ("logout", "ok", "token", "alice"),
            ("nodes.delete", "failed", "apikey", None),
            ("admin", "refused", "apikey", None),
            ("users.create", "ok", "apikey", "bob"),
        ]
        events = events_of(reply)
        assert all(e["source"] == "127.0.0.1" for e in events)
        assert events[2]["node"] == node.id and "hostname laptop" in events[2]["detail"]
        assert f"auth key {key.split('_')[2]}" in events[3]["detail"]
        assert events[5]["detail"] == f"new key {new_key}"
        assert events[7]["node"] == node.id and events[11]["node"] == 999
        assert events[10]["node"] == other.id
        assert "GET /api/v1/nodes" in events[12]["detail"]
        # no secret anywhere: not the auth key, not the node token, not the API key
        text = json.dumps(reply)
        for secret in (key, node.token, other.token, admin.token, forged):
            assert secret is not None and secret.split("_", 3)[3] not in text
        # the filters, and listing is not itself an event
        assert [e["event"] for e in events_of(await admin.call("GET", "/audit?user=bob"))] == [
            "users.create"
        ]
        assert len(events_of(await admin.call("GET", "/audit?limit=2"))) == 2
        assert len(events_of(await admin.call("GET", f"/audit?since={before_bob}"))) == 1
        later = time.time() + 60
        assert events_of(await admin.call("GET", f"/audit?since={later}")) == []
        for query, message in [
            ("limit=0", '"limit" must be a number of events from 1 to 10000'),
            ("since=yesterday", '"since" must be an ISO 8601 time'),
            ("who=x", 'unknown query parameter "who"'),
            ("user=NOT%20A%20NAME", '"user"'),
        ]:
            assert message in await admin.error("GET", f"/audit?{query}", status=400)
        await admin.using(None).error("GET", "/audit", status=401)
        assert len(events_of(await admin.call("GET", "/audit"))) == len(events)


async def test_sign_ins_are_recorded_without_what_was_typed(
    backend: str, database: Database
) -> None:
    async with opened(database) as store:
        await store.users.create("carol")
        signin = SignIn(store, passwords=Passwords(**FAST_HASH))
        await signin.set_password("carol", "correct horse battery")
        wrong = await signin.check_password("carol", "not the password", "192.0.2.7")
        assert wrong.next is Next.FAILED
        typo = await signin.check_password("correct horse battery", "x", "192.0.2.7")
        assert typo.next is Next.FAILED
        right = await signin.check_password(" Carol ", "correct horse battery", "192.0.2.8")
        assert right.next is Next.ENROL
        enrolment = await signin.begin_enrolment("carol")
        assert enrolment is not None
        code = pyotp.TOTP(enrolment.secret).at(store.clock())
        assert (await signin.check_totp("carol", code, "192.0.2.8")).next is Next.SIGNED_IN
        assert (await signin.check_totp("carol", code, "192.0.2.8")).next is Next.FAILED
        events = await store.audit.list()
        assert [(e.event, e.method, e.result, e.user, e.source) for e in events] == [
            ("signin", "password", "refused", "carol", "192.0.2.7"),
            ("signin", "password", "refused", None, "192.0.2.7"),  # a name nobody has
            ("signin", "password", "ok", "carol", "192.0.2.8"),
            ("signin", "totp", "ok", "carol", "192.0.2.8"),
            ("signin", "totp", "refused", "carol", "192.0.2.8"),
        ]
        text = repr(events)
        for secret in ("correct horse", "not the password", code, enrolment.secret):
            assert secret not in text


def test_admin_audit_command(tmp_path: Path) -> None:
    """`wgpy admin audit` against a real server: the table, --user, --since, --json."""
    config = ServerConfig(
        host="127.0.0.1", port=0, state_dir=tmp_path / "server", shutdown_timeout=1.0
    )

    async def main() -> None:
        server = MeshServer(config)
        await server.start()
        try:
            _, api_key = await server.store.api_keys.create(None)
            admin = ("admin", "--server", server.url, "--api-key", str(api_key))
            call = asyncio.to_thread
            assert (await call(wgpy, *admin, "users", "create", "dave")).status == 0
            assert (await call(wgpy, *admin, "users", "create", "erin")).status == 0
            r = await call(wgpy, *admin, "audit")
            assert r.status == 0, r.err
            lines = r.out.splitlines()
            assert lines[0].split() == [
                "TIME", "EVENT", "RESULT", "METHOD", "USER", "NODE", "SOURCE", "DETAIL"
            ]  # fmt: skip
            assert [line.split()[1:5] for line in lines[1:]] == [
                ["users.create", "ok", "apikey", "dave"],
                ["users.create", "ok", "apikey", "erin"],
            ]
            r = await call(wgpy, *admin, "audit", "--user", "erin", "--json")
            assert [e["user"] for e in json.loads(r.out)] == ["erin"]
            r = await call(wgpy, *admin, "audit", "--since", "1h", "--json")
            assert len(json.loads(r.out)) == 2
            r = await call(wgpy, *admin, "audit", "--since", "2100-01-01T00:00:00Z", "--json")
            assert json.loads(r.out) == []
            r = await call(wgpy, *admin, "audit", "--since", "soon")
            assert r.status != 0 and "neither a time" in r.err
        finally:
            await server.stop()

    asyncio.run(main())
