"""The node's side of the NAT endpoints: ``NodeClient.report_candidates`` and ``nat_config``
against the real server, and the netmap's reading of a peer's ICE fields and of the NAT
settings as hostile input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wgpy.endpoint import Endpoint
from wgpy.mesh.client.api import ApiError, NodeClient
from wgpy.mesh.client.netmap import parse_peer
from wgpy.mesh.client.reconcile import Current, full_map, peer_upsert
from wgpy.mesh.server import ServerConfig
from wgpy.mesh.server.nat import turn_password
from wgpy.nat.servers import parse_nat_config

from .conftest import open_map, register, running, with_

KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
HOST = "a1 1 udp 2130706431 192.0.2.1 41641 typ host"
SRFLX = "b2 1 udp 1694498815 203.0.113.5 51820 typ srflx raddr 192.0.2.1 rport 41641"
UFRAG, PWD = "Ab3+", "abcdefghijklmnopqrstu/"


def peer(**fields: Any) -> dict[str, Any]:
    return {"public_key": KEY, "addresses": ["100.64.0.2/32"], "hostname": "b", **fields}


# ---------------------------------------------------------------------- against the server


async def test_report_candidates_and_nat_config_against_the_real_server(
    tmp_path: Path, config: ServerConfig
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("shared")
    secret.chmod(0o600)
    config = with_(
        config,
        stun_listen=(("127.0.0.1", 0),),
        turn_urls=("turn:127.0.0.1:3478?transport=udp", "turns:relay.example:443?transport=tcp"),
        turn_secret_file=secret,
        turn_ttl=3600,
    )
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        a = await register(r.admin, key, "a")
        b = await register(r.admin, key, "b")
        async with NodeClient(r.url, token=a.token) as client:
            await client.report_candidates(UFRAG, [HOST, SRFLX])
            nat = await client.nat_config()
            with pytest.raises(ApiError) as e:
                await client.report_candidates("abc", [HOST])
            assert e.value.status == 400
            assert e.value.message == '"ice_ufrag" must be a string of 4 to 64 characters'
        b_map = await open_map(b)
        record = parse_peer(b_map.peers[a.public_key])
        assert record.candidates == (HOST, SRFLX)
        assert (record.ice_ufrag, record.dropped_candidates) == (UFRAG, ())
        assert "ice_pwd" not in b_map.peers[a.public_key]  # no password: per-pair keys
        b_map.close()
        (stun_port,) = [p for _, p in r.server.stun_addresses]
    assert nat.stun == (Endpoint("127.0.0.1", stun_port),)
    assert nat.refresh == 1800
    assert len(nat.turn) == 2
    first = nat.turn[0]
    assert [u.text for u in first.urls] == ["turn:127.0.0.1:3478?transport=udp"]
    assert first.username.endswith(f":{a.id}")
    assert first.password == turn_password(b"shared", first.username)
    assert "shared" not in repr(nat) and first.password not in repr(nat)


async def test_nat_config_needs_a_node_token(config: ServerConfig) -> None:
    async with running(config) as r, NodeClient(r.url, token=None) as client:
        with pytest.raises(ApiError) as e:
            await client.nat_config()
        assert e.value.status == 401


# ---------------------------------------------------------------------- the netmap


def test_a_peers_ice_fields() -> None:
    record = parse_peer(peer(candidates=[HOST, SRFLX, HOST], ice_ufrag=UFRAG))
    assert record.candidates == (HOST, SRFLX)
    assert (record.ice_ufrag, record.dropped_candidates) == (UFRAG, ())
    # a server before per-pair keys also sends the peer's password: ignored
    assert parse_peer(peer(candidates=[HOST, SRFLX], ice_ufrag=UFRAG, ice_pwd=PWD)) == record
    assert not hasattr(record, "ice_pwd")
    old = parse_peer(peer())  # an older server: none
    assert (old.candidates, old.ice_ufrag, old.dropped_candidates) == ((), "", ())


@pytest.mark.parametrize(
    ("fields", "kept", "why"),
    [
        (
            {"candidates": [HOST, "a 1 udp 1 evil.example 9 typ host", 7, SRFLX]},
            (HOST, SRFLX),
            ["#1: its address 'evil.example' is not an IP address", "#2: a candidate must be"],
        ),
        ({"candidates": [HOST] + [SRFLX] * 20}, (HOST, SRFLX), ["5 beyond the first 16"]),
        ({"candidates": "192.0.2.1:1"}, (), ["all: 'candidates' is not a list"]),
        ({"candidates": [HOST], "ice_pwd": "x"}, (HOST,), []),  # an old server's: ignored
        ({"candidates": [HOST], "ice_ufrag": None}, (), ["all: the peer's ICE ufrag"]),
        ({"candidates": [HOST], "ice_ufrag": "a:b"}, (), ["all: the peer's ICE ufrag"]),
        ({"candidates": ["a 1 udp 1 0.0.0.0 9 typ host"]}, (), ["#0: its address 0.0.0.0"]),
    ],
)
def test_bad_candidates_are_dropped_and_the_peer_kept(
    fields: dict[str, Any], kept: tuple[str, ...], why: list[str]
) -> None:
    data = peer(ice_ufrag=UFRAG, endpoints=["192.0.2.2:1"])
    data.update(fields)
    record = parse_peer(data)
    assert record.candidates == kept
    assert record.hostname == "b" and record.endpoint == ("192.0.2.2", 1)
    assert record.ice_ufrag == (UFRAG if kept else "")
    assert len(record.dropped_candidates) == len(why)
    for reason, expected in zip(record.dropped_candidates, why, strict=True):
        assert reason.startswith(expected), reason


def test_dropped_candidates_are_logged_by_the_plans() -> None:
    bad = peer(candidates=[HOST, "junk"], ice_ufrag=UFRAG)
    current = Current(public_key=b"\x01" * 32, peers={}, device={})
    for plan in (
        peer_upsert({"type": "peer_upsert", "peer": bad}, current),
        full_map({"type": "full", "self": {}, "peers": [bad]}, current),
    ):
        skipped = [s for s in plan.skipped if "ICE candidates" in s.event]
        assert len(skipped) == 1
        assert skipped[0].event == "unusable ICE candidates of peer 'b' dropped"
        assert skipped[0].error is not None and skipped[0].error.startswith("#1: ")
    good = peer_upsert({"peer": peer(candidates=[HOST], ice_ufrag=UFRAG)}, current)
    assert good.skipped == ()


GOOD_STUN = "192.0.2.1:3478"


@pytest.mark.parametrize(
    "data",
    [
        {"stun": ["192.0.2.1"]},
        {"stun": ["192.0.2.1:0"]},
        {"stun": ["evil host:1"]},
        {"turn": [1]},
        {"turn": [{"urls": ["http://x"], "username": "u", "password": "p", "expires": 1}]},
        {"turn": [{"urls": ["turn:x"], "username": "u", "expires": 1}]},
        {"turn": [{"urls": ["turn:x"], "username": "u", "password": "p"}]},
    ],
)  # fmt: skip
def test_unusable_nat_entries_are_left_out_and_counted(data: dict[str, Any]) -> None:
    """One bad entry from the server costs that entry, not the node its other servers."""
    config = parse_nat_config({"stun": [GOOD_STUN], **data})
    assert config.skipped == 1
    assert Endpoint.parse_address(GOOD_STUN) in config.stun or "stun" in data
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_nat_config([])
