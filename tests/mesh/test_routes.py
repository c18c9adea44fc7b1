"""Subnet routes without I/O (server/routes.py): the prefixes a node may advertise, exit
nodes, and the stable choice of one primary router per prefix."""

from __future__ import annotations

import ipaddress

import pytest

from wgpy.mesh.server.errors import BadRequest
from wgpy.mesh.server.routes import (
    MAX_ROUTES,
    HostBitsSet,
    Router,
    is_exit,
    parse_prefix,
    parse_routes,
    primaries,
    strict_prefix,
)

net = ipaddress.ip_network


def test_prefixes_are_parsed_in_network_form() -> None:
    assert parse_prefix("192.168.1.0/24") == net("192.168.1.0/24")
    assert parse_prefix("fd00:1::/64") == net("fd00:1::/64")
    assert parse_prefix("10.1.2.3/32") == net("10.1.2.3/32")
    assert parse_prefix("0.0.0.0/0") == net("0.0.0.0/0")
    assert parse_prefix("::/0") == net("::/0")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("192.168.1.7/24", "host bits set; advertise the network 192.168.1.0/24"),
        ("10.0.0.1", "no prefix length; write it as 10.0.0.1/32 for the one address"),
        ("fd00::1", "write it as fd00::1/128"),
        ("banana", '"banana" is not a prefix'),
        ("banana/24", "is not a prefix"),
        ("10.0.0.0/33", "is not a prefix"),
        ("100.64.0.0/10", "overlaps the mesh's own range 100.64.0.0/10"),
        ("100.100.100.0/24", "overlaps the mesh's own range"),
        ("100.0.0.0/8", "overlaps the mesh's own range"),  # around it
        ("fd7a:115c:a1e0::/64", "overlaps the mesh's own range fd7a:115c:a1e0::/48"),
        ("fd7a::/16", "overlaps the mesh's own range"),
        ("224.0.0.0/4", "link-local or multicast"),
        ("169.254.0.0/16", "link-local or multicast"),
        ("fe80::/64", "link-local or multicast"),
        ("", "each route must be a prefix"),
        ("1" * 65, "each route must be a prefix"),
        (24, "each route must be a prefix"),
        (None, "each route must be a prefix"),
    ],
)
def test_bad_prefixes_are_refused_with_the_reason(text: object, words: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_prefix(text)
    assert words in e.value.message
    assert e.value.status == 400


def test_a_strict_prefix_is_in_network_form_or_raises_with_the_network() -> None:
    assert strict_prefix("10.1.0.0/16") == net("10.1.0.0/16")
    assert strict_prefix("fd00::1") == net("fd00::1/128")
    with pytest.raises(HostBitsSet) as raised:
        strict_prefix("10.1.2.3/16")
    assert raised.value.network == net("10.1.0.0/16")
    with pytest.raises(HostBitsSet) as raised:
        strict_prefix("fd00::1/64")
    assert raised.value.network == net("fd00::/64")
    for text in ("10.1.2/33", "not a prefix", "", "10.1.2.3/-1"):
        with pytest.raises(ValueError) as error:
            strict_prefix(text)
        assert not isinstance(error.value, HostBitsSet)


def test_a_list_is_deduplicated_sorted_and_bounded() -> None:
    got = parse_routes(["fd00:1::/64", "192.168.1.0/24", "10.0.0.0/8", "192.168.1.0/24"])
    assert [str(p) for p in got] == ["10.0.0.0/8", "192.168.1.0/24", "fd00:1::/64"]
    assert parse_routes([]) == ()
    many = [f"10.{i}.0.0/16" for i in range(MAX_ROUTES)]
    assert len(parse_routes(many)) == MAX_ROUTES
    with pytest.raises(BadRequest, match=f"at most {MAX_ROUTES} routes"):
        parse_routes([*many, "10.200.0.0/16"])
    with pytest.raises(BadRequest, match="must be a list"):
        parse_routes("10.0.0.0/8")
    with pytest.raises(BadRequest, match="overlaps"):
        parse_routes(["10.0.0.0/8", "100.64.1.0/24"])


def test_an_exit_node_has_both_default_routes_approved() -> None:
    assert is_exit([net("0.0.0.0/0"), net("::/0"), net("10.0.0.0/8")])
    assert not is_exit([net("0.0.0.0/0")])
    assert not is_exit([net("::/0"), net("10.0.0.0/8")])
    assert not is_exit([])


LAN = net("192.168.1.0/24")
OTHER = net("fd00:1::/64")


def test_the_first_online_router_is_primary_and_keeps_it() -> None:
    a = Router(1, LAN, advertised_at=20.0, online=True)
    b = Router(2, LAN, advertised_at=10.0, online=True)
    c = Router(3, OTHER, advertised_at=30.0, online=True)
    assert primaries([a, b, c], {}) == {LAN: 2, OTHER: 3}  # b advertised first
    # the order routers come in does not matter
    assert primaries([c, b, a], {}) == {LAN: 2, OTHER: 3}
    # the previous primary keeps it while online, even if another advertised earlier
    assert primaries([a, b, c], {LAN: 1}) == {LAN: 1, OTHER: 3}
    # same advertised_at: the lowest node id
    d = Router(4, LAN, advertised_at=10.0, online=True)
    assert primaries([d, b], {}) == {LAN: 2}


def test_the_primary_switches_when_it_goes_offline_and_stays_switched() -> None:
    a = Router(1, LAN, advertised_at=10.0, online=True)
    b = Router(2, LAN, advertised_at=20.0, online=True)
    first = primaries([a, b], {})
    assert first == {LAN: 1}
    a_off = Router(1, LAN, advertised_at=10.0, online=False)
    second = primaries([a_off, b], first)
    assert second == {LAN: 2}
    # a comes back: b stays primary (no flapping back)
    assert primaries([a, b], second) == {LAN: 2}
    # nobody online: no primary
    b_off = Router(2, LAN, advertised_at=20.0, online=False)
    assert primaries([a_off, b_off], second) == {}
    # a previous primary that no longer routes the prefix is not kept
    assert primaries([a], {LAN: 7}) == {LAN: 1}


def test_exit_routes_have_no_primary() -> None:
    v4, v6 = net("0.0.0.0/0"), net("::/0")
    routers = [Router(1, v4, 1.0, True), Router(1, v6, 1.0, True), Router(2, LAN, 1.0, True)]
    assert primaries(routers, {}) == {LAN: 2}
