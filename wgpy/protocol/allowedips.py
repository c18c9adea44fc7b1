"""Cryptokey routing: WireGuard's allowed-IPs table (whitepaper 2).

:class:`AllowedIPs` maps IPv4 and IPv6 prefixes to a value (a peer) and answers
longest-prefix-match lookups. Outgoing packets use it to pick the peer for a destination
address; incoming packets use it to check that the source address belongs to the peer that
sent them. Values are compared by identity (``is``), never by ``==``. ``None`` cannot be a
value: it means "no match".

As in the kernel and wireguard-go, host bits are masked off on insert (``10.0.0.1/24`` stores
``10.0.0.0/24``) and inserting a prefix that another value owns moves it to the new value.

``lookup`` runs once per packet, so it is built for speed: per address family, one dict per
distinct prefix length (key: the address shifted right past the host bits), probed from the
longest length down; in front of that a cache from address bytes to result (misses included),
cleared on every change and whenever it grows past ``cache_size`` entries.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Generic, TypeAlias, TypeVar

__all__ = ["AllowedIPs", "IPNetwork"]

V = TypeVar("V")

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4, _V6 = 0, 1
"""Family indexes; also the low bit of a prefix code."""
_BITS = (32, 128)
_from_bytes = int.from_bytes  # a global is cheaper to reach than the attribute

# Fast paths for the usual spellings; anything they do not match goes through ipaddress, which
# then decides (so both paths accept exactly the same strings).
_V4_RE = re.compile(
    r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    r"\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    r"(?:/(3[0-2]|[12][0-9]|[0-9]))?"
)
_V6_RE = re.compile(r"([0-9A-Fa-f:]{2,39})(?:/(12[0-8]|1[01][0-9]|[1-9][0-9]|[0-9]))?")


def _parse_fast(text: str) -> tuple[int, int, int] | None:
    """(family, prefix length, network int) for common spellings, else None."""
    m = _V4_RE.fullmatch(text)
    if m is not None:
        a, b, c, d, p = m.groups()
        return (
            _V4,
            32 if p is None else int(p),
            (int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)),
        )
    m = _V6_RE.fullmatch(text)
    if m is None:
        return None
    addr, p = m.groups()
    head, sep, tail = addr.partition("::")
    if sep:
        hi = head.split(":") if head else []
        lo = tail.split(":") if tail else []
        missing = 8 - len(hi) - len(lo)
        if missing < 1:
            return None
        groups = [*hi, *(["0"] * missing), *lo]
    else:
        groups = addr.split(":")
        if len(groups) != 8:
            return None
    n = 0
    for group in groups:
        if not 0 < len(group) <= 4:  # empty: a stray ':' or a second '::'
            return None
        n = n << 16 | int(group, 16)
    return _V6, 128 if p is None else int(p), n


def _parse(network: str | IPNetwork) -> tuple[int, int, int]:
    """(family, prefix length, key) with key = network address >> host bits."""
    if isinstance(network, str):
        parsed = _parse_fast(network)
        if parsed is None:
            if "%" in network:
                raise ValueError(
                    f"invalid allowed IP {network!r}: a scope id (%...) is not allowed here"
                )
            cls = ipaddress.IPv6Network if ":" in network else ipaddress.IPv4Network
            try:
                net = cls(network, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"invalid allowed IP {network!r}: {exc}; expected an address or "
                    "address/prefix-length such as 10.0.0.0/24 or fd00::/64"
                ) from exc
            parsed = (_V6 if net.version == 6 else _V4, net.prefixlen, int(net.network_address))
        family, plen, addr = parsed
    elif isinstance(network, ipaddress.IPv4Network):
        family, plen, addr = _V4, network.prefixlen, int(network.network_address)
    elif isinstance(network, ipaddress.IPv6Network):
        family, plen, addr = _V6, network.prefixlen, int(network.network_address)
    else:
        raise TypeError(
            f"allowed IP must be a str, IPv4Network or IPv6Network, not {type(network).__name__}"
        )
    return family, plen, addr >> (_BITS[family] - plen)


def _code(family: int, plen: int, key: int) -> int:
    """One int naming a prefix: key, then 8 bits of prefix length, then 1 bit of family."""
    return (key << 9) | (plen << 1) | family


def _network(code: int) -> IPNetwork:
    family, plen, key = code & 1, (code >> 1) & 0xFF, code >> 9
    addr = key << (_BITS[family] - plen)
    if family == _V4:
        return ipaddress.IPv4Network((addr, plen))
    return ipaddress.IPv6Network((addr, plen))


class AllowedIPs(Generic[V]):
    """Longest-prefix-match table from IPv4/IPv6 prefixes to values (peers).

    Not thread-safe; meant to be owned by one event loop.
    """

    __slots__ = ("_cache", "_cache_size", "_count", "_owners", "_probes4", "_probes6", "_tables")

    def __init__(self, *, cache_size: int = 8192) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._cache_size = cache_size
        self._cache: dict[bytes, V | None] = {}
        # Per family: prefix length -> {address >> host bits: value}.
        self._tables: tuple[dict[int, dict[int, V]], dict[int, dict[int, V]]] = ({}, {})
        # Per family: (host bits, table), longest prefix first; what lookup walks.
        self._probes4: list[tuple[int, dict[int, V]]] = []
        self._probes6: list[tuple[int, dict[int, V]]] = []
        # id(value) -> (value, prefix codes in insertion order); keyed by id for identity.
        self._owners: dict[int, tuple[V, dict[int, None]]] = {}
        self._count = 0

    def __len__(self) -> int:
        """Number of prefixes in the table."""
        return self._count

    def __repr__(self) -> str:
        return f"<AllowedIPs {self._count} prefixes, {len(self._owners)} values>"

    # -- changes -------------------------------------------------------------------------------

    def insert(self, network: str | IPNetwork, value: V) -> None:
        """Map ``network`` to ``value``, taking it from whichever value had it.

        A str without ``/`` is a host route (/32 or /128); host bits are masked off. Raises
        ValueError on a malformed network or a ``None`` value.
        """
        if value is None:
            raise ValueError("value must not be None (None means 'no match' in lookups)")
        family, plen, key = _parse(network)
        tables = self._tables[family]
        table = tables.get(plen)
        if table is None:
            table = tables[plen] = {}
            self._rebuild_probes(family)
        old = table.get(key)
        if old is value:
            return
        code = _code(family, plen, key)
        if old is None:
            self._count += 1
        else:
            self._forget(old, code)
        table[key] = value
        owner = self._owners.get(id(value))
        if owner is None:
            owner = self._owners[id(value)] = (value, {})
        owner[1][code] = None
        self._cache.clear()

    def remove(self, network: str | IPNetwork, value: V) -> bool:
        """Remove ``network`` if it is mapped to ``value``; return whether it was removed."""
        family, plen, key = _parse(network)
        tables = self._tables[family]
        table = tables.get(plen)
        if table is None:
            return False
        old = table.get(key)
        if old is None or old is not value:
            return False
        del table[key]
        if not table:
            del tables[plen]
            self._rebuild_probes(family)
        self._forget(value, _code(family, plen, key))
        self._count -= 1
        self._cache.clear()
        return True

    def remove_value(self, value: V) -> None:
        """Remove every prefix of ``value`` (when its peer is removed)."""
        owner = self._owners.pop(id(value), None)
        if owner is None:
            return
        emptied = [False, False]
        for code in owner[1]:
            family, plen, key = code & 1, (code >> 1) & 0xFF, code >> 9
            tables = self._tables[family]
            table = tables[plen]
            del table[key]
            if not table:
                del tables[plen]
                emptied[family] = True
        for family in (_V4, _V6):
            if emptied[family]:
                self._rebuild_probes(family)
        self._count -= len(owner[1])
        self._cache.clear()

    def clear(self) -> None:
        """Remove everything."""
        self._tables = ({}, {})
        self._probes4 = []
        self._probes6 = []
        self._owners.clear()
        self._count = 0
        self._cache.clear()

    def _forget(self, value: V, code: int) -> None:
        """Drop ``code`` from the prefixes of ``value``."""
        codes = self._owners[id(value)][1]
        del codes[code]
        if not codes:
            del self._owners[id(value)]

    def _rebuild_probes(self, family: int) -> None:
        bits = _BITS[family]
        tables = self._tables[family]
        probes = [(bits - plen, tables[plen]) for plen in sorted(tables, reverse=True)]
        if family == _V4:
            self._probes4 = probes
        else:
            self._probes6 = probes

    # -- queries -------------------------------------------------------------------------------

    def raw_prefixes(self, value: V) -> list[tuple[int, int, int]]:
        """(IP version, network address as int, prefix length) of ``value``'s prefixes, in
        insertion order: what the control socket prints, without building ip_network objects."""
        owner = self._owners.get(id(value))
        if owner is None:
            return []
        return [
            (
                6 if c & 1 else 4,
                (c >> 9) << (_BITS[c & 1] - ((c >> 1) & 0xFF)),
                (c >> 1) & 0xFF,
            )
            for c in owner[1]
        ]

    def prefixes(self, value: V) -> list[IPNetwork]:
        """The prefixes of ``value`` in insertion order (a moved prefix counts as new)."""
        owner = self._owners.get(id(value))
        if owner is None:
            return []
        return [_network(code) for code in owner[1]]

    def lookup(self, address: bytes | bytearray | memoryview) -> V | None:
        """Value of the longest prefix containing ``address``, or None.

        ``address`` is 4 (IPv4) or 16 (IPv6) bytes in network order, any bytes-like object;
        any other length gives None. Raises TypeError if it is not bytes-like.
        """
        try:
            return self._cache[address]  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            # KeyError: not cached. TypeError/ValueError: unhashable (bytearray, writable or
            # non-byte-format memoryview).
            return self._lookup_uncached(address)

    def _lookup_uncached(self, address: bytes | bytearray | memoryview) -> V | None:
        cache = self._cache
        if type(address) is bytes:
            key = address
        else:
            key = memoryview(address).tobytes()
            if key in cache:  # e.g. a bytearray whose bytes are cached
                return cache[key]
        n = len(key)
        if n == 4:
            probes = self._probes4
        elif n == 16:
            probes = self._probes6
        else:
            return None
        addr = _from_bytes(key, "big")
        result = None
        for shift, table in probes:
            result = table.get(addr >> shift)
            if result is not None:
                break
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[key] = result
        return result

    def lookup_ip(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> V | None:
        """:meth:`lookup` for a textual or ipaddress address; ValueError if malformed."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address)
        return self.lookup(address.packed)
