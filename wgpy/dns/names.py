"""The mesh's names: ``HOST.USER.BASE`` per node, and the table the resolver answers from.

Pure: no I/O. A host name and a user name become one DNS label each (lowercase; characters
other than letters, digits and ``-`` become ``-``; at most 63 characters), so a user
``alice@example.com`` is the label ``alice-example-com``. The base domain is checked by
:func:`check_base_domain`.

The table takes the names the map gives (the server makes them, with :func:`node_name`): a
name that is not two labels in front of the base domain is left out. Besides the full name,
the table answers ``HOST.BASE`` (the short ``HOST`` form, with the base
domain as the search domain): when two users have a host of that name, the viewer's own user's
host wins, and otherwise the short name is left out (ambiguous). Two nodes with the same full
name are both left out (the server gives names; the table does not guess).
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_BASE_DOMAIN = "mesh.internal"
MAX_NAME = 253  # characters in a name, without the final dot (RFC 1035 2.3.4)
MAX_LABEL = 63

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NOT_LABEL_CHAR = re.compile(r"[^a-z0-9-]+")


def label(text: str) -> str:
    """``text`` as one DNS label: lowercase, other characters as ``-``, at most 63 long.
    An empty result (nothing usable in ``text``) is ``""``."""
    out = _NOT_LABEL_CHAR.sub("-", text.lower())[:MAX_LABEL].strip("-")
    return out


def check_base_domain(text: str) -> str:
    """The base domain in canonical form (lowercase, no final dot), or ValueError."""
    name = text.strip().lower().rstrip(".")
    if not name:
        raise ValueError("The base domain is empty; give a domain such as mesh.internal.")
    if len(name) > MAX_NAME - 2 * (MAX_LABEL + 1):
        raise ValueError(
            f"The base domain {text!r} is too long to hold HOST.USER in front of it; "
            "give a shorter domain."
        )
    labels = name.split(".")
    if len(labels) < 2:
        raise ValueError(
            f"The base domain {text!r} has one label; give at least two (e.g. mesh.internal) "
            "so that it cannot be taken for a host or a top-level domain."
        )
    for part in labels:
        if not _LABEL.match(part):
            raise ValueError(
                f"The base domain {text!r} has the label {part!r}, which is not a host-name "
                "label (letters, digits and inner '-', 1 to 63 characters); fix the domain."
            )
    if labels[-1].isdigit():
        raise ValueError(f"The base domain {text!r} ends in a number; give a domain name.")
    return name


def node_name(hostname: str, user: str, base_domain: str) -> str:
    """``HOST.USER.BASE`` for a node, or ValueError when either part has no usable
    characters."""
    host, owner = label(hostname), label(user)
    if not host or not owner:
        raise ValueError(
            f"The node {hostname!r} of {user!r} has no name: its host or user name holds no "
            "letters or digits."
        )
    return f"{host}.{owner}.{base_domain}"


def check_name(text: str) -> str:
    """A DNS name in canonical form (lowercase, no final dot), or ValueError."""
    name = text.lower().rstrip(".")
    if not name or len(name) > MAX_NAME or not all(_LABEL.match(p) for p in name.split(".")):
        raise ValueError(f"{text[:80]!r} is not a DNS name of host-name labels.")
    return name


@dataclass(frozen=True, slots=True)
class Host:
    """One node as the name table needs it: its full name (``HOST.USER.BASE``, from the map)
    and its addresses."""

    name: str
    addresses: tuple[IPAddress, ...]

    @classmethod
    def of(
        cls, hostname: str, user: str, base_domain: str, addresses: tuple[IPAddress, ...]
    ) -> Host:
        """A node named from its host and user names (as the server names it)."""
        return cls(node_name(hostname, user, base_domain), addresses)


@dataclass(frozen=True)
class NameTable:
    """Names under ``base_domain`` and their addresses; lookups take lowercase names without
    the final dot."""

    base_domain: str
    names: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    # names that exist only because a longer name ends in them (``USER.BASE``, ``BASE``):
    # an empty non-terminal answers NOERROR with no records, not NXDOMAIN (RFC 8020)
    parents: frozenset[str] = frozenset()
    left_out: tuple[str, ...] = ()  # names left out: ambiguous, or without a usable label
    # reverse lookups (PTR): an address's full name, for addresses in ``networks`` (the
    # overlay ranges), where an address without a name is NXDOMAIN rather than forwarded
    pointers: Mapping[IPAddress, str] = field(default_factory=dict)
    networks: tuple[IPNetwork, ...] = ()

    def covers(self, address: IPAddress) -> bool:
        """Whether reverse lookups of ``address`` are this table's to answer."""
        return any(address in network for network in self.networks)

    def under_base(self, name: str) -> bool:
        return name == self.base_domain or name.endswith("." + self.base_domain)

    def lookup(self, name: str) -> tuple[IPAddress, ...] | None:
        """The addresses of ``name``; an empty tuple for a name that exists with no addresses
        of its own, None for a name that does not exist."""
        found = self.names.get(name)
        if found is not None:
            return found
        return () if name in self.parents else None


def build_table(
    base_domain: str,
    hosts: Iterable[Host],
    *,
    self_user: str = "",
    networks: Iterable[IPNetwork] = (),
) -> NameTable:
    """The table for ``hosts`` (this node among them); ``self_user`` (a user name, or its
    label) wins ambiguous short names; reverse lookups in ``networks`` are answered."""
    suffix = "." + base_domain
    full: dict[str, list[Host]] = defaultdict(list)
    left_out: list[str] = []
    for host in hosts:
        try:
            name = check_name(host.name)
        except ValueError:
            left_out.append(host.name[:80])
            continue
        if not name.endswith(suffix) or name[: -len(suffix)].count(".") != 1:
            left_out.append(name)  # not HOST.USER in front of the base domain
            continue
        full[name].append(host)
    names: dict[str, tuple[IPAddress, ...]] = {}
    short: dict[str, list[tuple[str, Host]]] = defaultdict(list)
    for name, holders in full.items():
        if len(holders) > 1:
            left_out.append(name)
            continue
        names[name] = holders[0].addresses
        host_label, user_label = name[: -len(suffix)].split(".")
        short[host_label + suffix].append((user_label, holders[0]))
    mine = label(self_user)
    for name, owners in short.items():
        if name in names:
            continue  # a full name wins
        chosen = owners if len(owners) == 1 else [o for o in owners if o[0] == mine]
        if len(chosen) == 1:
            names[name] = chosen[0][1].addresses
        else:
            left_out.append(name)
    parents = {base_domain}
    for name in full:
        parents.add(name.split(".", 1)[1])
    pointers: dict[IPAddress, str] = {}
    for name, holders in sorted(full.items()):
        if len(holders) == 1:
            for address in holders[0].addresses:
                pointers.setdefault(address, name)
    return NameTable(
        base_domain,
        names,
        frozenset(parents - set(names)),
        tuple(sorted(left_out)),
        pointers,
        tuple(networks),
    )


def reverse_address(name: str) -> IPAddress | None:
    """The address a whole reverse name stands for (``1.0.64.100.in-addr.arpa``, 32 nibbles
    under ``ip6.arpa``), or None for any other name (a shorter one is a zone, not an
    address)."""
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts):
            try:
                return ipaddress.IPv4Address(".".join(reversed(parts)))
            except ValueError:
                return None
    elif name.endswith(".ip6.arpa"):
        parts = name[: -len(".ip6.arpa")].split(".")
        if len(parts) == 32 and all(len(p) == 1 and p in "0123456789abcdef" for p in parts):
            return ipaddress.IPv6Address(int("".join(reversed(parts)), 16))
    return None
