"""wgpy/dns/names.py: labels, the base domain's checks, and the name table."""

from __future__ import annotations

import ipaddress

import pytest

from wgpy.dns.names import (
    Host,
    build_table,
    check_base_domain,
    check_name,
    label,
    node_name,
    reverse_address,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def host(hostname: str, user: str, n: int) -> Host:
    return Host.of(
        hostname, user, "mesh.internal", (V4(f"100.64.0.{n}"), V6(f"fd7a:115c:a1e0::{n}"))
    )


def test_label_lowercases_and_replaces_other_characters() -> None:
    assert label("Laptop") == "laptop"
    assert label("alice@example.com") == "alice-example-com"
    assert label("my_box (2)") == "my-box-2"
    assert label("--x--") == "x"
    assert label("...") == ""
    assert len(label("a" * 100)) == 63


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("mesh.internal", "mesh.internal"), ("Corp.Example.", "corp.example"), ("a-b.c1", "a-b.c1")],
)
def test_base_domain_canonical(text: str, canonical: str) -> None:
    assert check_base_domain(text) == canonical


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        (".", "empty"),
        ("internal", "one label"),
        ("mesh..internal", "label ''"),
        ("-mesh.internal", "not a host-name label"),
        ("mesh_x.internal", "not a host-name label"),
        ("10.0.0.1", "ends in a number"),
        ("a" * 60 + "." + "b" * 60 + "." + "c" * 60 + ".internal", "too long"),
    ],
)
def test_base_domain_rejected_with_a_sentence(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as info:
        check_base_domain(text)
    assert str(info.value)[0].isupper() and str(info.value).endswith(".")


def test_node_name() -> None:
    assert node_name("Laptop", "alice@example.com", "mesh.internal") == (
        "laptop.alice-example-com.mesh.internal"
    )
    with pytest.raises(ValueError, match="no name"):
        node_name("???", "alice", "mesh.internal")


def test_table_full_and_short_names_and_parents() -> None:
    table = build_table("mesh.internal", [host("laptop", "alice", 1), host("nas", "bob", 2)])
    assert table.lookup("laptop.alice.mesh.internal") == (V4("100.64.0.1"), V6("fd7a:115c:a1e0::1"))
    assert table.lookup("laptop.mesh.internal") == table.lookup("laptop.alice.mesh.internal")
    assert table.lookup("nas.mesh.internal") == (V4("100.64.0.2"), V6("fd7a:115c:a1e0::2"))
    # empty non-terminals exist with no addresses; other names do not exist
    assert table.lookup("alice.mesh.internal") == ()
    assert table.lookup("mesh.internal") == ()
    assert table.lookup("printer.mesh.internal") is None
    assert table.lookup("x.laptop.alice.mesh.internal") is None
    assert table.under_base("mesh.internal") and table.under_base("a.mesh.internal")
    assert not table.under_base("evilmesh.internal") and not table.under_base("example.com")


def test_table_ambiguous_short_name_goes_to_own_user_or_nobody() -> None:
    hosts = [host("laptop", "alice", 1), host("laptop", "bob", 2)]
    theirs = build_table("mesh.internal", hosts, self_user="carol")
    assert theirs.lookup("laptop.mesh.internal") is None
    assert theirs.left_out == ("laptop.mesh.internal",)
    assert theirs.lookup("laptop.bob.mesh.internal") == hosts[1].addresses
    mine = build_table("mesh.internal", hosts, self_user="bob")
    assert mine.lookup("laptop.mesh.internal") == hosts[1].addresses


def test_table_same_full_name_twice_is_left_out() -> None:
    table = build_table("mesh.internal", [host("Box", "alice", 1), host("box", "alice", 2)])
    assert table.lookup("box.alice.mesh.internal") is None
    assert table.lookup("box.mesh.internal") is None
    assert "box.alice.mesh.internal" in table.left_out


def test_table_leaves_out_names_it_cannot_use() -> None:
    addresses = (V4("100.64.0.1"),)
    bad = ["???.alice.mesh.internal", "laptop.mesh.internal", "a.b.c.mesh.internal", "x.y.other"]
    table = build_table("mesh.internal", [Host(name, addresses) for name in bad])
    assert table.names == {} and table.parents == {"mesh.internal"}
    assert set(table.left_out) == set(bad)
    with pytest.raises(ValueError, match="no name"):
        Host.of("???", "alice", "mesh.internal", addresses)


def test_check_name() -> None:
    assert check_name("Laptop.Alice.mesh.internal.") == "laptop.alice.mesh.internal"
    for text in ("", "a..b", "a b.c", "-a.b", "a" * 64 + ".b", ("a" * 63 + ".") * 4 + "b"):
        with pytest.raises(ValueError, match="not a DNS name"):
            check_name(text)


def test_reverse_address_reads_whole_reverse_names_only() -> None:
    assert reverse_address("1.0.64.100.in-addr.arpa") == V4("100.64.0.1")
    nibbles = ".".join(reversed(V6("fd7a:115c:a1e0::1").exploded.replace(":", "")))
    assert reverse_address(nibbles + ".ip6.arpa") == V6("fd7a:115c:a1e0::1")
    for zone in (
        "64.100.in-addr.arpa",
        "1.0.64.100.200.in-addr.arpa",
        "300.0.64.100.in-addr.arpa",
        "x.0.64.100.in-addr.arpa",
        "a.ip6.arpa",
        nibbles.replace("1", "g", 1) + ".ip6.arpa",
        "laptop.mesh.internal",
    ):
        assert reverse_address(zone) is None


def test_table_pointers_for_unique_full_names_in_its_networks() -> None:
    hosts = [host("laptop", "alice", 1), host("box", "bob", 2), host("Box", "bob", 3)]
    networks = (ipaddress.ip_network("100.64.0.0/10"),)
    table = build_table("mesh.internal", hosts, networks=networks)
    assert table.pointers[V4("100.64.0.1")] == "laptop.alice.mesh.internal"
    assert table.pointers[V6("fd7a:115c:a1e0::1")] == "laptop.alice.mesh.internal"
    assert V4("100.64.0.2") not in table.pointers  # box.bob is ambiguous: no name
    assert table.covers(V4("100.127.0.1")) and not table.covers(V4("192.0.2.1"))
    assert not table.covers(V6("fd7a:115c:a1e0::1"))  # not in the networks given
