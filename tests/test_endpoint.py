"""wgpy.endpoint: the one endpoint type, its two parsers, its text form and the core's key.

The rules are those of wg(8)'s config.c (``Endpoint.parse``) and Go's ``netip.ParseAddrPort``
(``Endpoint.parse_address``, what wireguard-go's UAPI takes)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgpy.api import parse_endpoint as api_parse_endpoint
from wgpy.config import resolve_endpoint
from wgpy.endpoint import Endpoint, host_text
from wgpy.mesh.server.errors import BadRequest
from wgpy.mesh.server.schemas import endpoints as schema_endpoints

LONG = "1" * 100_000


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("192.0.2.1:51820", "192.0.2.1", 51820),
        ("[2001:db8::1]:51820", "2001:db8::1", 51820),
        ("[2001:DB8:0:0:0:0:0:1]:1", "2001:db8::1", 1),
        ("[fe80::1%eth0]:51820", "fe80::1%eth0", 51820),
        ("[fe80::1%7]:51820", "fe80::1%7", 51820),
        ("[::ffff:192.0.2.1]:5", "::ffff:192.0.2.1", 5),  # Go's dotted form, not hex
        ("192.0.2.1:0", "192.0.2.1", 0),
        ("192.0.2.1:65535", "192.0.2.1", 65535),
        ("192.0.2.1:00065535", "192.0.2.1", 65535),
    ],
)
def test_parse_address(text: str, host: str, port: int) -> None:
    endpoint = Endpoint.parse_address(text)
    assert endpoint == Endpoint(host, port)
    assert Endpoint.parse_address(str(endpoint)) == endpoint  # the text form reads back
    assert Endpoint.from_key(endpoint.as_key()) == endpoint


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not ip:port"),
        ("192.0.2.1", "not ip:port"),
        ("192.0.2.1:", "no port"),
        (":51820", "no IP address"),
        ("192.0.2.1:65536", "0 to 65535"),
        ("192.0.2.1:-1", "0 to 65535"),
        ("192.0.2.1:+1", "0 to 65535"),
        ("192.0.2.1: 1", "0 to 65535"),
        ("192.0.2.1:1 ", "0 to 65535"),
        (" 192.0.2.1:1", "numeric IP address"),
        ("192.0.2.1:\u0661", "0 to 65535"),  # a digit of another script
        ("[192.0.2.1]:1", "only for IPv6"),
        ("::1:51820", "must be in square brackets"),
        ("[::1:1", "']' is missing"),
        ("[:1", "']' is missing"),
        ("[]:1", "numeric IP address"),
        ("[fe80::1%]:1", "numeric IP address"),
        ("192.0.2.1%eth0:1", "numeric IP address"),
        ("192.0.2.01:1", "numeric IP address"),
        ("example.com:51820", "never host names"),
        (f"{LONG}:1", "numeric IP address"),
        (f"192.0.2.1:{LONG}", "0 to 65535"),
        ("[" * 10_000, "not ip:port"),
    ],
)
def test_parse_address_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        Endpoint.parse_address(text)
    assert len(str(info.value)) < 100  # says what is wrong without quoting the input


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("192.0.2.1:51820", Endpoint("192.0.2.1", 51820)),
        ("[2001:db8::1]:1", Endpoint("2001:db8::1", 1)),
        ("[fe80::1%eth0]:1", Endpoint("fe80::1%eth0", 1)),
        ("vpn.example.com:0", Endpoint("vpn.example.com", 0)),
        ("2001:db8::1:51820", Endpoint("2001:db8::1", 51820)),  # wg splits at the last colon
        ("[192.0.2.1]:7", Endpoint("192.0.2.1", 7)),  # as wg takes it
    ],
)
def test_parse(text: str, endpoint: Endpoint) -> None:
    assert Endpoint.parse(text) == endpoint


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "got nothing"),
        ("host", "expected host:port"),
        ("host:", "expected host:port"),
        (":1", "no host"),
        ("[::1]", "no port after"),
        ("[::1]:", "no port after"),
        ("[::1", "no ']'"),
        ("[::1]x1", "no port after"),
        ("[]:1", "no host"),
        ("h:65536", "0 to 65535"),
        ("h:-1", "0 to 65535"),
        ("h: 1", "0 to 65535"),
        ("h:no-such-service-here", "not a port number or a known UDP service"),
        (f"h:{LONG}", "0 to 65535"),
    ],
)
def test_parse_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Endpoint.parse(text)


def test_parse_quotes_long_text_cut_short() -> None:
    with pytest.raises(ValueError) as info:
        Endpoint.parse(f"h:{LONG}")
    assert len(str(info.value)) < 200 and "more" in str(info.value)


def test_parse_takes_service_names() -> None:
    try:
        import socket

        port = socket.getservbyname("domain", "udp")
    except OSError:  # pragma: no cover - a system without /etc/services
        pytest.skip("no services database")
    assert Endpoint.parse("vpn.example:domain") == Endpoint("vpn.example", port)


def test_text_form() -> None:
    assert str(Endpoint("2001:db8::1", 7)) == "[2001:db8::1]:7"
    assert str(Endpoint("fe80::1%eth0", 7)) == "[fe80::1%eth0]:7"
    assert str(Endpoint("192.0.2.1", 7)) == "192.0.2.1:7"
    assert str(Endpoint("vpn.example.com", 7)) == "vpn.example.com:7"
    assert Endpoint("fe80::1%eth0", 7).is_numeric
    assert not Endpoint("vpn.example.com", 7).is_numeric


def test_frozen_and_hashable() -> None:
    endpoint = Endpoint("192.0.2.1", 7)
    with pytest.raises(AttributeError):
        endpoint.port = 8  # type: ignore[misc]
    assert {endpoint, Endpoint("192.0.2.1", 7)} == {endpoint}


def test_keys_both_ways() -> None:
    """The core's keys: (host, port), and (host, port, source) read from the network."""
    endpoint = Endpoint.parse_address("[2001:db8::1]:51820")
    assert endpoint.as_key() == ("2001:db8::1", 51820)
    source = (41, 50, bytes(20))  # an IPV6_PKTINFO control message
    assert Endpoint.from_key(("2001:db8::1", 51820, source)) == endpoint  # the source goes
    assert Endpoint.from_key(("2001:db8::1", 51820, 0, 0)) == endpoint  # a socket address
    for other in (None, "192.0.2.1:1", ("192.0.2.1",), (1, 2), ("192.0.2.1", "1"), object()):
        assert Endpoint.from_key(other) is None


def test_from_address() -> None:
    mapped = ipaddress.ip_address("::ffff:192.0.2.1")
    assert str(Endpoint.from_address(mapped, 1)) == "[::ffff:192.0.2.1]:1"
    assert str(Endpoint.from_address(ipaddress.ip_address("192.0.2.1"), 1)) == "192.0.2.1:1"
    assert host_text(ipaddress.ip_address("2001:DB8::1")) == "2001:db8::1"


@given(st.ip_addresses(), st.integers(0, 65535))
def test_address_round_trip(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    endpoint = Endpoint.from_address(address, port)
    assert Endpoint.parse_address(str(endpoint)) == endpoint
    assert Endpoint.parse(str(endpoint)) == endpoint


@given(st.text(max_size=80))
def test_random_text_raises_only_value_error(text: str) -> None:
    for parse in (Endpoint.parse_address, Endpoint.parse):
        try:
            endpoint = parse(text)
        except ValueError:
            continue
        assert 0 <= endpoint.port <= 65535


def test_library_parser_resolves_and_refuses() -> None:
    """wgpy.api takes host names (resolved once) and refuses port 0."""
    assert api_parse_endpoint("192.0.2.1:51820") == ("192.0.2.1", 51820)
    assert api_parse_endpoint("[2001:db8::1]:1") == ("2001:db8::1", 1)
    assert api_parse_endpoint("localhost:7")[1] == 7
    for bad in ("192.0.2.1:0", "192.0.2.1", "[::1", ":1", "h:65536"):
        with pytest.raises(ValueError, match="is not host:port or \\[ipv6\\]:port"):
            api_parse_endpoint(bad)
    with pytest.raises(OSError):
        api_parse_endpoint("nowhere.invalid:1")


@pytest.mark.parametrize("host", ["a" * 300, "a..b", "\0"])
def test_hostile_host_names_fail_to_resolve_cleanly(host: str) -> None:
    """What the IDNA codec refuses is a resolver error (OSError), as wg reports it."""
    with pytest.raises(OSError):
        resolve_endpoint(Endpoint(host, 1), retries=0)
    with pytest.raises(OSError):
        api_parse_endpoint(f"{host}:1")


def test_server_schema_normalizes_and_refuses() -> None:
    """The coordination server's endpoints: numeric, no zone, no port 0, at most 64 bytes."""
    assert schema_endpoints("e", ["[2001:DB8::1]:1", "192.0.2.1:2", "192.0.2.1:2"]) == (
        "[2001:db8::1]:1",
        "192.0.2.1:2",
    )
    for bad in ("192.0.2.1:0", "[fe80::1%eth0]:1", "[192.0.2.1]:1", "host:1", 7, "1" * 65):
        with pytest.raises(BadRequest, match="is not an endpoint"):
            schema_endpoints("e", [bad])
