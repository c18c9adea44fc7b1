"""iproute2's ``ip``: the argv of each command wg-quick and the mesh node run.

wg-quick's own commands (``address_add``, ``link_up``, ``route_add``, the policy rules) are
spelled exactly as the wg-quick script spells them, argument for argument, since ``wgpy up``
echoes them as ``[#] ...`` lines that users compare with wg-quick's.
"""

from __future__ import annotations

import ipaddress
import re

from ..config import format_network

IP = "ip"
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "address_add",
    "address_delete",
    "address_replace",
    "default_route",
    "family",
    "link_delete",
    "link_up",
    "parse_addresses",
    "route_add",
    "route_batch",
    "rules_delete",
]


def family(cidr: str) -> str:
    """``-6`` for an IPv6 address or prefix in text, else ``-4``: wg-quick's test (a colon)."""
    return "-6" if ":" in cidr else "-4"


# ------------------------------------------------------------------ addresses and links


def address_add(name: str, address: IPInterface) -> list[str]:
    """wg-quick's ``ip -4|-6 address add ADDRESS dev NAME``."""
    proto = "-6" if address.version == 6 else "-4"
    return [IP, proto, "address", "add", format_network(address), "dev", name]


def service_address_replace(name: str, address: IPInterface) -> list[str]:
    """An address only for answering on ``name`` (the resolver's 100.100.100.100), never a
    source the kernel picks for what leaves: IPv4 with host scope, IPv6 deprecated at once
    (preferred lifetime 0; still local, and taken last when a source is chosen)."""
    extra = ["nodad", "preferred_lft", "0"] if address.version == 6 else ["scope", "host"]
    return [IP, "address", "replace", str(address), "dev", name, *extra]


def address_replace(name: str, address: IPInterface) -> list[str]:
    """Set ``address`` on ``name`` whether or not it is there (the mesh node's, which applies
    its map more than once); an IPv6 address without duplicate detection, usable at once."""
    extra = ["nodad"] if address.version == 6 else []
    return [IP, "address", "replace", str(address), "dev", name, *extra]


def address_delete(name: str, address: IPInterface) -> list[str]:
    return [IP, "address", "del", str(address), "dev", name]


def address_show(name: str, proto: str) -> list[str]:
    """One line per address of ``name`` in family ``proto`` (``-4`` or ``-6``)."""
    return [IP, "-o", proto, "addr", "show", "dev", name]


def address_brief(name: str) -> list[str]:
    return [IP, "-brief", "address", "show", "dev", name]


def addresses_json() -> list[str]:
    """Every link's addresses, as JSON."""
    return [IP, "-json", "address", "show"]


def parse_addresses(text: str) -> list[str]:
    """The addresses (without their length) in the output of :func:`address_show`."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(r".*inet6? ([0-9a-f:.]+)/[0-9]+.*", line)
        if match is not None:
            found.append(match.group(1))
    return found


def link_show(name: str) -> list[str]:
    return [IP, "link", "show", "dev", name]


def link_up(name: str, mtu: int) -> list[str]:
    """Set the MTU and bring the link up: wg-quick's ``ip link set mtu MTU up dev NAME``."""
    return [IP, "link", "set", "mtu", str(mtu), "up", "dev", name]


def link_delete(name: str) -> list[str]:
    return [IP, "link", "delete", "dev", name]


# ------------------------------------------------------------------ routes


def route_get(address: str) -> list[str]:
    return [IP, "route", "get", address]


def route_show_default() -> list[str]:
    return [IP, "route", "show", "default"]


def route_show_table(proto: str, table: int) -> list[str]:
    return [IP, proto, "route", "show", "table", str(table)]


def route_show_match(name: str, cidr: str) -> list[str]:
    """The routes through ``name`` that cover ``cidr`` (wg-quick adds none where one is)."""
    return [IP, family(cidr), "route", "show", "dev", name, "match", cidr]


def route_add(name: str, cidr: str, table: str | int | None = None) -> list[str]:
    """``ip -4|-6 route add CIDR dev NAME [table TABLE]``."""
    argv = [IP, family(cidr), "route", "add", cidr, "dev", name]
    return argv if table is None else [*argv, "table", str(table)]


def route_batch(
    name: str, add: list[IPNetwork], remove: list[IPNetwork]
) -> tuple[list[str], str] | None:
    """One ``ip`` that routes ``add`` through ``name`` and stops routing ``remove`` there
    (``-force`` goes on past a route that is already gone): its argv and its stdin, or None
    if there is nothing to do."""
    lines = [f"route del {network} dev {name}" for network in remove]
    lines += [f"route replace {network} dev {name}" for network in add]
    if not lines:
        return None
    return [IP, "-force", "-batch", "-"], "\n".join(lines) + "\n"


# ------------------------------------------------------------------ policy routing


def default_route(name: str, cidr: str, table: int) -> list[list[str]]:
    """wg-quick's default route (``/0``) through ``name``: the route in its own ``table``
    (the fwmark of the interface's own packets), a rule that sends everything not so marked
    there, and one that still lets the main table's more specific routes win."""
    proto, t = family(cidr), str(table)
    return [
        route_add(name, cidr, t),
        [IP, proto, "rule", "add", "not", "fwmark", t, "table", t],
        [IP, proto, "rule", "add", "table", "main", "suppress_prefixlength", "0"],
    ]


def rule_show(proto: str) -> list[str]:
    return [IP, proto, "rule", "show"]


def rules_delete(proto: str, table: int, rules: str) -> list[str] | None:
    """The next rule of :func:`default_route` to delete, given ``rules`` (the output of
    :func:`rule_show`), or None when none is left. wg-quick deletes them one at a time,
    reading the rules again after each, until none is left."""
    if f"lookup {table}" in rules:
        return [IP, proto, "rule", "delete", "table", str(table)]
    if "from all lookup main suppress_prefixlength 0" in rules:
        return [IP, proto, "rule", "delete", "table", "main", "suppress_prefixlength", "0"]
    return None
