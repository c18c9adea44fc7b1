"""The login request API against a real server (SQLite and PostgreSQL): a node starts a
request, waits (long poll), an admin approves it and the node's wait answers at once with its
node and a token sealed to its key; refusals, cancels, expiry, wrong secrets; and the node's
client (mesh/client/login.py) doing the same, cancelled mid-wait."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

import wgpy
from wgpy.mesh.client.api import ApiError
from wgpy.mesh.client.login import (
    LoginCancelled,
    LoginEnded,
    interactive_login,
    parse_started,
    printable,
    unseal,
)
from wgpy.mesh.server import ServerConfig
from wgpy.mesh.server.logins import POLL, seal

from .conftest import Client, new_public_key, running, with_


def key_pair() -> tuple[bytes, str]:
    private = wgpy.generate_private_key()
    return base64.b64decode(private), wgpy.public_key(private)


async def start(client: Client, public_key: str, hostname: str = "laptop") -> dict[str, str]:
    reply = await client.using(None).call(
        "POST", "/login/start", {"public_key": public_key, "hostname": hostname}
    )
    assert set(reply) == {"id", "url", "expires_in", "secret"}
    return reply  # type: ignore[no-any-return]


def test_what_the_server_says_reaches_the_terminal_printable() -> None:
    assert printable("refused\x1b[2J: go\x07 away\n") == "refused[2J: go away"
    reply = {"id": "x", "url": "http://a/login/x", "expires_in": 5, "secret": "s"}
    assert parse_started(reply).url == "http://a/login/x"
    for url in ("http://a/login/x\x1b[2J", "http://a/ x", "javascript:x", "ftp://a"):
        with pytest.raises(ApiError, match="not an http"):
            parse_started({**reply, "url": url})
    with pytest.raises(ApiError, match="unusable"):
        parse_started({"id": "x"})


def test_seal_opens_only_with_the_private_key() -> None:
    private, public = key_pair()
    sealed = seal("wgpy_node_0123456789abcdef_" + "x" * 43, public)
    assert unseal(sealed, private).startswith("wgpy_node_0123456789abcdef_")
    other, _ = key_pair()
    with pytest.raises(ValueError, match="does not open"):
        unseal(sealed, other)
    with pytest.raises(ValueError, match="does not open"):
        unseal("not base64!", private)


async def test_start_wait_approve(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        private, public = key_pair()
        started = await start(r.admin, public)
        assert started["url"] == f"{r.url}/login/{started['id']}"
        assert started["expires_in"] == 600
        node = r.admin.using(started["secret"])
        path = f"/login/{started['id']}/wait"
        pending = await node.call("GET", path + "?timeout=1")
        assert pending["state"] == "pending" and 0 < pending["expires_in"] <= 600

        listed = await r.admin.call("GET", "/login-requests")
        assert [q["id"] for q in listed["login_requests"]] == [started["id"]]
        assert listed["login_requests"][0]["hostname"] == "laptop"

        waiting = asyncio.ensure_future(node.call("GET", path))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        began = time.monotonic()
        approved = await r.admin.call(
            "POST", f"/login-requests/{started['id']}/approve", {"user": "alice"}
        )
        reply = await waiting
        woke = time.monotonic() - began
        assert woke < 0.5, woke  # the long poll answers at once, not at its next read
        assert reply["state"] == "approved" and "token" not in reply
        assert reply["node"]["id"] == approved["node"]["id"]
        assert reply["node"]["user"] == "alice" and reply["node"]["expires_at"] is not None
        token = unseal(reply["sealed_token"], private)
        me = r.admin.using(token)
        logged = await me.call("POST", "/login", {"public_key": public, "hostname": "laptop"})
        assert logged["node"]["id"] == approved["node"]["id"]

        # The token is given once; the request is done.
        message = await node.error("GET", path, status=409)
        assert "already fetched" in message
        assert (await r.admin.call("GET", "/login-requests"))["login_requests"] == []

        # The audit log: the admin's approval and the node's login, with no secret in it.
        events = [
            (e.event, e.result, e.method, e.user, e.node_id)
            for e in await r.server.store.audit.list()
            if e.event.startswith("login")
        ]
        node_id = approved["node"]["id"]
        assert events == [
            ("login.approve", "ok", "apikey", "alice", node_id),
            ("login", "ok", "admin", "alice", node_id),  # the node takes its token
            ("login", "ok", "token", "alice", node_id),  # and logs in with it
        ]
        text = repr(await r.server.store.audit.list())
        assert started["secret"] not in text and token not in text and started["id"] not in text


async def test_wrong_secret_unknown_request_and_bad_input(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as r:
        _, public = key_pair()
        started = await start(r.admin, public)
        path = f"/login/{started['id']}/wait?timeout=1"
        wrong = ("A" if started["secret"][0] != "A" else "B") + started["secret"][1:]
        assert "does not match" in await r.admin.using(wrong).error("GET", path, status=401)
        [refused] = await r.server.store.audit.list()
        assert (refused.event, refused.result, refused.method) == ("login", "refused", "request")
        assert refused.source == "127.0.0.1" and wrong not in repr(refused)
        assert "secret" in await r.admin.using(None).error("GET", path, status=401)
        unknown = "/login/" + "x" * 22 + "/wait?timeout=1"
        assert "no such login request" in await r.admin.using(wrong).error(
            "GET", unknown, status=401
        )
        assert "no such login request" in await r.admin.using(wrong).error(
            "GET", "/login/short/wait", status=404
        )
        secret = r.admin.using(started["secret"])
        assert "timeout" in await secret.error("GET", path + "00", status=400)
        assert "timeout" in await secret.error(
            "GET", f"/login/{started['id']}/wait?x=1", status=400
        )
        assert "node token" in await r.admin.using(wrong).error(
            "POST", "/login/start", {"public_key": public, "hostname": "a"}, status=401
        )
        for body, says in (
            ({"public_key": public}, 'missing field "hostname"'),
            ({"public_key": "AAAA", "hostname": "a"}, "not a valid WireGuard public key"),
            ({"public_key": public, "hostname": "a", "private_key": "x"}, "never takes"),
        ):
            assert says in await r.admin.using(None).error("POST", "/login/start", body, status=400)


async def test_refuse_cancel_and_expiry(backend: str, config: ServerConfig) -> None:
    async with running(with_(config, login_lifetime=1.0)) as r:
        await r.admin.user("alice")
        _, public = key_pair()
        started = await start(r.admin, public)
        assert started["expires_in"] == 1
        node = r.admin.using(started["secret"])
        path = f"/login/{started['id']}/wait"
        began = time.monotonic()
        reply = await node.call("GET", path)  # answers when it expires, not after 30 s
        assert time.monotonic() - began < 2.0
        assert reply == {
            "state": "expired",
            "message": "nobody approved the login in time; run wgpy up again for a new URL",
        }
        assert "expired" in await r.admin.error(
            "POST", f"/login-requests/{started['id']}/approve", {"user": "alice"}, status=409
        )

    async with running(config) as r:  # the same database: alice exists
        _, public = key_pair()
        refused = await start(r.admin, public)
        waiting = asyncio.ensure_future(
            r.admin.using(refused["secret"]).call("GET", f"/login/{refused['id']}/wait")
        )
        await asyncio.sleep(0.2)
        await r.admin.call(
            "POST", f"/login-requests/{refused['id']}/refuse", {"message": "not a device of ours"}
        )
        assert await asyncio.wait_for(waiting, 1) == {
            "state": "refused",
            "message": "the login was refused: not a device of ours",
        }

        cancelled = await start(r.admin, public)
        who = r.admin.using(cancelled["secret"])
        assert await who.call("DELETE", f"/login/{cancelled['id']}") == {"state": "cancelled"}
        assert "cancelled" in await r.admin.error(
            "POST", f"/login-requests/{cancelled['id']}/approve", {"user": "alice"}, status=409
        )
        assert (await r.admin.call("GET", "/nodes"))["nodes"] == []
        assert 'no user "bob"' in await r.admin.error(
            "POST", f"/login-requests/{refused['id']}/approve", {"user": "bob"}, status=404
        )
        assert "API key" in await r.admin.using(None).error("GET", "/login-requests", status=401)


async def test_client_logs_in_and_a_cancel_withdraws(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        private, public = key_pair()
        shown: list[str] = []

        async def approve_when_shown() -> None:
            while not shown:
                await asyncio.sleep(0.02)
            request_id = shown[0].rsplit("/", 1)[1]
            await r.admin.call("POST", f"/login-requests/{request_id}/approve", {"user": "alice"})

        approver = asyncio.ensure_future(approve_when_shown())
        result = await interactive_login(
            r.url, public, private, "laptop", on_start=lambda s: shown.append(s.url)
        )
        await approver
        assert result.node["hostname"] == "laptop" and result.token.startswith("wgpy_node_")
        assert "wgpy_node_" not in repr(result)

        # Cancelled while waiting: the request is withdrawn, nothing registered.
        other_private, other_public = key_pair()
        started: list[str] = []
        task = asyncio.ensure_future(
            interactive_login(
                r.url,
                other_public,
                other_private,
                "desk",
                on_start=lambda s: started.append(s.id),
            )
        )
        while not started:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(LoginCancelled, match="withdrawn") as cancelled:
            await task
        assert cancelled.value.withdrawn
        listed = await r.admin.call("GET", "/login-requests?all=1")
        states = {q["id"]: q["state"] for q in listed["login_requests"]}
        assert states[started[0]] == "cancelled"
        assert [n["hostname"] for n in (await r.admin.call("GET", "/nodes"))["nodes"]] == ["laptop"]

        # Refused: the client says so.
        refusing = asyncio.ensure_future(
            interactive_login(
                r.url, other_public, other_private, "desk", on_start=lambda s: started.append(s.id)
            )
        )
        while len(started) < 2:
            await asyncio.sleep(0.02)
        await r.admin.call("POST", f"/login-requests/{started[1]}/refuse", {})
        with pytest.raises(LoginEnded, match="refused: an admin refused it"):
            await refusing


async def test_a_key_of_another_users_node_is_refused(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        await r.admin.user("bob")
        key = await r.admin.auth_key("alice")
        public = new_public_key()
        await r.admin.using(None).call(
            "POST", "/register", {"auth_key": key, "public_key": public, "hostname": "a"}
        )
        started = await start(r.admin, public)
        message = await r.admin.error(
            "POST", f"/login-requests/{started['id']}/approve", {"user": "bob"}, status=403
        )
        assert "another user's node" in message


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_an_approval_on_another_replica_ends_the_wait(
    backend: str, config: ServerConfig
) -> None:
    """The node waits on one replica, the person approves through another: the wait hears
    it at its next read (POLL, 1 s), not at the end of its 30 s."""
    async with running(config) as one, running(config) as two:
        await one.admin.user("alice")
        private, public = key_pair()
        started = await start(one.admin, public)
        waiting = asyncio.ensure_future(
            one.admin.using(started["secret"]).call("GET", f"/login/{started['id']}/wait")
        )
        await asyncio.sleep(0.2)
        admin2 = Client(two.session, two.url, one.admin.token)
        began = time.monotonic()
        await admin2.call("POST", f"/login-requests/{started['id']}/approve", {"user": "alice"})
        reply = await asyncio.wait_for(waiting, 3)
        assert time.monotonic() - began < POLL + 0.5
        assert reply["state"] == "approved" and unseal(reply["sealed_token"], private)
