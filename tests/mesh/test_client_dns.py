"""wgpy/mesh/client/dns.py and the names in netmap.py: the node's name table from its map."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from wgpy.mesh.client.dns import name_table, overlay_addresses
from wgpy.mesh.client.netmap import parse_node, parse_peer


def key(i: int) -> str:
    return base64.b64encode(bytes([i]) * 32).decode()


def self_node(name: str | None = "laptop.alice.corp.example") -> dict[str, Any]:
    data: dict[str, Any] = {
        "public_key": key(1),
        "hostname": "laptop",
        "ipv4": "100.64.0.1",
        "ipv6": "fd7a:115c:a1e0::1",
    }
    if name is not None:
        data["name"] = name
    return data


def peer(i: int, name: Any, addresses: list[str] | None = None) -> dict[str, Any]:
    return {
        "public_key": key(i),
        "hostname": f"h{i}",
        "user": "bob",
        "name": name,
        "addresses": addresses or [f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"],
    }


def test_names_parse_canonical_or_not_at_all() -> None:
    assert parse_node(self_node("Laptop.Alice.corp.example.")).name == "laptop.alice.corp.example"
    assert parse_node(self_node(None)).name == ""
    assert parse_peer(peer(2, "nas.bob.corp.example")).name == "nas.bob.corp.example"
    for bad in (7, "", "bad name.bob.corp.example", "x" * 300, None):
        record = parse_peer(peer(2, bad))
        assert record.name == "" and record.hostname == "h2"  # the peer stays, unnamed


def test_overlay_addresses_leave_routed_subnets_out() -> None:
    record = parse_peer(
        peer(
            3,
            "r.bob.corp.example",
            [
                "100.64.0.3/32",
                "192.168.1.0/24",
                "192.168.9.9/32",
                "fd7a:115c:a1e0::3/128",
                "fd00:1::/64",
            ],
        )
    )
    assert overlay_addresses(record) == (
        ipaddress.ip_address("100.64.0.3"),
        ipaddress.ip_address("fd7a:115c:a1e0::3"),
    )


def test_name_table_from_the_map() -> None:
    node = parse_node(self_node())
    peers = [
        parse_peer(peer(2, "nas.bob.corp.example")),
        parse_peer(peer(3, "laptop.bob.corp.example")),
        parse_peer(peer(4, "")),  # no name: not in the table
        parse_peer(peer(5, "x.y.elsewhere.example")),  # not under this map's base domain
    ]
    table = name_table(node, peers)
    assert table is not None and table.base_domain == "corp.example"
    assert table.lookup("laptop.alice.corp.example") == (
        ipaddress.ip_address("100.64.0.1"),
        ipaddress.ip_address("fd7a:115c:a1e0::1"),
    )
    assert table.lookup("nas.corp.example") == (
        ipaddress.ip_address("100.64.0.2"),
        ipaddress.ip_address("fd7a:115c:a1e0::2"),
    )
    # two users' "laptop": this node's own user's wins the short name
    assert table.lookup("laptop.corp.example") == table.lookup("laptop.alice.corp.example")
    assert table.lookup("laptop.bob.corp.example") == (
        ipaddress.ip_address("100.64.0.3"),
        ipaddress.ip_address("fd7a:115c:a1e0::3"),
    )
    assert table.left_out == ("x.y.elsewhere.example",)
    assert table.pointers[ipaddress.ip_address("100.64.0.2")] == "nas.bob.corp.example"
    assert table.covers(ipaddress.ip_address("fd7a:115c:a1e0::99"))


def test_no_table_without_a_name_of_its_own() -> None:
    assert name_table(parse_node(self_node(None)), [parse_peer(peer(2, "a.b.c.d"))]) is None
