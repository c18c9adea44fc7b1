"""``wgpy admin`` against the fake server: request shapes, output, errors."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from wgpy import cli
from wgpy.cli import admin as admin_cli
from wgpy.cli.environment import Environment, ExitStatus
from wgpy.mesh.server import MeshServer, ServerConfig

from .fakes import API_KEY, FakeServer, new_keypair


class Run:
    def __init__(self, status: ExitStatus, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err


def admin(
    server: FakeServer, *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> Run:
    out, err = io.StringIO(), io.StringIO()
    environment = Environment(
        stdin=io.BytesIO(stdin),
        stdout=out,
        stderr=err,
        env={"WGPY_SERVER": server.url, "WGPY_API_KEY": API_KEY, **(env or {})},
    )
    status = cli.main(["admin", *args], environment)
    return Run(status, out.getvalue(), err.getvalue())


@pytest.fixture
def server() -> FakeServer:
    with FakeServer() as s:
        yield s  # type: ignore[misc]


def last_body(server: FakeServer) -> object:
    return json.loads(server.requests[-1].body)


def test_users(server: FakeServer) -> None:
    r = admin(server, "users", "create", "bob")
    assert r.status == ExitStatus.SUCCESS, r.err
    assert last_body(server) == {"name": "bob"}
    assert server.requests[-1].authorization == f"Bearer {API_KEY}"
    assert r.out.splitlines()[0].split() == ["ID", "NAME", "CREATED"]
    assert r.out.splitlines()[1].split() == ["2", "bob", "t1"]
    r = admin(server, "users", "list")
    lines = r.out.splitlines()
    assert [line.split()[1] for line in lines[1:]] == ["alice", "bob"]
    # columns are aligned: every row starts its second column at the same place
    assert len({line.index(line.split()[1]) for line in lines}) == 1
    r = admin(server, "users", "delete", "bob")
    assert r.status == 0 and r.out == "deleted user bob\n"
    assert (server.requests[-1].method, server.requests[-1].path) == ("DELETE", "/api/v1/users/bob")
    # the server's sentence, once, and a non-zero status
    r = admin(server, "users", "delete", "bob")
    assert r.status == ExitStatus.ERROR
    assert r.err == 'wgpy admin: There is no user named "bob".\n'
    assert r.out == ""


def test_lists_as_bare_arrays_too(server: FakeServer) -> None:
    server.list_envelopes = False
    r = admin(server, "users", "list")
    assert r.out.splitlines()[1].split() == ["1", "alice", "t0"]


def test_preauthkeys(server: FakeServer) -> None:
    r = admin(
        server,
        "preauthkeys",
        "create",
        "--user",
        "alice",
        "--reusable",
        "--ephemeral",
        "--expiration",
        "1h30m",
        "--tags",
        "tag:ci, tag:web",
    )
    assert r.status == 0, r.err
    assert last_body(server) == {
        "user": "alice",
        "reusable": True,
        "ephemeral": True,
        "expiration_seconds": 5400,
        "tags": ["tag:ci", "tag:web"],
    }
    key = r.out.strip()
    assert key.startswith("wgpy_auth_") and key in server.auth_keys  # alone on stdout
    assert "shown only once" in r.err
    # the defaults: only what was asked for is sent (--user is required)
    admin(server, "preauthkeys", "create", "--user", "alice")
    assert last_body(server) == {"user": "alice", "reusable": False, "ephemeral": False}
    r = admin(server, "preauthkeys", "list")
    header, first, second = r.out.splitlines()
    assert header.split() == [
        "ID", "USER", "REUSABLE", "EPHEMERAL", "USED", "TAGS", "EXPIRES", "CREATED"
    ]  # fmt: skip
    assert first.split()[1:6] == ["alice", "yes", "yes", "no", "tag:ci,tag:web"]
    assert second.split()[1:6] == ["alice", "no", "no", "no", "-"]
    key_id = first.split()[0]
    r = admin(server, "preauthkeys", "expire", key_id)
    assert r.status == 0 and server.requests[-1].path == f"/api/v1/preauthkeys/{key_id}/expire"
    # a bad duration is a usage error, before any request
    count = len(server.requests)
    r = admin(server, "preauthkeys", "create", "--expiration", "soon")
    assert r.status == ExitStatus.USAGE and "is not a duration" in r.err
    assert len(server.requests) == count


def test_nodes(server: FakeServer) -> None:
    _, pub = new_keypair()
    node = server.add_node("laptop", pub, ["192.0.2.1:41641"])
    r = admin(server, "nodes", "list", "--user", "alice")
    assert server.requests[-1].query == "user=alice"
    header, row = r.out.splitlines()
    assert header.split()[:5] == ["ID", "HOSTNAME", "USER", "IPV4", "IPV6"]
    assert row.split()[:5] == [str(node.id), "laptop", "alice", node.ipv4, node.ipv6]
    r = admin(server, "nodes", "rename", str(node.id), "desk")
    assert r.status == 0 and r.out == f"renamed node {node.id} to desk\n"
    assert last_body(server) == {"hostname": "desk"}
    r = admin(server, "nodes", "tag", str(node.id), "tag:web,tag:db")
    assert last_body(server) == {"tags": ["tag:web", "tag:db"]}
    r = admin(server, "nodes", "tag", str(node.id), "")
    assert last_body(server) == {"tags": []}
    r = admin(server, "nodes", "expire", str(node.id))
    assert r.status == 0 and server.requests[-1].path == f"/api/v1/nodes/{node.id}/expire"
    r = admin(server, "--json", "nodes", "list")
    assert json.loads(r.out)[0]["hostname"] == "desk"
    r = admin(server, "nodes", "delete", str(node.id))
    assert r.status == 0 and server.requests[-1].method == "DELETE"
    r = admin(server, "nodes", "delete", str(node.id))
    assert r.status == 1 and r.err == f"wgpy admin: There is no node {node.id}.\n"
    # an id is one path segment, whatever it holds
    r = admin(server, "nodes", "delete", "../users")
    assert r.status == 1 and r.err == "wgpy admin: There is no node ../users.\n"


def test_policy(server: FakeServer, tmp_path: Path) -> None:
    r = admin(server, "policy", "get")
    assert json.loads(r.out) == server.policy  # the document alone, ready to edit and set
    good = {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["*"]}]}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(good))
    r = admin(server, "policy", "check", str(path))
    assert r.status == 0 and r.out == "the policy is valid\n"
    assert last_body(server) == good
    r = admin(server, "policy", "set", str(path))
    assert r.status == 0 and r.out == "policy updated (version 2)\n"
    assert server.policy == good
    bad = {"acls": [good["acls"][0], {"action": "accept", "src": ["*"], "dst": ["user:bob"]}]}
    for action in ("check", "set"):
        r = admin(server, "policy", action, "-", stdin=json.dumps(bad).encode())
        assert r.status == ExitStatus.ERROR
        assert r.err == 'wgpy admin: acls[1].dst[0]: unknown user "bob"\n'
    assert server.policy == good  # refused: unchanged
    path.write_text("{not json")
    count = len(server.requests)
    r = admin(server, "policy", "set", str(path))
    assert r.status == 1 and r.err.startswith(f"wgpy admin: {path} is not JSON")
    assert len(server.requests) == count
    r = admin(server, "policy", "set", str(tmp_path / "missing.json"))
    assert r.status == 1 and "cannot read" in r.err


def test_credentials_and_server_errors(server: FakeServer) -> None:
    r = admin(server, "users", "list", env={"WGPY_API_KEY": ""})
    assert r.status == 1
    assert r.err == "wgpy admin: give an admin API key with --api-key or WGPY_API_KEY\n"
    r = admin(server, "--api-key", "wgpy_api_wrong_x", "users", "list")
    assert r.status == 1
    assert r.err == "wgpy admin: the server refused the API key: The API key is not valid.\n"
    r = admin(server, "--server", "ftp://x", "users", "list")
    assert r.status == 1 and r.err.startswith("wgpy admin: --server: ")
    url = server.url
    server.stop()
    r = admin(server, "--server", url, "users", "list")
    assert r.status == 1
    assert r.err.startswith(f"wgpy admin: cannot reach the coordination server at {url}: ")
    assert r.err.count("\n") == 1


def test_durations() -> None:
    assert admin_cli.parse_duration("90") == 90
    assert admin_cli.parse_duration("90s") == 90
    assert admin_cli.parse_duration("30m") == 1800
    assert admin_cli.parse_duration("1h30m") == 5400
    assert admin_cli.parse_duration("7d") == 604800
    assert admin_cli.parse_duration("2w") == 1209600
    for bad in ("", "h", "1x", "1h 30m", "-1h", "0s"):
        with pytest.raises(Exception, match="duration"):
            admin_cli.parse_duration(bad)


# ------------------------------------------------------------------ against the real server


def real_admin(url: str, key: str, *args: str, stdin: bytes = b"") -> Run:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.BytesIO(stdin), stdout=out, stderr=err, env={})
    status = cli.main(["admin", "--server", url, "--api-key", key, *args], env)
    return Run(status, out.getvalue(), err.getvalue())


def test_admin_cli_against_the_real_server(tmp_path: Path) -> None:
    """--json after the action, the default policy said in words, policy delete, API keys
    listed and revoked, --user required: on wgpy.mesh.server (SQLite) in this process."""
    config = ServerConfig(
        host="127.0.0.1", port=0, state_dir=tmp_path / "server", shutdown_timeout=1.0
    )

    async def main() -> None:
        server = MeshServer(config)
        await server.start()
        try:
            await body(server)
        finally:
            await server.stop()

    async def body(server: MeshServer) -> None:
        _, api_key = await server.store.api_keys.create(None)
        url, key = server.url, str(api_key)

        def cli(*args: str, stdin: bytes = b"") -> Run:
            return real_admin(url, key, *args, stdin=stdin)

        call = asyncio.to_thread
        r = await call(cli, "users", "create", "alice")
        assert r.status == 0, r.err
        # --json before the object and after the action alike
        for argv in (("--json", "users", "list"), ("users", "list", "--json")):
            r = await call(cli, *argv)
            assert r.status == 0, r.err
            assert [u["name"] for u in json.loads(r.out)] == ["alice"]
        r = await call(cli, "users", "list")
        assert r.out.split()[:3] == ["ID", "NAME", "CREATED"]
        # no policy: said in words (not `null`); JSON keeps the null
        r = await call(cli, "policy", "get")
        assert (r.status, r.out) == (0, admin_cli.DEFAULT_POLICY + "\n")
        assert "default policy is in force" in r.out
        r = await call(cli, "policy", "get", "--json")
        assert json.loads(r.out)["policy"] is None
        policy = {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["*"]}]}
        r = await call(cli, "policy", "set", "-", stdin=json.dumps(policy).encode())
        assert r.status == 0, r.err
        r = await call(cli, "policy", "get")
        assert json.loads(r.out) == policy
        r = await call(cli, "policy", "delete")
        assert r.status == 0, r.err
        assert r.out.startswith("policy deleted (version ") and "default is in force" in r.out
        r = await call(cli, "policy", "get")
        assert r.out == admin_cli.DEFAULT_POLICY + "\n"
        # admin API keys: create, list (no secrets), revoke
        r = await call(cli, "apikeys", "create", "--expiration", "1d")
        assert r.status == 0, r.err
        second = r.out.strip()
        assert second.startswith("wgpy_api_") and "shown only once" in r.err
        r = await call(cli, "apikeys", "list", "--json")
        keys = json.loads(r.out)
        assert len(keys) == 2 and not any(k.get("expired") for k in keys)
        assert second not in r.out and key not in r.out
        second_id = next(k["id"] for k in keys if second.startswith(f"wgpy_api_{k['id']}_"))
        r = await call(cli, "apikeys", "list")
        assert r.out.split()[:4] == ["ID", "EXPIRED", "EXPIRES", "CREATED"]
        assert len(r.out.splitlines()) == 3
        r = await call(real_admin, url, second, "users", "list")
        assert r.status == 0, r.err
        r = await call(cli, "apikeys", "expire", str(second_id))
        assert (r.status, r.out) == (0, f"expired API key {second_id}\n"), r.err
        r = await call(real_admin, url, second, "users", "list")
        assert r.status == 1 and "the API key has expired" in r.err
        # --user is required, said by the command line before any request
        r = await call(cli, "preauthkeys", "create")
        assert r.status == ExitStatus.USAGE
        assert "the following arguments are required: --user" in r.err
        assert 'missing field "user"' not in r.err

    asyncio.run(asyncio.wait_for(main(), 30))
