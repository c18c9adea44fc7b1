"""``group:NAME`` in a running server: the groups an OIDC sign-in gives a user (store.oidc,
as /oidc/callback calls it) and the policy's own ``groups`` section decide who sees whom,
and a change of a user's groups at their next sign-in reaches the map streams within a
second, like a policy change."""

from __future__ import annotations

from wgpy.cli.admin import _user_columns, format_table
from wgpy.mesh.server import ServerConfig

from .conftest import open_map, register, running
from .test_server_stream import LIMIT, has, lacks

ISSUER = "https://id.example.com"


async def test_oidc_groups_in_the_policy_reach_the_maps(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        store = r.server.store
        await store.oidc.sign_in(ISSUER, "sub-alice", "alice", ["eng"])
        await store.oidc.sign_in(ISSUER, "sub-bob", "bob", ["sales"])
        await r.admin.user("carol")
        a = await register(r.admin, await r.admin.auth_key("alice"), "a")
        b = await register(r.admin, await r.admin.auth_key("bob"), "b")
        db = await register(r.admin, await r.admin.auth_key("carol"), "db")
        policy = {
            "groups": {"group:ops": ["carol"]},
            "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["group:ops"]}],
        }
        await r.admin.call("PUT", "/policy", policy)
        ma, mb, mdb = await open_map(a), await open_map(b), await open_map(db)
        await ma.until(has(db))
        await mdb.until(has(a))
        assert not mb.peers  # bob (sales) is in no rule
        # Bob's next sign-in says he moved to eng: his node gets the database, at once.
        await store.oidc.sign_in(ISSUER, "sub-bob", "bob", ["eng"])
        took = await mb.until(has(db))
        await mdb.until(has(b))
        # Alice leaves eng: her node loses it.
        await store.oidc.sign_in(ISSUER, "sub-alice", "alice", [])
        await ma.until(lacks(db))
        await mdb.until(lacks(a))
        assert took < LIMIT
        users = {u["name"]: u for u in (await r.admin.call("GET", "/users"))["users"]}
        assert (users["bob"]["oidc"], users["bob"]["groups"]) == (True, ["eng"])
        assert (users["carol"]["oidc"], users["carol"]["groups"]) == (False, [])
        record = await r.admin.call("GET", "/policy")
        assert record["policy"] == policy  # the document stays as set; its version moved
        for m in (ma, mb, mdb):
            m.close()


async def test_the_groups_section_is_validated_against_users(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("carol")
        error = await r.admin.error(
            "PUT",
            "/policy",
            {"groups": {"group:ops": ["carol", "dave"]}, "acls": []},
            status=400,
        )
        assert error == 'the policy is not valid: groups["group:ops"][1]: unknown user "dave"'
        # A user the policy's groups name stays until the policy no longer names them.
        await r.admin.call("PUT", "/policy", {"groups": {"group:ops": ["carol"]}, "acls": []})
        error = await r.admin.error("DELETE", "/users/carol", status=409)
        assert error == 'the policy names user "carol"; take them out of it first'


def test_the_users_table_shows_sso_users_and_their_groups() -> None:
    users = [
        {"id": 1, "name": "alice", "created_at": "t", "password": False, "totp": False,
         "oidc": True, "groups": ["admins", "eng"]},
        {"id": 2, "name": "carol", "created_at": "t", "password": True, "totp": True,
         "oidc": False, "groups": []},
    ]  # fmt: skip
    table = format_table(_user_columns(users), users).splitlines()
    assert table[0].split() == ["ID", "NAME", "CREATED", "PASSWORD", "TOTP", "SSO", "GROUPS"]
    assert table[1].split()[-2:] == ["yes", "admins,eng"]
    assert "SSO" not in format_table(_user_columns(users[1:]), users[1:])
