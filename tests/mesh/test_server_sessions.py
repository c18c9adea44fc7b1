"""Web sessions and form tokens (store/sessions.py, migration 7) on SQLite and PostgreSQL:
only hashes stored, expiry, sign-in replaces the session, form tokens single use and bound to
their session and action, a bounded number kept per session."""

from __future__ import annotations

import pytest

from wgpy.mesh.server.errors import NotFound
from wgpy.mesh.server.store.sessions import FORMS_PER_SESSION, hash_secret

from .conftest import Database
from .test_server_store import Clock, opened


async def test_a_session_is_kept_as_a_hash_and_expires(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        session, secret = await store.sessions.create(60.0)
        assert session.id == hash_secret(secret) and not session.signed_in
        assert session.expires_at == clock.now + 60.0
        assert await store.sessions.get(secret) == session
        async with store.db.transaction() as tx:
            rows = await tx.fetch("SELECT * FROM web_sessions")
        assert secret not in repr([dict(r) for r in rows])
        for bad in (None, "", "x" * 43 + "=", secret[:-1], "../" + secret[3:], secret + "A"):
            assert await store.sessions.get(bad) is None
        clock.now += 60.0
        assert await store.sessions.get(secret) is None
        async with store.db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM web_sessions") == 0


async def test_sign_in_replaces_the_session(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await store.users.create("alice")
        anonymous, old_secret = await store.sessions.create(60.0)
        assert await store.sessions.set_pending(anonymous.id, "alice")
        assert await store.sessions.set_data(anonymous.id, {"request": "abc"})
        token = await store.sessions.issue_form_token(anonymous, "/x")
        session, secret = await store.sessions.sign_in(anonymous.id, "alice", "password", 3600.0)
        assert secret != old_secret and session.id == hash_secret(secret)
        assert (session.user, session.method, session.pending_user) == ("alice", "password", None)
        assert session.signed_in and session.data == {"request": "abc"}
        assert session.expires_at == clock.now + 3600.0 and session.signed_in_at == clock.now
        # the cookie from before the sign-in is worth nothing, nor are its form tokens
        assert await store.sessions.get(old_secret) is None
        assert not await store.sessions.take_form_token(anonymous, "/x", token)
        with pytest.raises(NotFound, match='there is no user "nobody"'):
            await store.sessions.sign_in(session.id, "nobody", "password", 3600.0)
        assert await store.sessions.get(secret) == session  # a refused sign-in changed nothing
        # a deleted user's sessions go with them
        await store.users.delete("alice")
        assert await store.sessions.get(secret) is None


async def test_sign_out(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        a, secret_a = await store.sessions.sign_in(None, "alice", "password", 60.0)
        _, secret_b = await store.sessions.sign_in(None, "alice", "oidc", 60.0)
        await store.sessions.delete(a.id)
        assert await store.sessions.get(secret_a) is None
        assert await store.sessions.get(secret_b) is not None
        assert await store.sessions.delete_user_sessions("alice") == 1
        assert await store.sessions.get(secret_b) is None


async def test_form_tokens_are_single_use_and_bound(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        session, _ = await store.sessions.create(60.0)
        other, _ = await store.sessions.create(60.0)
        token = await store.sessions.issue_form_token(session, "/login/abc")
        async with store.db.transaction() as tx:
            stored = await tx.fetchval("SELECT token FROM web_form_tokens")
        assert stored == hash_secret(token)
        assert not await store.sessions.take_form_token(other, "/login/abc", token)
        assert not await store.sessions.take_form_token(session, "/logout", token)
        assert not await store.sessions.take_form_token(session, "/login/abc", "forged")
        assert await store.sessions.take_form_token(session, "/login/abc", token)
        assert not await store.sessions.take_form_token(session, "/login/abc", token)  # reused
        # a token dies with its session
        late = await store.sessions.issue_form_token(session, "/login/abc")
        clock.now += 60.0
        assert not await store.sessions.take_form_token(session, "/login/abc", late)


async def test_only_the_newest_form_tokens_are_kept(backend: str, database: Database) -> None:
    async with opened(database) as store:
        session, _ = await store.sessions.create(60.0)
        tokens = [
            await store.sessions.issue_form_token(session, "/f")
            for _ in range(FORMS_PER_SESSION + 5)
        ]
        async with store.db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM web_form_tokens") == FORMS_PER_SESSION
        assert not await store.sessions.take_form_token(session, "/f", tokens[4])
        assert await store.sessions.take_form_token(session, "/f", tokens[5])
        assert await store.sessions.take_form_token(session, "/f", tokens[-1])


async def test_expired_sessions_are_swept_when_one_is_made(
    backend: str, database: Database
) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        old, _ = await store.sessions.create(10.0)
        await store.sessions.issue_form_token(old, "/f")
        clock.now += 10.0
        await store.sessions.create(10.0)
        async with store.db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM web_sessions") == 1
            assert await tx.fetchval("SELECT COUNT(*) FROM web_form_tokens") == 0
        assert not await store.sessions.set_pending(old.id, "alice")
