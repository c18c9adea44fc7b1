"""``wgpy up`` without an auth key (wgpy/cli/mesh_login.py): the countdown as a terminal and
a log file see it, what the server's answer to the stored token means, and the whole login
in process against a real server: a new node, a node whose key expired (same node, name and
addresses), a node the server forgot (a new one)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from wgpy.cli.environment import CommandError
from wgpy.cli.mesh_login import (
    TOKEN_EXPIRED,
    TOKEN_OK,
    TOKEN_REFUSED,
    Countdown,
    log_in_if_needed,
    time_left,
    token_verdict,
    worth_checking,
)
from wgpy.mesh.client import daemon
from wgpy.mesh.client.api import ApiError, ServerUnreachable
from wgpy.mesh.client.login import LoginStarted
from wgpy.mesh.client.node import NodeConfig
from wgpy.mesh.client.state import StateDir
from wgpy.mesh.server import ServerConfig

from .conftest import Client, running
from .fakes import FakeServer
from .test_client_cli import environment


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_left() -> None:
    assert time_left(598.4) == "9:58"
    assert time_left(0) == time_left(-5) == "0:00"
    assert time_left(3723) == "1:02:03"
    assert time_left(59.6) == "1:00"


def test_token_verdict() -> None:
    assert token_verdict(None) == TOKEN_OK
    assert token_verdict(ServerUnreachable("no answer")) == TOKEN_OK
    assert token_verdict(ApiError(403, "this node has expired; ...")) == TOKEN_EXPIRED
    assert token_verdict(ApiError(401, "the node token is not valid")) == TOKEN_REFUSED
    assert token_verdict(ApiError(429, "too many")) == TOKEN_OK


def test_worth_checking_the_token_before_the_node_starts() -> None:
    assert worth_checking(None, None)  # never ran
    assert worth_checking({"expires_at": "2027-01-01T00:00:00.000Z"}, None)  # a person's
    assert not worth_checking({"expires_at": None}, None)  # an auth key's: as before
    assert not worth_checking({"expires_at": None}, {"state": "connected"})
    assert worth_checking({"expires_at": None}, {"state": "refused"})
    assert worth_checking({"expires_at": None}, {"state": "expired"})


def test_countdown_on_a_terminal_and_in_a_log() -> None:
    started = LoginStarted("abc", "http://mesh.test/login/abc", 600, "secret")
    clock = Clock()
    tty = io.StringIO()
    countdown = Countdown(tty, tty=True, clock=clock)
    countdown.tick()
    assert tty.getvalue() == ""  # nothing to count before the request exists
    countdown.started(started)
    assert "\thttp://mesh.test/login/abc\n" in tty.getvalue()
    clock.now += 2
    countdown.tick()
    assert tty.getvalue().endswith("\r\033[K[#] waiting for approval: 9:58 left (Ctrl-C cancels)")
    countdown.waiting(300)
    countdown.tick()
    assert tty.getvalue().endswith("5:00 left (Ctrl-C cancels)")
    countdown.done()
    assert tty.getvalue().endswith("\r\033[K")
    assert "secret" not in tty.getvalue()

    log = io.StringIO()
    plain = Countdown(log, tty=False, clock=clock)
    plain.started(started)
    plain.tick()
    plain.waiting(570)
    plain.done()
    lines = log.getvalue().splitlines()
    assert lines[-2:] == [
        "[#] waiting for approval (10:00 left)",
        "[#] still waiting for approval (9:30 left)",
    ]
    assert "\r" not in log.getvalue() and "\033" not in log.getvalue()


def options(url: str, state: StateDir, hostname: str = "laptop") -> daemon.DaemonOptions:
    node = NodeConfig(interface="wgt0", listen_port=41641, hostname=hostname, auth_key=None)
    return daemon.DaemonOptions(state_dir=state.path, server_url=url, node=node)


async def approve_next(admin: Client, user: str = "alice", seen: int = 0) -> dict[str, Any]:
    """Approve the first pending login request once one appears; the node."""
    for _ in range(200):
        pending = (await admin.call("GET", "/login-requests"))["login_requests"]
        if pending:
            reply = await admin.call(
                "POST", f"/login-requests/{pending[0]['id']}/approve", {"user": user}
            )
            return reply["node"]  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError("no login request appeared")


async def test_up_logs_in_renews_an_expired_node_and_replaces_a_forgotten_one(
    tmp_path: Path, config: ServerConfig
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        state = StateDir(tmp_path / "node")
        state.ensure()
        state.load_or_create_key()
        env = environment()
        login = asyncio.ensure_future(
            asyncio.to_thread(log_in_if_needed, options(r.url, state), state, env)
        )
        node = await approve_next(r.admin)
        await login
        token = state.read_token()
        assert token is not None and token.startswith("wgpy_node_")
        err = env.stderr.getvalue()
        assert "/login/" in err and "[#] waiting for approval (" in err
        assert f"[#] approved: node laptop of user alice ({node['ipv4']}" in err

        # A node whose token works goes on without a login (nothing printed).
        env = environment()
        await asyncio.to_thread(log_in_if_needed, options(r.url, state), state, env)
        assert env.stderr.getvalue() == "" and state.read_token() == token

        # Expired: it logs in again and stays the same node, with its name and addresses.
        await r.admin.call("POST", f"/nodes/{node['id']}/expire")
        env = environment()
        login = asyncio.ensure_future(
            asyncio.to_thread(log_in_if_needed, options(r.url, state, "renamed"), state, env)
        )
        renewed = await approve_next(r.admin)
        await login
        assert "this node's key has expired" in env.stderr.getvalue()
        assert (renewed["id"], renewed["hostname"]) == (node["id"], "laptop")
        assert (renewed["ipv4"], renewed["ipv6"]) == (node["ipv4"], node["ipv6"])
        assert not renewed["expired"]
        assert state.read_token() not in (None, token)

        # Deleted by an admin: the stale token is replaced by a new node's.
        await r.admin.call("DELETE", f"/nodes/{node['id']}")
        env = environment()
        login = asyncio.ensure_future(
            asyncio.to_thread(log_in_if_needed, options(r.url, state), state, env)
        )
        fresh = await approve_next(r.admin)
        await login
        assert "no longer knows this node's token" in env.stderr.getvalue()
        assert fresh["id"] != node["id"] and fresh["hostname"] == "laptop"


def test_a_server_without_interactive_login_says_to_give_an_auth_key(tmp_path: Path) -> None:
    with FakeServer() as server:
        state = StateDir(tmp_path / "node")
        state.ensure()
        state.load_or_create_key()
        env = environment()
        with pytest.raises(CommandError) as e:
            log_in_if_needed(options(server.url, state), state, env)
    assert e.value.message == (
        "the login did not succeed: this server does not offer interactive login (a wgpy "
        "server before it); give a pre-auth key with --auth-key"
    )
    assert state.read_token() is None
