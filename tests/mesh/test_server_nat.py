"""NAT traversal at the server: ``POST /api/v1/node/candidates`` (stored, validated, fanned
out to the peers), ``GET /api/v1/node/nat`` (STUN addresses, TURN credentials), and the
pure parts of wgpy/mesh/server/nat.py. On both backends where the database is involved."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from wgpy.cli import ExitStatus
from wgpy.mesh.server import ServerConfig, migrations
from wgpy.mesh.server.nat import (
    NatConfigError,
    TurnSettings,
    TurnUrl,
    api_host,
    load_turn_secret,
    stun_addresses,
    turn_password,
)
from wgpy.mesh.server.service import ServerError
from wgpy.mesh.server.store import open_store
from wgpy.mesh.server.store.nodes import NODE_EXPIRED

from .conftest import (
    ApiError,
    Client,
    Database,
    new_public_key,
    open_map,
    register,
    running,
    with_,
)
from .support import run

UFRAG = "Ab3+"
PWD = "abcdefghijklmnopqrstu/"
HOST = "a1 1 udp 2130706431 192.0.2.1 41641 typ host"
SRFLX = "b2 1 udp 1694498815 203.0.113.5 51820 typ srflx raddr 192.0.2.1 rport 41641"


OMIT = object()


def ice(candidates: Any = None, ufrag: Any = UFRAG, pwd: Any = OMIT) -> dict[str, Any]:
    """A report as a node sends it; with ``pwd``, as a node before per-pair keys did."""
    body = {"ice_ufrag": ufrag, "candidates": [HOST, SRFLX] if candidates is None else candidates}
    if pwd is not OMIT:
        body["ice_pwd"] = pwd
    return body


def secret_file(tmp_path: Path, secret: bytes = b"s3cret-of-coturn\n", mode: int = 0o600) -> Path:
    path = tmp_path / "turn-secret"
    path.write_bytes(secret)
    path.chmod(mode)
    return path


# ---------------------------------------------------------------------- candidates


async def test_candidates_are_stored_and_fanned_out_to_peers(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        a = await register(r.admin, key, "a")
        b = await register(r.admin, key, "b")
        b_map = await open_map(b)
        assert not {"candidates", "ice_ufrag", "ice_pwd"} & set(b_map.peers[a.public_key])

        # a node before per-pair keys sends a password too: taken, never shown to anyone
        assert await a.client.call("POST", "/node/candidates", ice(pwd=PWD)) == {}
        await b_map.until(lambda m: m.peers[a.public_key].get("candidates") == [HOST, SRFLX])
        peer = b_map.peers[a.public_key]
        assert peer["ice_ufrag"] == UFRAG and "ice_pwd" not in peer
        assert b_map.messages[-1]["type"] == "peer_upsert"

        # the same again (without the password) changes nothing; new ones replace the old
        await a.client.call("POST", "/node/candidates", ice())
        await a.client.call("POST", "/node/candidates", ice([SRFLX], ufrag="Zz99"))
        await b_map.until(lambda m: m.peers[a.public_key]["ice_ufrag"] == "Zz99")
        assert b_map.peers[a.public_key]["candidates"] == [SRFLX]
        upserts = [m for m in b_map.messages if m["type"] == "peer_upsert"]
        assert len(upserts) == 2

        # the node's own record (and the admin's view) carries no ICE password
        a_map = await open_map(a)
        assert a_map.self_node is not None and "ice_pwd" not in a_map.self_node
        nodes = (await r.admin.call("GET", "/nodes"))["nodes"]
        assert all("ice_pwd" not in n for n in nodes)
        a_map.close()
        b_map.close()

    # kept across a restart
    async with running(config) as r:
        b_map = await open_map(Client(r.session, r.url, b.token))
        assert b_map.peers[a.public_key]["candidates"] == [SRFLX]
        b_map.close()


async def test_a_node_that_reports_too_often_gets_429_and_others_do_not(
    config: ServerConfig,
) -> None:
    """Each report goes to every peer, and each peer then checks (sends to) the candidates:
    a node gets report_burst (20) reports at once, endpoints and candidates together, then
    report_rate (0.5) a second; the rest get 429 with a sentence and Retry-After. Another
    node reports as usual."""
    assert (config.report_burst, config.report_rate) == (20, 0.5)  # the defaults
    burst = int(config.report_burst)
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        a = await register(r.admin, key, "a")
        b = await register(r.admin, key, "b")
        codes = []
        for i in range(burst + 5):
            body = ice([f"a{i} 1 udp 1 192.0.2.{i + 1} 9 typ host"])
            if i % 2:
                body = {"endpoints": [f"192.0.2.{i + 1}:9"]}
                path = "/node/endpoints"
            else:
                path = "/node/candidates"
            try:
                await a.client.call("POST", path, body)
                codes.append(200)
            except ApiError as e:
                codes.append(e.status)
        assert codes.count(200) in (burst, burst + 1)  # + what refilled meanwhile
        assert set(codes[burst + 1 :]) == {429}
        message = await a.client.error("POST", "/node/candidates", ice(), status=429)
        assert message.startswith("too many endpoint, candidate or route reports from this node")
        assert await b.client.call("POST", "/node/candidates", ice()) == {}


async def test_candidates_are_canonical_and_deduplicated(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        a = await register(r.admin, key, "a")
        b = await register(r.admin, key, "b")
        messy = "c3 1 UDP 99 2001:DB8:0::1 9 typ relay raddr 203.0.113.5 rport 1"
        await a.client.call("POST", "/node/candidates", ice([messy, HOST, messy]))
        b_map = await open_map(b)
        assert b_map.peers[a.public_key]["candidates"] == [
            "c3 1 udp 99 2001:db8::1 9 typ relay raddr 203.0.113.5 rport 1",
            HOST,
        ]
        b_map.close()


HOSTILE = [
    (ice("x"), '"candidates" must be a list of at most 16 candidates'),
    (ice({"a": 1}), '"candidates" must be a list of at most 16 candidates'),
    (ice([HOST] * 17), '"candidates" holds 17 candidates; at most 16 are taken'),
    (ice(["x" * 300]), '"candidates"[0] is not a usable candidate: a candidate is longer than 256'),
    (ice([HOST, 5]), '"candidates"[1] is not a usable candidate: a candidate must be a string'),
    (
        ice(["a 1 udp 1 relay.example 9 typ host"]),
        "its address 'relay.example' is not an IP address (names are not taken)",
    ),
    (ice(["a 2 udp 1 192.0.2.1 9 typ host"]), "its component is '2'; only 1"),
    (ice(["a 1 tcp 1 192.0.2.1 9 typ host"]), "its transport is 'tcp'; only udp"),
    (ice(["a 1 udp 1 192.0.2.1 9 typ prflx"]), "its type must be 'typ host'"),
    (ice(["a 1 udp 1 0.0.0.0 9 typ host"]), "not an address a peer can send to"),
    (ice(ufrag="abc"), '"ice_ufrag" must be a string of 4 to 64 characters'),
    (ice(ufrag="a" * 65), '"ice_ufrag" must be a string of 4 to 64 characters'),
    (ice(ufrag="abc;d"), "\"ice_ufrag\" may hold only letters, digits, '+' and '/'"),
    (ice(pwd="short"), '"ice_pwd" must be a string of 22 to 64 characters'),
    (ice(pwd="a" * 21 + "\n"), "\"ice_pwd\" may hold only letters, digits, '+' and '/'"),
    (ice(pwd=None), '"ice_pwd" must be a string of 22 to 64 characters'),
    ({"candidates": [HOST]}, 'missing field "ice_ufrag"'),
    ({**ice(), "endpoints": []}, 'unknown field "endpoints"'),
    ([HOST], "the body must be a JSON object"),
]


async def test_hostile_candidates_get_a_400_with_a_sentence(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        a = await register(r.admin, key, "a")
        b = await register(r.admin, key, "b")
        for body, says in HOSTILE:
            message = await a.client.error("POST", "/node/candidates", body, status=400)
            assert says in message, (body, message)
        b_map = await open_map(b)
        assert "candidates" not in b_map.peers[a.public_key]  # nothing was stored
        b_map.close()
        await a.client.using(None).error("POST", "/node/candidates", ice(), status=401)
        await r.admin.error("POST", "/node/candidates", ice(), status=401)
        await r.admin.call("POST", f"/nodes/{a.id}/expire")
        message = await a.client.error("POST", "/node/candidates", ice(), status=403)
        assert message == NODE_EXPIRED


# ---------------------------------------------------------------------- GET /node/nat


async def test_nat_without_relays_reports_stun_as_the_node_reached_the_api(
    config: ServerConfig,
) -> None:
    stun = (("127.0.0.1", 0), ("", 0))  # one address, and every address (0.0.0.0 and ::)
    async with running(with_(config, stun_listen=stun)) as r:
        (_, one), (_, v4), (v6_host, _) = r.server.stun_addresses
        assert v6_host == "::"
        await r.admin.user("alice")
        node = await register(r.admin, await r.admin.auth_key("alice"), "a")
        reply = await node.client.call("GET", "/node/nat")
        assert reply == {
            "stun": [f"127.0.0.1:{one}", f"127.0.0.1:{v4}"],  # :: does not fit an IPv4 host
            "turn": [],
            "refresh": 43200,
        }
        await node.client.using(None).error("GET", "/node/nat", status=401)


async def test_nat_hands_out_coturn_credentials(tmp_path: Path, config: ServerConfig) -> None:
    urls = (
        "turn:relay.example:3478?transport=udp",
        "turn:relay.example:3478?transport=tcp",
        "turns:relay.example:443?transport=tcp",
        "turn:[2001:db8::3]",
    )
    now = 1_800_000_000.0
    config = with_(config, turn_urls=urls, turn_secret_file=secret_file(tmp_path), turn_ttl=600)
    async with running(config, clock=lambda: now) as r:
        await r.admin.user("alice")
        node = await register(r.admin, await r.admin.auth_key("alice"), "a")
        reply = await node.client.call("GET", "/node/nat")
    username = f"{int(now) + 600}:{node.id}"
    password = turn_password(b"s3cret-of-coturn", username)
    assert reply == {
        "stun": [],
        "turn": [
            {"urls": list(urls[:3]), "username": username, "password": password,
             "expires": int(now) + 600},
            {"urls": [urls[3]], "username": username, "password": password,
             "expires": int(now) + 600},
        ],
        "refresh": 300,
    }  # fmt: skip


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_turn_password_is_coturns_hmac_sha1_as_openssl_computes_it() -> None:
    username = "1800000600:7"
    digest = subprocess.run(
        ["openssl", "dgst", "-sha1", "-binary", "-hmac", "s3cret"],
        input=username.encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert turn_password(b"s3cret", username) == base64.b64encode(digest).decode()


def test_stun_addresses() -> None:
    listening = [("0.0.0.0", 3478), ("::", 3478), ("192.0.2.9", 3479), ("2001:db8::9", 3479)]
    assert stun_addresses(listening, "192.0.2.1") == [
        "192.0.2.1:3478", "192.0.2.9:3479", "[2001:db8::9]:3479"
    ]  # fmt: skip
    assert stun_addresses(listening, "2001:db8::1") == [
        "[2001:db8::1]:3478", "192.0.2.9:3479", "[2001:db8::9]:3479"
    ]  # fmt: skip
    assert stun_addresses(listening[:2], "mesh.example") == ["mesh.example:3478"]


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("mesh.example", "mesh.example"),
        ("Mesh.Example.:8443", "mesh.example"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        (None, None),
        ("", None),
        ("a b", None),
        ("[nonsense]:1", None),
        ("x" * 300, None),
        ("evil/path:1", None),
    ],
)
def test_api_host(header: str | None, host: str | None) -> None:
    assert api_host(header) == host


@pytest.mark.parametrize(
    "url",
    [
        "turn:relay.example",
        "turn:relay.example:3478",
        "turn:192.0.2.1:3478?transport=udp",
        "turn:[2001:db8::1]:3478?transport=tcp",
        "turns:relay.example:443?transport=tcp",
        "turns:relay.example",
    ],
)
def test_turn_urls(url: str) -> None:
    assert TurnUrl.parse(url).text == url


@pytest.mark.parametrize(
    "url",
    [
        "relay.example:3478",
        "stun:relay.example",
        "turn:",
        "turn:relay.example:0",
        "turn:relay.example:70000",
        "turn:relay.example?transport=sctp",
        "turn:user@relay.example",
        "turn:[not-v6]:3478",
        "turn:relay.example:3478/path",
        "turn:-bad-.example",
        "turn://relay.example",
    ],
)
def test_bad_turn_urls(url: str) -> None:
    with pytest.raises(NatConfigError, match="is not a TURN URL"):
        TurnUrl.parse(url)
    with pytest.raises(NatConfigError, match="runs over TCP"):
        TurnUrl.parse("turns:relay.example?transport=udp")


def test_the_secret_file_must_be_the_owners_alone(tmp_path: Path) -> None:
    assert load_turn_secret(secret_file(tmp_path)) == b"s3cret-of-coturn"
    assert load_turn_secret(secret_file(tmp_path, mode=0o400)) == b"s3cret-of-coturn"
    path = secret_file(tmp_path, mode=0o640)
    with pytest.raises(NatConfigError) as e:
        load_turn_secret(path)
    assert str(e.value) == (
        f"the TURN secret file {path} can be read or written by others (mode 0640); make it "
        f"the owner's alone: chmod 600 {path}"
    )
    with pytest.raises(NatConfigError, match="is empty"):
        load_turn_secret(secret_file(tmp_path, b" \n"))
    with pytest.raises(NatConfigError, match="No such file"):
        load_turn_secret(tmp_path / "missing")
    with pytest.raises(NatConfigError, match="longer than 4096 bytes"):
        load_turn_secret(secret_file(tmp_path, b"x" * 5000))
    link = tmp_path / "link"
    link.symlink_to(secret_file(tmp_path))
    with pytest.raises(NatConfigError, match="cannot read the TURN secret file"):
        load_turn_secret(link)


def test_the_secret_is_never_shown() -> None:
    settings = TurnSettings((TurnUrl.parse("turn:r.example"),), b"hunter2-secret", 60)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


async def test_a_bad_secret_file_stops_the_server_with_a_sentence(
    tmp_path: Path, config: ServerConfig
) -> None:
    path = secret_file(tmp_path, mode=0o644)
    bad = with_(config, turn_urls=("turn:r.example",), turn_secret_file=path)
    with pytest.raises(ServerError, match="can be read or written by others"):
        async with running(bad):
            pass
    with pytest.raises(ServerError, match="--turn needs --turn-secret FILE"):
        async with running(with_(config, turn_urls=("turn:r.example",))):
            pass


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--turn", "stun:x.example"],
            "--turn 'stun:x.example' is not a TURN URL; expected turn:HOST[:PORT]"
            "[?transport=udp|tcp] or turns:HOST[:PORT][?transport=tcp], e.g. "
            "turns:relay.example:443?transport=tcp",
        ),
        (["--turn-ttl", "10"], "--turn-ttl must be from 60 to 2592000 seconds (default 86400)"),
    ],
)
def test_bad_turn_flags_are_usage_errors(argv: list[str], error: str) -> None:
    status, out, err = run("server", *argv)
    assert (status, out, err) == (ExitStatus.USAGE, "", f"wgpy server: {error}\n")


def test_a_missing_secret_is_an_error_before_serving(tmp_path: Path) -> None:
    argv = ["server", "--state-dir", str(tmp_path), "--listen", "127.0.0.1:0", "--stun-listen"]
    status, out, err = run(*argv, "off", "--turn", "turn:r.example", "--turn-secret", "/nope")
    assert status == ExitStatus.ERROR and out == ""
    assert err == "wgpy server: cannot read the TURN secret file /nope: No such file or directory\n"
    status, _, err = run(*argv, "off", "--turn-secret", str(secret_file(tmp_path)))
    assert err == "wgpy server: --turn-secret needs the relay's address: add --turn URL\n"


async def test_a_database_of_schema_2_is_upgraded_with_its_nodes(
    backend: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 3 adds the ICE columns to the nodes an older server made: they read as a
    node that reported no candidates, and can report some."""
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
    monkeypatch.setattr(migrations, "LATEST", 2)
    old = await open_store(
        state_dir=database.state_dir, database_url=database.database_url, replica="old"
    )
    try:
        async with old.db.transaction() as tx:
            user = await tx.fetchval(
                "INSERT INTO users (name, created_at) VALUES ('alice', 0) RETURNING id"
            )
            node = await tx.fetchval(
                "INSERT INTO nodes (user_id, hostname, public_key, addr_index, endpoints, tags,"
                " ephemeral, created_at) VALUES (?, 'a', ?, 1, '[\"192.0.2.1:1\"]', '[]', FALSE,"
                " 0) RETURNING id",
                user,
                new_public_key(),
            )
    finally:
        await old.close()
    monkeypatch.undo()
    store = await open_store(
        state_dir=database.state_dir, database_url=database.database_url, replica="new"
    )
    try:
        before = await store.nodes.get(int(node))
        assert before.endpoints == ("192.0.2.1:1",)
        assert (before.candidates, before.ice_ufrag) == ((), "")
        after = await store.ice.report(int(node), UFRAG, (HOST,))
        assert (after.candidates, after.ice_ufrag) == ((HOST,), UFRAG)
    finally:
        await store.close()
