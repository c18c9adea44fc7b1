"""store/oidc.py on SQLite and PostgreSQL: sign-ins in progress (taken once, by the browser
that started them, until they expire), users made at an account's first sign-in, refused
name collisions, and groups that change the policy's meaning (its version moves on)."""

from __future__ import annotations

import pytest

from wgpy.mesh.server.db import Change
from wgpy.mesh.server.errors import Conflict

from .conftest import Database
from .test_server_store import Clock, opened

ISSUER = "http://127.0.0.1:5556"


async def test_a_sign_in_is_taken_once_by_its_browser(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await store.oidc.begin("state-1", "browser-1", "req-1", "nonce-1", "verifier-1", 600)
        # Another browser, or an unknown state: nothing, and the sign-in stays.
        assert await store.oidc.take("state-1", "browser-2") is None
        assert await store.oidc.take("state-2", "browser-1") is None
        assert await store.oidc.pending() == 1
        pending = await store.oidc.take("state-1", "browser-1")
        assert pending is not None
        assert (pending.request_id, pending.nonce, pending.verifier) == (
            "req-1",
            "nonce-1",
            "verifier-1",
        )
        assert "nonce-1" not in repr(pending) and "verifier-1" not in repr(pending)
        assert await store.oidc.take("state-1", "browser-1") is None  # replayed
        assert await store.oidc.pending() == 0
        await store.oidc.begin("state-3", "browser-1", "req-1", "n", "v", 600)
        async with store.db.transaction() as tx:
            rows = await tx.fetch("SELECT state_hash, browser_hash FROM oidc_logins")
        assert "state-3" not in str([dict(r) for r in rows])  # hashes only


async def test_an_expired_sign_in_is_gone(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await store.oidc.begin("s1", "b", "r", "n", "v", 600)
        clock.now += 601
        assert await store.oidc.take("s1", "b") is None
        await store.oidc.begin("s2", "b", "r", "n", "v", 600)
        await store.oidc.begin("s3", "b", "r", "n", "v", 600)
        clock.now += 601
        await store.oidc.begin("s4", "b", "r", "n", "v", 600)  # sweeps the others
        assert await store.oidc.pending() == 1


async def test_users_are_made_once_and_found_by_subject(backend: str, database: Database) -> None:
    async with opened(database) as store:
        alice, made = await store.oidc.sign_in(ISSUER, "sub-a", "alice", ["eng"])
        assert made and alice.name == "alice" and not alice.password
        again, made = await store.oidc.sign_in(ISSUER, "sub-a", "alice2", ["eng", "ops"])
        assert not made and again.id == alice.id and again.name == "alice"  # name kept
        assert await store.oidc.groups("alice") == ("eng", "ops")
        await store.users.create("bob")
        alice_now, bob = await store.users.all()
        assert (alice_now.name, alice_now.oidc, alice_now.groups) == ("alice", True, ("eng", "ops"))
        assert (bob.name, bob.oidc, bob.groups) == ("bob", False, ())


async def test_a_taken_name_is_refused_not_merged(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("bob")  # made by an admin (a password user, say)
        with pytest.raises(Conflict, match='there is already a user "bob"'):
            await store.oidc.sign_in(ISSUER, "sub-b", "bob", [])
        await store.oidc.sign_in(ISSUER, "sub-a", "alice", [])
        # Another account (another subject, or another issuer) that maps to the same name.
        with pytest.raises(Conflict, match='there is already a user "alice"'):
            await store.oidc.sign_in(ISSUER, "sub-other", "alice", [])
        with pytest.raises(Conflict):
            await store.oidc.sign_in("https://other.example", "sub-a", "alice", [])
        assert sorted(u.name for u in await store.users.all()) == ["alice", "bob"]


async def test_groups_move_the_policy_on(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.oidc.sign_in(ISSUER, "sub-a", "alice", ["eng"])
        await store.users.create("bob")
        doc = {"acls": [{"action": "accept", "src": ["group:eng"], "dst": ["user:bob"]}]}
        record = await store.policy.set(doc)
        _, policy = await store.policy.current()
        assert policy.in_group("alice", "group:eng")
        seen: list[Change] = []
        store.db.on_change = seen.append
        await store.oidc.sign_in(ISSUER, "sub-a", "alice", ["eng"])  # same groups: no news
        assert seen == []
        await store.oidc.sign_in(ISSUER, "sub-a", "alice", ["ops"])
        assert seen == [Change(policy=True)]
        new_record, policy = await store.policy.current()
        assert new_record.version == record.version + 1
        assert not policy.in_group("alice", "group:eng") and policy.in_group("alice", "group:ops")
        assert new_record.document == record.document


async def test_a_users_groups_go_with_the_user(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.oidc.sign_in(ISSUER, "sub-a", "alice", ["eng"])
        await store.users.delete("alice")
        assert await store.oidc.groups("alice") == ()
        async with store.db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM user_groups") == 0
