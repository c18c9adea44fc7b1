"""Tests for wgpy.protocol.allowedips: cryptokey routing against a brute-force reference."""

from __future__ import annotations

import ast
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.protocol import allowedips
from wgpy.protocol.allowedips import AllowedIPs, IPNetwork

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


class Peer:
    """A value that is == to every other Peer and hashes alike: only identity tells them apart."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Peer)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"Peer({self.name})"


def packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# -- brute-force reference -----------------------------------------------------------------------


class Reference:
    """A list of (network, value); longest containing prefix wins."""

    def __init__(self) -> None:
        self.entries: list[tuple[IPNetwork, Peer]] = []

    def _index(self, net: IPNetwork) -> int | None:
        for i, (n, _) in enumerate(self.entries):
            if n == net:
                return i
        return None

    def insert(self, net: IPNetwork, value: Peer) -> None:
        i = self._index(net)
        if i is not None:
            if self.entries[i][1] is value:
                return
            del self.entries[i]
        self.entries.append((net, value))

    def remove(self, net: IPNetwork, value: Peer) -> bool:
        i = self._index(net)
        if i is None or self.entries[i][1] is not value:
            return False
        del self.entries[i]
        return True

    def remove_value(self, value: Peer) -> None:
        self.entries = [(n, v) for n, v in self.entries if v is not value]

    def prefixes(self, value: Peer) -> list[IPNetwork]:
        return [n for n, v in self.entries if v is value]

    def lookup(self, addr: V4 | V6) -> Peer | None:
        best: tuple[int, Peer] | None = None
        for n, v in self.entries:
            if n.version == addr.version and addr in n and (best is None or n.prefixlen > best[0]):
                best = (n.prefixlen, v)
        return None if best is None else best[1]


BITS = {4: 32, 6: 128}
# Addresses that share prefixes of many lengths, so random prefixes overlap; the IPv6 list has
# the v4-mapped form of 10.0.0.1 to check that the families never mix.
BASES = {
    4: [
        int(V4(a))
        for a in ("0.0.0.0", "10.0.0.0", "10.0.0.1", "10.0.1.0", "10.128.0.0", "192.168.1.1")
    ]
    + [2**32 - 1],
    6: [
        int(V6(a))
        for a in ("::", "2001:db8::", "2001:db8::1", "2001:db8:0:1::", "fd00::", "::ffff:10.0.0.1")
    ]
    + [2**128 - 1],
}


@st.composite
def addresses(draw: st.DrawFn, version: int) -> int:
    bits = BITS[version]
    base = draw(st.sampled_from(BASES[version]))
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return base
    if kind == 1:  # flip a few low bits: close to a base
        return base ^ draw(st.integers(0, 2**8 - 1))
    return draw(st.integers(0, 2**bits - 1))


def network(version: int, addr: int, plen: int) -> IPNetwork:
    if version == 4:
        return ipaddress.IPv4Network((addr, plen), strict=False)
    return ipaddress.IPv6Network((addr, plen), strict=False)


def address(version: int, addr: int) -> V4 | V6:
    return V4(addr) if version == 4 else V6(addr)


@st.composite
def operations(draw: st.DrawFn, versions: tuple[int, ...]) -> tuple[str, int, int, int, int, int]:
    version = draw(st.sampled_from(versions))
    kind = draw(st.sampled_from(["insert", "insert", "remove", "remove_value", "lookup", "lookup"]))
    value = draw(st.integers(0, 2))
    addr = draw(addresses(version))
    plen = draw(st.integers(0, BITS[version]))
    style = draw(st.integers(0, 2))  # str with host bits, str masked, network object
    return (kind, version, addr, plen, value, style)


def spelled(version: int, addr: int, plen: int, style: int) -> str | IPNetwork:
    if style == 0:
        return f"{address(version, addr)}/{plen}"  # host bits left in
    if style == 1:
        return str(network(version, addr, plen))
    return network(version, addr, plen)


@pytest.mark.parametrize("versions", [(4,), (6,), (4, 6)], ids=["v4", "v6", "mixed"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_matches_reference(versions: tuple[int, ...], data: st.DataObject) -> None:
    ops = data.draw(st.lists(operations(versions), max_size=60))
    peers = [Peer("a"), Peer("b"), Peer("c")]
    table: AllowedIPs[Peer] = AllowedIPs()
    ref = Reference()
    for kind, version, addr, plen, value, style in ops:
        peer = peers[value]
        if kind == "insert":
            table.insert(spelled(version, addr, plen, style), peer)
            ref.insert(network(version, addr, plen), peer)
        elif kind == "remove":
            got = table.remove(spelled(version, addr, plen, style), peer)
            assert got == ref.remove(network(version, addr, plen), peer)
        elif kind == "remove_value":
            table.remove_value(peer)
            ref.remove_value(peer)
        else:
            ip = address(version, addr)
            want = ref.lookup(ip)
            raw = ip.packed
            # plain bytes, a memoryview slice, a bytearray: all the same answer
            assert table.lookup(raw) is want
            assert table.lookup(memoryview(b"\0" + raw)[1:]) is want
            assert table.lookup(bytearray(raw)) is want
            assert table.lookup_ip(str(ip)) is want
        assert len(table) == len(ref.entries)
    for peer in peers:
        assert table.prefixes(peer) == ref.prefixes(peer)
    # Every base address, after all the changes, through the (possibly warm) cache.
    for version in versions:
        for base in BASES[version]:
            ip = address(version, base)
            assert table.lookup(ip.packed) is ref.lookup(ip)


# -- parsing --------------------------------------------------------------------------------------


def parsed_like_ipaddress(text: str) -> None:
    """insert(text) stores what ip_network(text, strict=False) means, or both reject it."""
    table: AllowedIPs[Peer] = AllowedIPs()
    peer = Peer("p")
    try:
        want = ipaddress.ip_network(text, strict=False)
    except ValueError:
        with pytest.raises(ValueError, match="invalid allowed IP"):
            table.insert(text, peer)
        return
    if "%" in text:  # ipaddress allows a scope id; an allowed IP must not have one
        with pytest.raises(ValueError, match="scope"):
            table.insert(text, peer)
        return
    table.insert(text, peer)
    assert table.prefixes(peer) == [want]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF:./% x", max_size=45))
def test_parse_random_text(text: str) -> None:
    parsed_like_ipaddress(text)


@st.composite
def spellings(draw: st.DrawFn) -> str:
    """Valid and nearly valid spellings: compressed, padded, upper case, odd '::' placement."""
    version = draw(st.sampled_from([4, 6]))
    addr = draw(addresses(version))
    if version == 4:
        text = str(V4(addr))
    else:
        groups = [(addr >> (16 * (7 - i))) & 0xFFFF for i in range(8)]
        parts = [
            draw(st.sampled_from([f"{g:x}", f"{g:04x}", f"{g:X}", f"{g:05x}"])) for g in groups
        ]
        zero_runs = [
            (i, j) for i in range(8) for j in range(i + 1, 9) if all(g == 0 for g in groups[i:j])
        ]
        compress = draw(st.booleans())
        if zero_runs and compress:
            i, j = draw(st.sampled_from(zero_runs))
            text = ":".join(parts[:i]) + "::" + ":".join(parts[j:])
        else:
            text = ":".join(parts)
        if draw(st.booleans()):
            text = str(V6(addr))
    plen = draw(st.integers(0, BITS[version]))
    text += draw(st.sampled_from(["", f"/{plen}", f"/{plen}", f"/0{plen}", f"/{plen + 1}"]))
    if draw(st.booleans()):  # a small mutation
        pos = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:pos] + draw(st.sampled_from(list(":./0f "))) + text[pos:]
        else:
            text = text[:pos] + text[pos + 1 :]
    return text


@settings(max_examples=1000, deadline=None)
@given(spellings())
def test_parse_spellings(text: str) -> None:
    parsed_like_ipaddress(text)


@pytest.mark.parametrize(
    "text",
    [
        "1:2:3:4:5:6:7::",
        "::1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7",
        "::",
        "::/0",
        "::ffff:10.0.0.1/120",
        "FD00::ABCD/64",
        "0000:0000:0000:0000:0000:0000:0000:0001",
        "00000::1",
        "10.0.0.1/255.255.255.0",
        "10.0.0.1/0.0.0.255",
        "10.0.0.1/024",
        "10.0.0.1\n",
        "0.0.0.0/0",
        "255.255.255.255",
    ],
)
def test_parse_edge_spellings(text: str) -> None:
    parsed_like_ipaddress(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/",
        "10.0.0.1/33",
        "10.0.0.1/",
        "/8",
        "10.0.0",
        "256.0.0.0/8",
        "010.0.0.1",
        "10.0.0.1/-1",
        "10.0.0.1/ 8",
        " 10.0.0.1",
        "::/129",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        ":::",
        "12345::",
        "fe80::1%eth0/64",
        "example.com",
    ],
)
def test_invalid_network_raises_value_error(text: str) -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    with pytest.raises(ValueError, match="allowed IP"):
        table.insert(text, Peer("p"))
    with pytest.raises(ValueError, match="allowed IP"):
        table.remove(text, Peer("p"))
    assert len(table) == 0


@pytest.mark.parametrize("bad", [1, b"10.0.0.0/8", ipaddress.ip_address("10.0.0.1"), None])
def test_wrong_type_raises_type_error(bad: object) -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    with pytest.raises(TypeError, match="str, IPv4Network or IPv6Network"):
        table.insert(bad, Peer("p"))  # type: ignore[arg-type]


def test_none_value_rejected() -> None:
    table: AllowedIPs[object] = AllowedIPs()
    with pytest.raises(ValueError, match="None"):
        table.insert("10.0.0.0/8", None)
    assert len(table) == 0
    assert table.remove("10.0.0.0/8", None) is False


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        AllowedIPs(cache_size=0)


# -- specific behaviour ---------------------------------------------------------------------------


def test_host_bits_masked() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    table.insert("10.0.0.1/24", a)
    table.insert("fd00::1:2/64", a)
    assert table.prefixes(a) == [
        ipaddress.ip_network("10.0.0.0/24"),
        ipaddress.ip_network("fd00::/64"),
    ]
    assert table.lookup_ip("10.0.0.200") is a
    assert table.lookup_ip("10.0.1.0") is None
    # the same prefix spelled another way is the same entry
    table.insert("10.0.0.77/24", a)
    assert len(table) == 2
    assert table.remove("10.0.0.9/24", a) is True
    assert table.prefixes(a) == [ipaddress.ip_network("fd00::/64")]


def test_str_without_slash_is_host_route() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    table.insert("10.0.0.1", a)
    table.insert("fd00::1", a)
    assert table.prefixes(a) == [
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("fd00::1/128"),
    ]
    assert table.lookup_ip("10.0.0.1") is a
    assert table.lookup_ip("10.0.0.2") is None
    assert table.lookup_ip("fd00::2") is None


def test_prefix_moves_between_values() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    table.insert("10.0.0.0/24", a)
    table.insert("10.0.1.0/24", a)
    assert table.lookup_ip("10.0.0.5") is a
    table.insert("10.0.0.0/24", b)
    assert len(table) == 2
    assert table.lookup_ip("10.0.0.5") is b
    assert table.prefixes(a) == [ipaddress.ip_network("10.0.1.0/24")]
    assert table.prefixes(b) == [ipaddress.ip_network("10.0.0.0/24")]
    # the old owner can no longer remove it
    assert table.remove("10.0.0.0/24", a) is False
    assert table.lookup_ip("10.0.0.5") is b
    # moving the last prefix of a value forgets that value
    table.insert("10.0.1.0/24", b)
    assert table.prefixes(a) == []
    table.remove_value(a)
    assert len(table) == 2


def test_prefixes_in_insertion_order() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    for text in ["10.0.0.0/8", "fd00::/8", "192.168.0.0/16", "0.0.0.0/0", "10.1.0.0/16"]:
        table.insert(text, a)
    table.insert("192.168.0.0/16", a)  # already a's: keeps its place
    table.insert("fd00::/8", b)
    table.insert("fd00::/8", a)  # moved back: now last
    assert [str(n) for n in table.prefixes(a)] == [
        "10.0.0.0/8",
        "192.168.0.0/16",
        "0.0.0.0/0",
        "10.1.0.0/16",
        "fd00::/8",
    ]
    assert table.prefixes(b) == []
    assert table.prefixes(Peer("nobody")) == []


def test_default_routes() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    default4, default6, specific = Peer("d4"), Peer("d6"), Peer("s")
    table.insert("0.0.0.0/0", default4)
    assert table.lookup_ip("1.2.3.4") is default4
    assert table.lookup_ip("255.255.255.255") is default4
    assert table.lookup_ip("::1") is None
    table.insert("::/0", default6)
    table.insert("10.0.0.0/8", specific)
    table.insert("10.0.0.1/32", specific)
    assert table.lookup_ip("10.9.9.9") is specific
    assert table.lookup_ip("11.0.0.0") is default4
    assert table.lookup_ip("2001:db8::1") is default6
    assert table.lookup_ip("::") is default6
    assert table.remove("0.0.0.0/0", default4) is True
    assert table.lookup_ip("11.0.0.0") is None
    assert table.lookup_ip("10.9.9.9") is specific


def test_v4_and_v6_do_not_mix() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    table.insert("0.0.0.0/0", a)
    table.insert("10.0.0.1/32", a)
    # 0.0.0.0/0 and ::/0 have the same address int and length; they are different prefixes
    table.insert("::/0", b)
    assert len(table) == 3
    assert table.prefixes(a) == [
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("10.0.0.1/32"),
    ]
    assert table.lookup_ip("10.0.0.1") is a
    assert table.lookup_ip("::ffff:10.0.0.1") is b  # v4-mapped goes to the v6 table
    assert table.lookup_ip("::a00:1") is b  # same low 32 bits as 10.0.0.1
    assert table.remove("::/0", a) is False
    assert table.remove("0.0.0.0/0", b) is False
    assert table.remove("::/0", b) is True
    assert table.lookup_ip("::ffff:10.0.0.1") is None
    assert table.lookup_ip("10.0.0.1") is a


def test_remove_with_wrong_value_does_nothing() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    assert a == b  # == says equal; identity is what counts
    table.insert("10.0.0.0/8", a)
    assert table.lookup_ip("10.1.2.3") is a
    assert table.remove("10.0.0.0/8", b) is False
    assert table.remove("10.0.0.0/16", a) is False  # not that prefix
    assert table.remove("11.0.0.0/8", a) is False
    assert len(table) == 1
    assert table.lookup_ip("10.1.2.3") is a
    table.remove_value(b)
    assert table.prefixes(a) == [ipaddress.ip_network("10.0.0.0/8")]
    assert table.remove("10.0.0.0/8", a) is True
    assert table.remove("10.0.0.0/8", a) is False
    assert len(table) == 0


def test_remove_value() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    table.insert("10.0.0.0/8", a)
    table.insert("10.1.0.0/16", b)
    table.insert("fd00::/8", a)
    table.insert("0.0.0.0/0", b)
    assert table.lookup_ip("10.2.0.0") is a
    table.remove_value(a)
    assert len(table) == 2
    assert table.prefixes(a) == []
    assert table.lookup_ip("10.2.0.0") is b  # falls back to b's default route
    assert table.lookup_ip("fd00::1") is None
    assert table.lookup_ip("10.1.0.0") is b
    table.remove_value(a)  # again: nothing to do
    table.remove_value(Peer("never inserted"))
    assert len(table) == 2


def test_clear() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    table.insert("10.0.0.0/8", a)
    table.insert("::/0", a)
    assert table.lookup_ip("10.0.0.1") is a
    table.clear()
    assert len(table) == 0
    assert not table
    assert table.prefixes(a) == []
    assert table.lookup_ip("10.0.0.1") is None
    assert table.lookup_ip("::1") is None
    table.insert("10.0.0.0/8", a)
    assert table.lookup_ip("10.0.0.1") is a


@pytest.mark.parametrize(
    "raw", [b"", b"\x0a", b"\x0a\x00\x00", b"\x0a\x00\x00\x01\x00", bytes(15), bytes(17), bytes(32)]
)
def test_lookup_wrong_length_returns_none(raw: bytes) -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    table.insert("0.0.0.0/0", Peer("a"))
    table.insert("::/0", Peer("b"))
    assert table.lookup(raw) is None
    assert table.lookup(raw) is None  # cached or not, still None
    assert table.lookup(memoryview(raw)) is None


def test_lookup_not_bytes_like_raises_type_error() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    table.insert("0.0.0.0/0", Peer("a"))
    for bad in ["abcd", 4, None]:
        with pytest.raises(TypeError):
            table.lookup(bad)  # type: ignore[arg-type]


def test_lookup_bytes_like_inputs() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    table.insert("10.0.0.0/8", a)
    table.insert("2001:db8::/32", b)
    packet = bytearray(20)
    packet[16:20] = packed("10.1.2.3")
    view = memoryview(packet)
    assert table.lookup(view[16:20]) is a  # writable (unhashable) memoryview slice
    assert table.lookup(view[16:20]) is a
    ro = memoryview(bytes(packet))
    assert table.lookup(ro[16:20]) is a  # read-only memoryview slice, hashable
    assert table.lookup(bytearray(packed("10.1.2.3"))) is a
    assert table.lookup(memoryview(packed("10.1.2.3")).cast("I")) is a  # non-byte format
    v6 = b"\xff" * 40 + packed("2001:db8::7")
    assert table.lookup(memoryview(v6)[40:]) is b
    assert table.lookup(v6[40:]) is b
    assert table.lookup(memoryview(v6)[39:55]) is None


def test_lookup_ip() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    table.insert("10.0.0.0/8", a)
    table.insert("fd00::/8", a)
    assert table.lookup_ip("10.0.0.1") is a
    assert table.lookup_ip(ipaddress.ip_address("10.0.0.1")) is a
    assert table.lookup_ip(ipaddress.ip_address("fd00::1")) is a
    assert table.lookup_ip("11.0.0.1") is None
    with pytest.raises(ValueError):
        table.lookup_ip("10.0.0.0/8")
    with pytest.raises(ValueError):
        table.lookup_ip("nonsense")


def test_cache_invalidated_by_changes() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    addr = packed("10.0.0.1")
    assert table.lookup(addr) is None  # a cached miss...
    table.insert("10.0.0.0/8", a)
    assert table.lookup(addr) is a  # ...is forgotten on insert
    assert table.lookup(addr) is a
    table.insert("10.0.0.0/24", b)  # a more specific prefix
    assert table.lookup(addr) is b
    table.insert("10.0.0.0/24", c)  # moved
    assert table.lookup(addr) is c
    assert table.remove("10.0.0.0/24", c)
    assert table.lookup(addr) is a
    table.insert("10.0.0.1/32", b)
    assert table.lookup(addr) is b
    table.remove_value(b)
    assert table.lookup(addr) is a
    table.clear()
    assert table.lookup(addr) is None
    # nothing changes on a no-op insert or a failed remove; answers stay right
    table.insert("10.0.0.0/8", a)
    assert table.lookup(addr) is a
    table.insert("10.0.0.0/8", a)
    assert table.remove("10.0.0.0/8", b) is False
    assert table.lookup(addr) is a


def test_cache_is_bounded() -> None:
    table: AllowedIPs[Peer] = AllowedIPs(cache_size=16)
    a = Peer("a")
    table.insert("10.0.0.0/8", a)
    for i in range(1000):
        raw = bytes([10, 0, i >> 8, i & 255])
        assert table.lookup(raw) is a
        assert table.lookup(raw) is a
        assert table.lookup(bytes([11, 0, i >> 8, i & 255])) is None
        assert len(table._cache) <= 16


def test_100k_prefixes_for_one_value() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    n = 100_000
    texts = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(n // 2)]
    texts += [f"fd00:{i >> 16:x}:{i & 0xFFFF:x}::/48" for i in range(n // 2)]
    for text in texts:
        table.insert(text, a)
    table.insert("10.0.0.0/8", b)
    assert len(table) == n + 1
    assert table.lookup_ip("10.0.0.1") is a
    assert table.lookup_ip("10.195.79.255") is a
    assert table.lookup_ip("10.195.80.0") is b  # past the last /24: only the /8
    assert table.lookup_ip("fd00:0:c34f:1::") is a
    assert table.lookup_ip("fd00:0:c350::") is None
    got = table.prefixes(a)
    assert len(got) == n
    assert got[0] == ipaddress.ip_network("10.0.0.0/24")
    assert got[n // 2 - 1] == ipaddress.ip_network("10.195.79.0/24")
    assert got[-1] == ipaddress.ip_network("fd00:0:c34f::/48")
    table.remove_value(a)
    assert len(table) == 1
    assert table.lookup_ip("10.0.0.1") is b
    assert table.prefixes(a) == []


def test_values_compared_by_identity() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    table.insert("10.0.0.0/8", a)
    table.insert("10.0.0.0/8", b)  # == but not the same: moves
    assert table.lookup_ip("10.0.0.1") is b
    assert table.prefixes(a) == []


@dataclass(frozen=True)
class Key:
    name: str


def test_generic_over_any_value() -> None:
    table: AllowedIPs[Key] = AllowedIPs()
    k = Key("x")
    table.insert(ipaddress.IPv4Network("192.0.2.0/24"), k)
    table.insert(ipaddress.IPv6Network("2001:db8::/32"), k)
    assert table.lookup_ip("192.0.2.9") is k
    assert table.lookup_ip("2001:db8::9") is k
    assert repr(table) == "<AllowedIPs 2 prefixes, 1 values>"


def test_module_is_sans_io() -> None:
    tree = ast.parse(Path(allowedips.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "time", "os", "random", "selectors", "threading"}
