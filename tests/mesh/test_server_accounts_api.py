"""The admin API for people's passwords and TOTP against a real server on loopback, on
SQLite and PostgreSQL: POST /users with a password, POST /users/NAME/password,
POST /users/NAME/totp/reset; hostile bodies refused with a sentence and nothing changed."""

from __future__ import annotations

import json

from wgpy.mesh.server import ServerConfig, login
from wgpy.mesh.server.login import Passwords
from wgpy.mesh.server.signin import Next, SignIn
from wgpy.mesh.server.store.accounts import account_subject

from .conftest import running
from .support import captured_logs

PASSWORD = "correct horse battery"


async def test_create_a_user_with_a_password(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        reply = await r.admin.call("POST", "/users", {"name": "alice", "password": PASSWORD})
        assert reply["user"]["name"] == "alice" and PASSWORD not in json.dumps(reply)
        assert (reply["user"]["password"], reply["user"]["totp"]) == (True, False)
        account = await r.server.store.accounts.get("alice")
        assert account is not None and account.password_hash is not None
        assert account.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert Passwords().verify(account.password_hash, PASSWORD).ok
        # without one, as before: no password, so no sign-in with one
        await r.admin.call("POST", "/users", {"name": "bob"})
        bob = await r.server.store.accounts.get("bob")
        assert bob is not None and not bob.has_password
        # the list says who can sign in, and who enrolled TOTP
        secret = login.new_totp_secret()
        assert await r.server.store.accounts.begin_totp("alice", secret)
        users = (await r.admin.call("GET", "/users"))["users"]
        assert [(u["name"], u["password"], u["totp"]) for u in users] == [
            ("alice", True, False),
            ("bob", False, False),
        ]
        assert await r.server.store.accounts.use_totp_step("alice", secret, 1)
        users = (await r.admin.call("GET", "/users"))["users"]
        assert (users[0]["name"], users[0]["password"], users[0]["totp"]) == ("alice", True, True)
        assert "$argon2" not in json.dumps(users) and secret not in json.dumps(users)


async def test_a_refused_password_creates_no_user(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        for body, message in [
            ({"name": "alice", "password": "short"}, "at least 8 characters"),
            ({"name": "alice", "password": "x" * 1025}, "at most 1024 characters"),
            ({"name": "alice", "password": 12345678}, '"password" must be a string'),
            ({"name": "alice", "password": None}, '"password" must be a string'),
            ({"name": "alice", "password": "ok ok ok\u0000"}, "NUL"),
        ]:
            error = await r.admin.error("POST", "/users", body, status=400)
            assert message in error
            assert not isinstance(body["password"], str) or body["password"] not in error
        assert (await r.admin.call("GET", "/users"))["users"] == []


async def test_set_a_password_and_it_unlocks(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        store = r.server.store
        for _ in range(login.ACCOUNT_POLICY.lock_after):
            await store.accounts.fail(account_subject("alice"), login.ACCOUNT_POLICY)
        assert await r.admin.call("POST", "/users/alice/password", {"password": PASSWORD}) == {}
        signin = SignIn(store)
        assert (await signin.check_password("alice", PASSWORD, "127.0.0.1")).next is Next.ENROL
        error = await r.admin.error(
            "POST", "/users/bob/password", {"password": PASSWORD}, status=404
        )
        assert error == 'there is no user "bob"'
        error = await r.admin.error("POST", "/users/alice/password", {}, status=400)
        assert error == 'missing field "password"'
        error = await r.admin.error(
            "POST", "/users/alice/password", {"password": PASSWORD, "x": 1}, status=400
        )
        assert error.startswith('unknown field "x"')
        error = await r.admin.error(
            "POST", "/users/ALICE!/password", {"password": PASSWORD}, status=400
        )
        assert "must be 1 to 63 of a-z" in error
        # an admin API key is needed
        await r.admin.using(None).error(
            "POST", "/users/alice/password", {"password": PASSWORD}, status=401
        )


async def test_reset_totp(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        store = r.server.store
        secret = login.new_totp_secret()
        assert await store.accounts.begin_totp("alice", secret)
        assert await store.accounts.use_totp_step("alice", secret, 5)
        assert await r.admin.call("POST", "/users/alice/totp/reset") == {}
        account = await store.accounts.get("alice")
        assert account is not None and account.totp_secret is None
        assert not account.totp_confirmed
        error = await r.admin.error("POST", "/users/bob/totp/reset", status=404)
        assert error == 'there is no user "bob"'
        error = await r.admin.error("POST", "/users/alice/totp/reset", {"now": 1}, status=400)
        assert error.startswith('unknown field "now"')


async def test_passwords_are_never_logged(config: ServerConfig) -> None:
    with captured_logs() as logs:
        async with running(config) as r:
            await r.admin.call("POST", "/users", {"name": "alice", "password": PASSWORD})
            await r.admin.call("POST", "/users/alice/password", {"password": PASSWORD + "2"})
            await r.admin.error("POST", "/users/alice/password", {"password": "2short"}, status=400)
            await r.admin.call("POST", "/users/alice/totp/reset")
    events = [(e["event"], e.get("user"), e.get("password")) for e in logs]
    assert ("user created", "alice", True) in events
    assert ("password set", "alice", None) in events and ("TOTP reset", "alice", None) in events
    assert not any(word in repr(logs) for word in (PASSWORD, "2short", "$argon2"))
