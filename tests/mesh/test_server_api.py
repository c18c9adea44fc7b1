"""The HTTP API (wgpy/mesh/server/web.py, app.py, admin.py): registration and its keys, admin
endpoints with and without a key, bad input and abuse, and nodes that cannot act on others."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgpy.mesh.server import ServerConfig

from .conftest import ApiError, Client, new_public_key, register, running, with_


async def test_register_with_one_off_reusable_expired_and_unknown_keys(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        once = await r.admin.auth_key("alice")
        node = await register(r.admin, once, "laptop")
        assert node.node["user"] == "alice" and node.node["ipv4"] == "100.64.0.1"
        assert re.fullmatch(r"wgpy_node_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", node.token)
        body = {"auth_key": once, "public_key": new_public_key(), "hostname": "x"}
        message = await r.admin.using(None).error("POST", "/register", body, status=403)
        assert (
            message
            == "the auth key is a one-off key and was already used; ask an admin for a new one"
        )

        reusable = await r.admin.auth_key("alice", reusable=True)
        for name in ("a", "b"):
            await register(r.admin, reusable, name)

        expired = await r.admin.auth_key("alice", expiration_seconds=60)
        key_id = expired.split("_")[2]
        reply = await r.admin.call("POST", f"/preauthkeys/{key_id}/expire")
        assert reply["preauthkey"]["expired"] is True
        body = {"auth_key": expired, "public_key": new_public_key(), "hostname": "x"}
        message = await r.admin.using(None).error("POST", "/register", body, status=403)
        assert message == "the auth key has expired; ask an admin for a new one"

        unknown = "wgpy_auth_" + "0" * 16 + "_" + "A" * 43
        body = {"auth_key": unknown, "public_key": new_public_key(), "hostname": "x"}
        message = await r.admin.using(None).error("POST", "/register", body, status=401)
        assert message.startswith("the auth key is not valid")
        body = {"auth_key": "hunter2", "public_key": new_public_key(), "hostname": "x"}
        message = await r.admin.using(None).error("POST", "/register", body, status=401)
        assert message == "that is not an auth key: expected wgpy_auth_<id>_<secret>"

        keys = (await r.admin.call("GET", "/preauthkeys?user=alice"))["preauthkeys"]
        assert len(keys) == 3 and all("key" not in k for k in keys)  # secrets are shown once
        assert [k["used"] for k in keys] == [True, True, False]


async def test_hostname_clashes_get_a_suffix(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        await r.admin.user("bob")
        key = await r.admin.auth_key("alice", reusable=True)
        names = [(await register(r.admin, key, "Laptop")).node["hostname"] for _ in range(3)]
        assert names == ["laptop", "laptop-1", "laptop-2"]
        other = await register(r.admin, await r.admin.auth_key("bob"), "laptop")
        assert other.node["hostname"] == "laptop"  # unique per user only
        long = "x" * 63
        assert (await register(r.admin, key, long)).node["hostname"] == long
        assert (await register(r.admin, key, long)).node["hostname"] == "x" * 61 + "-1"


async def test_addresses_survive_relogin_and_a_server_restart(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        node = await register(r.admin, key, "laptop")
        await register(r.admin, key, "other")
        again = await register(r.admin, key, "laptop", node.public_key, node.token)
        assert (again.node["id"], again.node["ipv4"], again.node["ipv6"]) == (
            node.node["id"],
            node.node["ipv4"],
            node.node["ipv6"],
        )
        assert await node.client.error(
            "POST", "/login", {"public_key": node.public_key, "hostname": "laptop"}, status=401
        )
        new_key = new_public_key()
        reply = await again.client.call(
            "POST", "/login", {"public_key": new_key, "hostname": "laptop"}
        )
        assert (reply["node"]["public_key"], reply["node"]["ipv4"]) == (new_key, node.node["ipv4"])
    async with running(config) as r:
        reply = await Client(r.session, r.url, again.token).call(
            "POST", "/login", {"public_key": new_key, "hostname": "laptop"}
        )
        assert (
            reply["node"]["ipv4"] == node.node["ipv4"]
            and reply["node"]["ipv6"] == node.node["ipv6"]
        )


async def test_admin_endpoints_need_an_admin_key(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        node = await register(r.admin, await r.admin.auth_key("alice"), "a")
        anonymous = r.admin.using(None)
        endpoints = [
            ("GET", "/users"),
            ("POST", "/users"),
            ("DELETE", "/users/alice"),
            ("GET", "/preauthkeys"),
            ("POST", "/preauthkeys"),
            ("POST", "/preauthkeys/0123456789abcdef/expire"),
            ("GET", "/nodes"),
            ("POST", f"/nodes/{node.id}/expire"),
            ("DELETE", f"/nodes/{node.id}"),
            ("POST", f"/nodes/{node.id}/rename"),
            ("POST", f"/nodes/{node.id}/tags"),
            ("GET", "/policy"),
            ("PUT", "/policy"),
            ("DELETE", "/policy"),
            ("POST", "/policy/check"),
            ("GET", "/apikeys"),
            ("POST", "/apikeys"),
            ("POST", "/apikeys/0123456789abcdef/expire"),
        ]
        for method, path in endpoints:
            message = await anonymous.error(method, path, {}, status=401)
            assert (
                message
                == "this endpoint needs an admin API key in an 'Authorization: Bearer' header"
            )
            message = await node.client.error(
                method, path, {}, status=401
            )  # a node token is not one
            assert message == "this needs an admin API key, but a node token was given"
        wrong = "wgpy_api_" + r.admin.token.split("_")[2] + "_" + "B" * 43  # type: ignore[union-attr]
        assert "not valid" in await r.admin.using(wrong).error("GET", "/users", status=401)
        reply = await r.admin.call("POST", "/apikeys", {"expiration_seconds": 60})
        short = r.admin.using(reply["apikey"]["key"])
        await short.call("GET", "/users")
        await r.admin.call("POST", f"/apikeys/{reply['apikey']['id']}/expire")
        assert "expired" in await short.error("GET", "/users", status=403)
        assert [k["expired"] for k in (await r.admin.call("GET", "/apikeys"))["apikeys"]] == [
            False,
            True,
        ]
        assert (await r.admin.call("GET", "/nodes"))["nodes"][0]["id"] == node.id  # still there


async def test_admin_operations(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        assert "already a user" in await r.admin.error(
            "POST", "/users", {"name": "alice"}, status=409
        )
        assert "must be 1 to 63" in await r.admin.error(
            "POST", "/users", {"name": "Alice!"}, status=400
        )
        await r.admin.user("bob")
        node = await register(r.admin, await r.admin.auth_key("alice", tags=["tag:web"]), "a")
        assert node.node["tags"] == ["tag:web"]
        reply = await r.admin.call("POST", f"/nodes/{node.id}/rename", {"hostname": "web1"})
        assert reply["node"]["hostname"] == "web1"
        reply = await r.admin.call(
            "POST", f"/nodes/{node.id}/tags", {"tags": ["tag:db", "tag:web"]}
        )
        assert reply["node"]["tags"] == ["tag:db", "tag:web"]
        assert len((await r.admin.call("GET", "/nodes?user=alice"))["nodes"]) == 1
        assert (await r.admin.call("GET", "/nodes?user=bob"))["nodes"] == []
        assert 'no user "carol"' in await r.admin.error("GET", "/nodes?user=carol", status=404)
        assert "unknown query parameter" in await r.admin.error("GET", "/nodes?usr=bob", status=400)
        assert "not a node id" in await r.admin.error("DELETE", "/nodes/abc", status=400)
        assert await r.admin.error("DELETE", "/nodes/999", status=404) == "there is no node 999"
        reply = await r.admin.call("POST", f"/nodes/{node.id}/expire")
        assert reply["node"]["expired"] is True
        assert "still has 1 node" in await r.admin.error("DELETE", "/users/alice", status=409)
        await r.admin.call("DELETE", f"/nodes/{node.id}")
        await r.admin.call("DELETE", "/users/alice")
        assert [u["name"] for u in (await r.admin.call("GET", "/users"))["users"]] == ["bob"]


async def test_policy_endpoints(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        assert await r.admin.call("GET", "/policy") == {
            "policy": None,
            "version": 0,
            "updated_at": None,
        }
        bad = {
            "acls": [
                {"action": "accept", "src": ["*"], "dst": ["*"]},
                {"action": "accept", "src": ["*"], "dst": ["user:bob"]},
            ]
        }
        message = await r.admin.error("PUT", "/policy", bad, status=400)
        assert message == 'the policy is not valid: acls[1].dst[0]: unknown user "bob"'
        assert message == await r.admin.error("POST", "/policy/check", bad, status=400)
        good = {
            "acls": [{"action": "accept", "src": ["user:alice"], "dst": ["tag:web"]}],
            "tagOwners": {"tag:web": ["user:alice"]},
        }
        assert await r.admin.call("POST", "/policy/check", good) == {"ok": True}
        reply = await r.admin.call("PUT", "/policy", good)
        assert (reply["policy"], reply["version"]) == (good, 1)
        assert (await r.admin.call("GET", "/policy"))["policy"] == good
        message = await r.admin.error(
            "POST", "/preauthkeys", {"user": "alice", "tags": ["tag:db"]}, status=400
        )
        assert message == 'tags: tag "tag:db" is not declared in the policy\'s tagOwners'
        reply = await r.admin.call("DELETE", "/policy")
        assert (reply["policy"], reply["version"]) == (None, 2)


async def test_bad_bodies_get_clear_4xx_errors(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        anonymous = r.admin.using(None)
        good = {"auth_key": key, "public_key": new_public_key(), "hostname": "a"}
        cases = [
            (
                {**good, "extra": 1},
                'unknown field "extra"; the fields are "auth_key", "public_key", "hostname", '
                '"challenge", "machine_certificate", "machine_signature"',
            ),
            ({k: v for k, v in good.items() if k != "hostname"}, 'missing field "hostname"'),
            (
                {**good, "hostname": "-bad"},
                '"hostname" must be a DNS label: 1 to 63 letters, digits and "-", not starting or '
                'ending with "-"',
            ),
            ({**good, "hostname": 7}, '"hostname" must be a string'),
            (
                {**good, "public_key": "abc"},
                '"public_key" is not a valid WireGuard public key: expected 44 characters of '
                "base64 encoding 32 bytes, got 3",
            ),
            ([good], "the body must be a JSON object"),
            (
                {**good, "private_key": new_public_key()},
                'field "private_key" refused: the server never takes private keys; '
                "send only the public key",
            ),
        ]
        for body, message in cases:
            assert await anonymous.error("POST", "/register", body, status=400) == message
        assert (await anonymous.error("POST", "/register", raw=b"{nope", status=400)).startswith(
            "the body is not valid JSON"
        )
        assert (
            await anonymous.error("POST", "/register", raw=b"[" * 60000, status=400)
            == "the body is not valid JSON: nested too deeply"
        )
        assert (
            await anonymous.error("POST", "/register", raw=b"", status=400)
            == "the request needs a JSON body (use {} for none)"
        )
        big = json.dumps({**good, "hostname": "a" * (64 * 1024)}).encode()
        assert (
            await anonymous.error("POST", "/register", raw=big, status=413)
            == "the request body is larger than 64 KiB"
        )
        assert (
            await r.admin.error("PUT", "/policy", raw=b" " * (65 * 1024), status=413)
            == "the request body is larger than 64 KiB"
        )
        assert (await anonymous.error("GET", "/nothing", status=404)).startswith(
            "there is no such endpoint"
        )
        assert (await anonymous.error("GET", "/register", status=405)).startswith(
            "this endpoint does not take"
        )
        for body, fragment in [
            (
                {"user": "alice", "expiration_seconds": True},
                '"expiration_seconds" must be a whole number',
            ),
            (
                {"user": "alice", "expiration_seconds": 0},
                '"expiration_seconds" must be a whole number',
            ),
            ({"user": "alice", "reusable": "yes"}, '"reusable" must be true or false'),
            ({"user": "alice", "tags": ["web"]}, '"tags": "web" is not a tag'),
            ({"user": "nobody"}, 'there is no user "nobody"'),
        ]:
            status = 404 if "no user" in fragment else 400
            assert fragment in await r.admin.error("POST", "/preauthkeys", body, status=status)


async def test_endpoints_are_validated_and_normalized(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        node = await register(r.admin, await r.admin.auth_key("alice"), "a")
        for bad in (
            ["192.0.2.1"],
            ["host:1"],
            ["192.0.2.1:0"],
            ["[192.0.2.1]:1"],
            ["2001:db8::1:1"],
            "x",
            ["192.0.2.1:1"] * 17,
        ):
            await node.client.error("POST", "/node/endpoints", {"endpoints": bad}, status=400)
        await node.client.call(
            "POST",
            "/node/endpoints",
            {"endpoints": ["192.0.2.1:51820", "[2001:DB8::1]:1", "192.0.2.1:51820"]},
        )
        nodes = (await r.admin.call("GET", "/nodes"))["nodes"]
        assert nodes[0]["endpoints"] == ["192.0.2.1:51820", "[2001:db8::1]:1"]


def test_no_endpoint_accepts_a_private_key_field() -> None:
    """The grep-able guarantee: every body goes through schemas.fields, which refuses any field
    named like "private" before anything else, and no handler names such a field."""
    server = Path(__file__).parents[2] / "wgpy" / "mesh" / "server"
    schemas = (server / "schemas.py").read_text()
    assert 'PRIVATE_FIELD = re.compile("private", re.IGNORECASE)' in schemas
    for module in ("web.py", "app.py", "admin.py"):
        source = (server / module).read_text()
        assert not re.search(r'["\']\w*private\w*["\']', source, re.IGNORECASE), module
        assert "request.json(" not in source and "request.post(" not in source, module


async def test_private_key_fields_are_refused_everywhere(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        node = await register(r.admin, await r.admin.auth_key("alice"), "a")
        for client, method, path in [
            (r.admin.using(None), "POST", "/register"),
            (node.client, "POST", "/login"),
            (node.client, "POST", "/node/endpoints"),
            (node.client, "POST", "/logout"),
            (r.admin, "POST", "/users"),
            (r.admin, "POST", "/preauthkeys"),
            (r.admin, "POST", f"/nodes/{node.id}/rename"),
            (r.admin, "POST", "/apikeys"),
        ]:
            for field in ("private_key", "PrivateKey", "node_private"):
                message = await client.error(method, path, {field: "x"}, status=400)
                assert "never takes private keys" in message, (path, message)


async def test_registration_and_login_are_rate_limited(config: ServerConfig) -> None:
    async with running(with_(config, auth_rate=0.5, auth_burst=3)) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        node = await register(r.admin, key, "a")
        await node.client.call("POST", "/login", {"public_key": node.public_key, "hostname": "a"})
        body = {"auth_key": key, "public_key": new_public_key(), "hostname": "b"}
        await r.admin.using(None).call("POST", "/register", body)
        with pytest.raises(ApiError) as e:
            await r.admin.using(None).call("POST", "/register", body)
        assert e.value.status == 429
        assert e.value.body["error"].startswith(
            "too many registrations or logins from this address; retry in"
        )
        await node.client.error(
            "POST", "/login", {"public_key": node.public_key, "hostname": "a"}, status=429
        )
        await r.admin.call("GET", "/users")  # admin calls are not limited
        await node.client.call("POST", "/node/endpoints", {"endpoints": []})  # nor node updates


async def test_a_node_acts_only_on_itself(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        a, b = await register(r.admin, key, "a"), await register(r.admin, key, "b")
        # No node endpoint names a node: the token decides. A's token cannot take B's key,
        # nor use the admin endpoints on B.
        assert "belongs to another node" in await a.client.error(
            "POST", "/login", {"public_key": b.public_key, "hostname": "a"}, status=409
        )
        await a.client.error("DELETE", f"/nodes/{b.id}", status=401)
        await a.client.error("POST", f"/nodes/{b.id}/rename", {"hostname": "evil"}, status=401)
        await a.client.call("POST", "/node/endpoints", {"endpoints": ["192.0.2.7:1"]})
        nodes = {n["hostname"]: n for n in (await r.admin.call("GET", "/nodes"))["nodes"]}
        assert nodes["a"]["endpoints"] == ["192.0.2.7:1"] and nodes["b"]["endpoints"] == []
        assert nodes["b"]["public_key"] == b.public_key
        await a.client.call("POST", "/logout", {})
        assert "not valid" in await a.client.error(
            "POST", "/node/endpoints", {"endpoints": []}, status=401
        )
        await b.client.call("POST", "/node/endpoints", {"endpoints": []})


async def test_logout_deletes_an_ephemeral_node_and_expires_another(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        e = await register(r.admin, await r.admin.auth_key("alice", ephemeral=True), "e")
        n = await register(r.admin, await r.admin.auth_key("alice"), "n")
        await e.client.call("POST", "/logout")
        await n.client.call("POST", "/logout", {})
        nodes = (await r.admin.call("GET", "/nodes"))["nodes"]
        assert [(x["hostname"], x["expired"]) for x in nodes] == [("n", True)]


async def test_the_server_speaks_tls(tmp_path: Path, config: ServerConfig) -> None:
    import datetime
    import ssl

    import aiohttp
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls = with_(config, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem")
    async with running(tls) as r:
        assert r.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=tmp_path / "cert.pem")
        context.check_hostname = False
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            assert await Client(session, r.url, r.admin.token).call("GET", "/users") == {
                "users": []
            }


# ----------------------------------------------------------------------------------------
# Whatever a client sends: a 2xx or a 4xx with one sentence, never a 5xx, and a sound database


class ServerInLoop:
    """One server for many hypothesis examples: its own event loop, driven example by
    example (hypothesis does not run coroutines)."""

    def __init__(self, config: ServerConfig) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.context = running(config)
        self.r = self.loop.run_until_complete(self.context.__aenter__())
        admin = self.r.admin
        self.run(admin.user("alice"))
        self.auth_key = self.run(admin.auth_key("alice", reusable=True))
        self.node = self.run(register(admin, self.auth_key, "n"))

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.run(self.context.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def server_in_loop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from .conftest import FAST

    config = ServerConfig(state_dir=tmp_path_factory.mktemp("fuzz"), **FAST, auth_burst=1e9)  # type: ignore[arg-type]
    server = ServerInLoop(config)
    yield server
    server.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = [
    "auth_key",
    "public_key",
    "hostname",
    "endpoints",
    "name",
    "user",
    "reusable",
    "ephemeral",
    "expiration_seconds",
    "tags",
    "acls",
    "tagOwners",
    "candidates",
    "ice_ufrag",
    "ice_pwd",
]
bodies = st.dictionaries(
    st.sampled_from(FIELDS),
    json_values | st.sampled_from(["AUTH", "PUB", "h", ["tag:a"], ["192.0.2.1:1"]]),
    max_size=4,
)
ROUTES = [
    ("anon", "POST", "/register"),
    ("node", "POST", "/login"),
    ("node", "POST", "/node/endpoints"),
    ("node", "POST", "/node/candidates"),
    ("node", "GET", "/node/nat"),
    ("admin", "POST", "/users"),
    ("admin", "POST", "/preauthkeys"),
    ("admin", "POST", "/nodes/{id}/rename"),
    ("admin", "POST", "/nodes/{id}/tags"),
    ("admin", "POST", "/policy/check"),
    ("admin", "PUT", "/policy"),
    ("admin", "POST", "/apikeys"),
    ("admin", "DELETE", "/users/{text}"),
    ("admin", "GET", "/nodes?user={text}"),
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(ROUTES),
    body=bodies | json_values,
    raw=st.none() | st.binary(max_size=40),
    text=st.text(max_size=10),
)
def test_random_requests_never_break_the_server(
    server_in_loop: Any, route: tuple[str, str, str], body: Any, raw: bytes | None, text: str
) -> None:
    from urllib.parse import quote

    s = server_in_loop
    who, method, path = route
    path = path.replace("{id}", str(s.node.id)).replace("{text}", quote(text, safe=""))
    client = {"anon": s.r.admin.using(None), "node": s.node.client, "admin": s.r.admin}[who]
    if isinstance(body, dict):
        body = {
            k: {"AUTH": s.auth_key, "PUB": new_public_key()}.get(v, v) if isinstance(v, str) else v
            for k, v in body.items()
        }
    data = raw if raw is not None else json.dumps(body).encode()

    async def send() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
        async with client.session.request(
            method, client.url + "/api/v1" + path, data=data, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)

    status, reply = s.run(send())
    assert status < 500, (status, reply)
    if status >= 400:
        assert set(reply) == {"error"} and reply["error"] and "\n" not in reply["error"]
    if (method, path) == ("PUT", "/policy") and status == 200:
        s.run(client.call("DELETE", "/policy"))  # keep the policy open for the next example


def test_the_database_is_sound_after_the_random_requests(server_in_loop: Any) -> None:
    store = server_in_loop.r.server.store

    async def check() -> None:
        async with store.db.transaction() as tx:
            assert (await tx.fetch("PRAGMA integrity_check"))[0][0] == "ok"
            assert await tx.fetch("PRAGMA foreign_key_check") == []
        nodes = await store.nodes.all()  # every row still reads as a node
        assert nodes and all(n.hostname and n.user for n in nodes)
        users = await store.users.all()
        assert all(u.name for u in users)

    server_in_loop.run(check())
