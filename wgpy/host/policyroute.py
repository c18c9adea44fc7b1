"""Policy routing for an exit node: everything through the mesh interface, as wg-quick routes
a default route (``AllowedIPs = 0.0.0.0/0``), with the exceptions a mesh node needs.

The WireGuard socket (and the relay and probe sockets: :mod:`wgpy.nat.relay`) carries the
firewall mark ``M``; the default routes are in a table ``T`` of their own (``M`` = ``T``, the
first table from 51820 that nothing uses, as wg-quick picks it). The rules, each at a
priority of its own (a lower one is read first), per address family:

``5300 to ADDR lookup main``
    the coordination server's addresses, the STUN and TURN servers' (and, with
    ``--exit-node-allow-lan-access``, each directly connected prefix) keep the host's own
    routes: the control plane never depends on the tunnel it sets up;
``5305 fwmark M lookup main`` and ``5310 to PREFIX lookup T``
    without LAN access, the directly connected prefixes go through the exit node too
    (Tailscale's default: the local network is not reachable while an exit node is used),
    but WireGuard's own packets (marked) still go to peers on the LAN directly. Two rules:
    ``ip rule``'s ``not`` inverts the whole selector, so ``not fwmark M to PREFIX`` would
    also send marked packets to any other address into the tunnel;
``5320 lookup main suppress_prefixlength 0``
    wg-quick's: the main table's routes still win, but its default route;
``5330 not fwmark M lookup T``
    wg-quick's: everything else that is not WireGuard's own traffic goes to table ``T``,
    whose only routes are ``default dev IFACE``.

Everything is an argv list (nothing runs here); :class:`ExitRoutes` says what to set up and
gives the commands to add it and, in the reverse order, to delete exactly it, so that the
rules and tables are afterwards as they were. Imports point down only.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IP = "ip"
FIRST_TABLE = 51820  # wg-quick's first choice; the next free one if it is taken
DEFAULT_ROUTES = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
BYPASS_PRIORITY = 5300
MARK_PRIORITY = 5305
LAN_PRIORITY = 5310
SUPPRESS_PRIORITY = 5320
TABLE_PRIORITY = 5330
PRIORITIES = (BYPASS_PRIORITY, MARK_PRIORITY, LAN_PRIORITY, SUPPRESS_PRIORITY, TABLE_PRIORITY)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "DEFAULT_ROUTES",
    "FIRST_TABLE",
    "ExitRoutes",
    "Rule",
    "connected_prefixes",
    "default_interfaces",
    "default_route_show",
    "free_table",
    "host_network",
    "routes_show",
    "rules_show",
    "stale_rules",
    "used_tables",
]


def _proto(version: int) -> str:
    return "-6" if version == 6 else "-4"


@dataclass(frozen=True)
class Rule:
    """One ``ip rule``: added and deleted with the same words, so the deletion removes
    exactly this rule and no other."""

    version: int
    priority: int
    words: tuple[str, ...]  # selector and action, as ``ip rule`` takes them

    def add(self) -> list[str]:
        return [IP, _proto(self.version), "rule", "add", "pref", str(self.priority), *self.words]

    def delete(self) -> list[str]:
        return [IP, _proto(self.version), "rule", "del", "pref", str(self.priority), *self.words]


@dataclass(frozen=True)
class ExitRoutes:
    """Everything through ``interface`` but the exceptions; see the module docstring."""

    interface: str
    table: int  # the routing table, and the firewall mark of WireGuard's own packets
    versions: tuple[int, ...]  # 4 and/or 6: the families the node has an address in
    bypass: tuple[IPNetwork, ...] = ()  # the control plane's addresses (host prefixes)
    lan: tuple[IPNetwork, ...] = ()  # the host's directly connected prefixes
    allow_lan: bool = False

    def routes(self) -> list[tuple[int, list[str], list[str]]]:
        """(version, add argv, delete argv) of each default route in the table."""
        out = []
        for version in self.versions:
            where = ["default", "dev", self.interface, "table", str(self.table)]
            proto = _proto(version)
            out.append(
                (version, [IP, proto, "route", "add", *where], [IP, proto, "route", "del", *where])
            )
        return out

    def rules(self) -> list[Rule]:
        """The rules, in the order they are added (the most general last, so that no
        packet meets the catch-all before its exceptions are in place)."""
        mark, table = str(self.table), str(self.table)
        out: list[Rule] = []
        for version in self.versions:
            mine = [n for n in self.bypass if n.version == version]
            lan = sorted({n for n in self.lan if n.version == version}, key=_order)
            if self.allow_lan:
                mine += [n for n in lan if n not in mine]
            for network in sorted(set(mine), key=_order):
                out.append(Rule(version, BYPASS_PRIORITY, ("to", str(network), "lookup", "main")))
            if lan and not self.allow_lan:
                out.append(Rule(version, MARK_PRIORITY, ("fwmark", mark, "lookup", "main")))
                for network in lan:
                    words = ("to", str(network), "lookup", table)
                    out.append(Rule(version, LAN_PRIORITY, words))
            suppress = ("lookup", "main", "suppress_prefixlength", "0")
            out.append(Rule(version, SUPPRESS_PRIORITY, suppress))
            out.append(Rule(version, TABLE_PRIORITY, ("not", "fwmark", mark, "lookup", table)))
        return out


def _order(network: IPNetwork) -> tuple[int, int, int]:
    return network.version, int(network.network_address), network.prefixlen


def host_network(address: str) -> IPNetwork | None:
    """``address`` as a /32 or /128 prefix (a bypass rule's), None if it is no IP address
    (a host name) or one that is never routed (loopback, unspecified, link-local)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%")[0])
    except ValueError:
        return None
    if ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ipaddress.ip_network(ip)


# ------------------------------------------------------------------ reading the host


def routes_show(version: int) -> list[str]:
    """Every route of every table, as JSON (to find the tables in use)."""
    return [IP, "-json", _proto(version), "route", "show", "table", "all"]


def rules_show(version: int) -> list[str]:
    return [IP, "-json", _proto(version), "rule", "show"]


def _json_list(text: str) -> list[Any]:
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []


def used_tables(routes: Iterable[str], rules: Iterable[str]) -> set[int]:
    """The numbered tables that hold a route or that a rule looks up, given the outputs of
    :func:`routes_show` and :func:`rules_show` (either family)."""
    used: set[int] = set()
    for text in routes:
        for entry in _json_list(text):
            table = str(entry.get("table", "main"))
            if table.isdigit():
                used.add(int(table))
    for text in rules:
        for entry in _json_list(text):
            table = str(entry.get("table", ""))
            if table.isdigit():
                used.add(int(table))
    return used


def free_table(used: set[int], first: int = FIRST_TABLE) -> int:
    """The first table from ``first`` that nothing uses (wg-quick's choice of its table)."""
    table = first
    while table in used:
        table += 1
    return table


def connected_prefixes(text: str, exclude: str) -> list[IPNetwork]:
    """The prefixes directly connected to this host, from ``ip -json -4|-6 route show table
    main`` output: the kernel's link-scope routes (IPv6: its prefix routes) of every link
    but ``exclude``; link-local and multicast prefixes are left out."""
    found: list[IPNetwork] = []
    for entry in _json_list(text):
        if entry.get("dev") == exclude or entry.get("protocol") != "kernel":
            continue
        if entry.get("type", "unicast") != "unicast":
            continue
        try:
            network = ipaddress.ip_network(str(entry.get("dst")), strict=False)
        except ValueError:
            continue  # "default", or nothing
        if network.is_link_local or network.is_multicast or network.prefixlen == 0:
            continue
        if network.version == 4 and entry.get("scope") != "link":
            continue
        if network not in found:
            found.append(network)
    return found


def default_route_show(version: int) -> list[str]:
    return [IP, "-json", _proto(version), "route", "show", "default"]


def default_interfaces(text: str, exclude: str) -> list[str]:
    """The interfaces of the default routes in ``ip -json -4|-6 route show default`` output
    (multipath ones too), but ``exclude``: where an exit node's traffic leaves the host."""
    found: list[str] = []
    for entry in _json_list(text):
        hops = entry.get("nexthops")
        for hop in [entry, *(hops if isinstance(hops, list) else [])]:
            dev = hop.get("dev") if isinstance(hop, dict) else None
            if isinstance(dev, str) and dev and dev != exclude and dev not in found:
                found.append(dev)
    return found


_RULE = re.compile(r"^(\d+):\s+(.*?)\s*$")


def stale_rules(version: int, rule_text: str, table: int | None = None) -> list[list[str]]:
    """The deletions of rules at this module's priorities that a node left behind (killed
    before it could delete them), given plain ``ip -4|-6 rule show`` output (each deleted
    with the words ``ip rule show`` printed, which ``ip rule del`` reads back); with
    ``table``, only those that name that table or the main table."""
    out: list[list[str]] = []
    for line in rule_text.splitlines():
        match = _RULE.match(line.strip())
        if match is None or int(match.group(1)) not in PRIORITIES:
            continue
        words = match.group(2).split()
        if table is not None and not ({str(table), "main"} & set(words)):
            continue
        out.append([IP, _proto(version), "rule", "del", "pref", match.group(1), *words])
    return out
