"""The server's NAT configuration (GET /api/v1/node/nat) and TURN URLs, read as hostile
input: unusable entries are left out and counted, never trusted, never fatal."""

from __future__ import annotations

from typing import Any

import pytest

from wgpy.endpoint import Endpoint
from wgpy.nat.servers import (
    DEFAULT_REFRESH,
    MAX_ENTRIES,
    MAX_STUN_SERVERS,
    MIN_REFRESH,
    TurnUrl,
    parse_nat_config,
    parse_turn_url,
)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("turn:relay.example", ("relay.example", 3478, "udp", False)),
        ("turn:relay.example:3479?transport=udp", ("relay.example", 3479, "udp", False)),
        ("turn:192.0.2.7:3478?transport=tcp", ("192.0.2.7", 3478, "tcp", False)),
        ("turns:relay.example:443?transport=tcp", ("relay.example", 443, "tcp", True)),
        ("turns:relay.example", ("relay.example", 5349, "tcp", True)),
        ("TURN:[2001:db8::7]:3478", ("2001:db8::7", 3478, "udp", False)),
        ("turn:[2001:db8::7]", ("2001:db8::7", 3478, "udp", False)),
    ],
)
def test_turn_urls(text: str, url: tuple[str, int, str, bool]) -> None:
    parsed = parse_turn_url(text)
    assert (parsed.host, parsed.port, parsed.transport, parsed.secure) == url
    assert parsed.text == text


def test_turn_url_kinds_and_addresses() -> None:
    assert parse_turn_url("turns:r:443").kind == "tls"
    assert parse_turn_url("turn:r?transport=tcp").kind == "tcp"
    assert parse_turn_url("turn:[2001:db8::7]").address == "[2001:db8::7]:3478"
    assert parse_turn_url("turn:r").address == "r:3478"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("stun:relay.example", "starts with turn: or turns:"),
        ("relay.example:3478", "starts with turn: or turns:"),
        ("turn:", "no usable host"),
        ("turn:relay.example:0", "from 1 to 65535"),
        ("turn:relay.example:99999", "from 1 to 65535"),
        ("turn:relay.example:34x", "from 1 to 65535"),
        ("turn:relay.example?transport=sctp", "transport=udp or tcp"),
        ("turn:relay.example?foo=bar", "transport=udp or tcp"),
        ("turns:relay.example?transport=udp", "DTLS is not supported"),
        ("turn:[relay.example]:3478", "only an IPv6 address"),
        ("turn:[2001:db8::7:3478", "']' is missing"),
        ("turn:2001:db8::7", "square brackets"),
        ("turn:user@relay.example", "no usable host"),
        ("turn:" + "a" * 600, "too long"),
    ],
)
def test_bad_turn_urls(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_turn_url(text)


def test_nat_config_as_the_contract_writes_it() -> None:
    raw = {
        "stun": ["192.0.2.1:3478", "[2001:db8::1]:3478", "192.0.2.1:3478", "Mesh.Example:3478"],
        "turn": [
            {
                "urls": [
                    "turn:relay.example:3478?transport=udp",
                    "turn:relay.example:3478?transport=tcp",
                    "turns:relay.example:443?transport=tcp",
                ],
                "username": "1767225600:7",
                "password": "c2VjcmV0",
                "expires": 1767225600,
            }
        ],
        "refresh": 300,
    }
    config = parse_nat_config(raw)
    assert config.stun == (
        Endpoint("192.0.2.1", 3478),
        Endpoint("2001:db8::1", 3478),
        Endpoint("mesh.example", 3478),  # the name the node reached the server by
    )
    (relay,) = config.turn
    assert relay.name == "relay.example"
    assert [u.kind for u in relay.urls] == ["udp", "tcp", "tls"]
    assert (relay.username, relay.expires) == ("1767225600:7", 1767225600)
    assert "c2VjcmV0" not in repr(relay)  # the password is a secret
    assert config.refresh == 300 and config.skipped == 0


@pytest.mark.parametrize(
    "raw",
    [
        {"stun": "192.0.2.1:3478"},
        {"stun": [1, None, "192.0.2.1", "192.0.2.1:0", "x" * 1000, "a b:1", "-x:1", "n:stun"]},
        {"turn": [{"urls": ["turn:r"], "username": "u", "password": 5, "expires": 1}]},
        {"turn": [{"urls": ["stun:r"], "username": "u", "password": "p", "expires": 1}]},
        {"turn": [{"urls": [], "username": "u", "password": "p", "expires": 1}]},
        {"turn": [{"urls": ["turn:r"], "username": "u", "password": "p", "expires": True}]},
        {"turn": ["turn:r"]},
        {"refresh": "soon"},
        {},
    ],
)
def test_unusable_entries_are_left_out(raw: dict[str, Any]) -> None:
    config = parse_nat_config(raw)
    assert config.stun == () and config.turn == ()
    assert config.refresh == DEFAULT_REFRESH
    if raw and "refresh" not in raw and isinstance(next(iter(raw.values())), list):
        assert config.skipped > 0


def test_refresh_is_bounded_and_the_document_must_be_an_object() -> None:
    assert parse_nat_config({"refresh": 0.001}).refresh == MIN_REFRESH
    assert parse_nat_config({"refresh": 10**12}).refresh == 86400
    assert parse_nat_config({"refresh": -5}).refresh == DEFAULT_REFRESH
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_nat_config(["192.0.2.1:3478"])
    # a turn server with one good URL among bad ones keeps the good one
    config = parse_nat_config(
        {"turn": [{"urls": ["x", 5, "turn:r:1"], "username": "u", "password": "p", "expires": 1.5}]}
    )
    assert [u for u in config.turn[0].urls] == [
        TurnUrl(secure=False, host="r", port=1, transport="udp", text="turn:r:1")
    ]


def test_a_huge_answer_is_read_only_so_far() -> None:
    config = parse_nat_config({"stun": ["x"] * 100_000 + ["192.0.2.1:3478"], "turn": [0] * 100_000})
    assert config.stun == () and config.skipped == 2 * MAX_ENTRIES
    config = parse_nat_config({"stun": [f"192.0.2.{i}:3478" for i in range(1, 200)]})
    assert len(config.stun) == MAX_STUN_SERVERS
