"""``wgpy admin login list|approve|refuse`` and ``wgpy admin nodes expiry`` against a real
server (in process), and ``wgpy server --key-expiry/--public-url``: the approved node
expires when the server says, or never."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

import wgpy
from wgpy import cli
from wgpy.cli import server as server_cli
from wgpy.cli.environment import Environment, ExitStatus
from wgpy.mesh.server import ServerConfig

from .conftest import Running, running, with_
from .test_server_logins import start


class Run:
    def __init__(self, status: ExitStatus, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err


async def admin(r: Running, *args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdin=io.BytesIO(),
        stdout=out,
        stderr=err,
        env={"WGPY_SERVER": r.url, "WGPY_API_KEY": str(r.admin.token)},
    )
    status = await asyncio.to_thread(cli.main, ["admin", *args], env)
    return Run(status, out.getvalue(), err.getvalue())


def public_key() -> str:
    return wgpy.public_key(wgpy.generate_private_key())


async def test_login_list_approve_refuse(config: ServerConfig) -> None:
    async with running(with_(config, key_expiry=7 * 86400.0)) as r:
        await r.admin.user("alice")
        first = await start(r.admin, public_key(), "laptop")
        second = await start(r.admin, public_key(), "phone")
        listed = await admin(r, "login", "list")
        assert listed.status == ExitStatus.SUCCESS, listed.err
        lines = listed.out.splitlines()
        assert lines[0].split()[:4] == ["ID", "HOSTNAME", "PUBLIC", "KEY"]
        assert [line.split()[:2] for line in lines[1:]] == [
            [first["id"], "laptop"],
            [second["id"], "phone"],
        ]
        approved = await admin(r, "login", "approve", first["id"], "--user", "alice")
        assert approved.status == ExitStatus.SUCCESS, approved.err
        assert approved.out.startswith("approved: node 1 laptop of user alice (100.64.0.1, ")
        assert "key expires: 20" in approved.out
        nodes = (await r.admin.call("GET", "/nodes"))["nodes"]
        assert [n["hostname"] for n in nodes] == ["laptop"] and nodes[0]["expires_at"]

        again = await admin(r, "login", "approve", first["id"], "--user", "alice")
        assert again.status == ExitStatus.ERROR
        assert again.err == (
            'wgpy admin: this login request was already approved (for user "alice")\n'
        )
        nobody = await admin(r, "login", "approve", second["id"], "--user", "nobody")
        assert nobody.err == 'wgpy admin: there is no user "nobody"; create it first\n'

        refused = await admin(r, "login", "refuse", second["id"], "--message", "not ours")
        assert refused.out == f"refused login request {second['id']}\n"
        assert (await admin(r, "login", "list")).out.splitlines()[1:] == []
        every = json.loads((await admin(r, "--json", "login", "list", "--all")).out)
        assert {q["hostname"]: q["state"] for q in every} == {
            "laptop": "approved",
            "phone": "refused",
        }

        # a server's node: never; then 30 days from now; bad input in one sentence
        never = await admin(r, "nodes", "expiry", "1", "never")
        assert never.out == "node 1's key expires: never\n", never.err
        assert (await r.admin.call("GET", "/nodes"))["nodes"][0]["expires_at"] is None
        later = await admin(r, "--json", "nodes", "expiry", "1", "30d")
        node = json.loads(later.out)
        assert node["expires_at"] and not node["expired"]
        bad = await admin(r, "nodes", "expiry", "1", "soon")
        assert bad.status == ExitStatus.USAGE and "not a duration" in bad.err
        message = await r.admin.error("POST", "/nodes/1/expiry", {"expiry": 0}, status=400)
        assert message == '"expiry" must be "never" or a whole number of seconds from 1 to ' + str(
            10 * 365 * 86400
        )
        assert "no node 9" in (await admin(r, "nodes", "expiry", "9", "never")).err


def test_server_key_expiry_and_public_url_arguments() -> None:
    parser = cli.commands.build_parser()

    def config(*argv: str) -> ServerConfig:
        args = parser.parse_args(["server", "--state-dir", "/tmp/x", *argv])
        return server_cli._config(args, Environment(io.BytesIO(), io.StringIO(), io.StringIO()))

    assert config().key_expiry == 180 * 86400 and config().public_url is None
    assert config("--key-expiry", "never").key_expiry is None
    assert config("--key-expiry", "90d").key_expiry == 90 * 86400
    assert config("--public-url", "https://mesh.example/").public_url == "https://mesh.example"
    with pytest.raises(cli.environment.CommandError, match="--public-url"):
        config("--public-url", "mesh.example")
    with pytest.raises(SystemExit):
        parser.parse_args(["server", "--key-expiry", "later"])


async def test_public_url_is_the_login_urls_base(config: ServerConfig) -> None:
    async with running(with_(config, public_url="https://mesh.example")) as r:
        started = await start(r.admin, public_key())
        assert started["url"] == f"https://mesh.example/login/{started['id']}"
