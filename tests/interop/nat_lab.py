"""The NAT lab: an "internet" with public hosts, and node LANs behind home routers.

    internet (namespace): bridge br0 203.0.113.1/24, 2001:db8::1/64, the gateway
      +-- server host   203.0.113.2     2001:db8::2
      +-- relay host    203.0.113.3 +.4 2001:db8::3 +::4    (two addresses: two STUN targets)
      +-- other hosts   203.0.113.5...  (NatLab.host)
      +-- router N      wan0 203.0.113.(100+N) 2001:db8::(100+N)  (NatLab.router)
            lan0 bridge 192.168.N.1/24 (NAT kinds) or 198.18.N.1/24 (firewall),
                        2001:db8:N::1/64 (IPv6 is routed: home routers firewall it, no NAT)
              +-- node  .10, .11, ... eth0, default routes via the router (NatLab.node)

Router kinds, as nftables rules in the router namespace (`ruleset`):
- `easy`: masquerade, which keeps the source port when it is free: the same public port for
  every destination (endpoint-independent mapping), replies only from where packets went.
- `hard`: `masquerade fully-random`: a new random public port for every destination.
- `firewall`: no NAT (the LAN has public addresses); stateful, outbound only.
- `udp_blocked`: as `easy`, but every outbound UDP datagram is dropped (TCP still goes out):
  the networks that allow only web traffic.
Every kind drops unsolicited inbound packets, forwarded and to the router itself (`ct state
new drop` on the WAN side, as home routers do: without it the first unsolicited probe gets a
conntrack entry that takes the port masquerade wanted to keep, and an easy NAT behaves like a
hard one). IPv6 is routed and firewalled the same way for every kind; `udp_blocked` drops
IPv6 UDP too.

Each router's conntrack UDP timeouts (`udp_timeout`: how long a mapping outlives its last
packet) can be lowered; `Router.set_kind` changes the kind mid-test (e.g. hard -> easy) and
`NatLab.move` takes a node from one router to another (it gets the new LAN's addresses).

Everything belongs to the `Lab` it was built in (netns.py): namespaces, and whatever runs in
them, go when the test ends, failing or not. The public addresses are documentation and
benchmarking ranges (RFC 5737, RFC 2544, RFC 3849); the lab's coturn allows them as peers
(coturn.LAB_PEER_RANGES) while denying private ranges, as a real relay does.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .coturn import LAB_PEER_RANGES, Coturn, start_coturn
from .netns import PYTHON, CommandError, Lab, Namespace, Process, run, wait_for

PROBE = Path(__file__).resolve().parent / "nat_probe.py"

Kind = Literal["easy", "hard", "firewall", "udp_blocked"]
KINDS: tuple[Kind, ...] = ("easy", "hard", "firewall", "udp_blocked")
NAT_KINDS: tuple[Kind, ...] = ("easy", "hard", "udp_blocked")

INTERNET4 = ipaddress.ip_network("203.0.113.0/24")  # RFC 5737 TEST-NET-3
INTERNET6 = ipaddress.ip_network("2001:db8::/64")  # RFC 3849
GATEWAY4, GATEWAY6 = "203.0.113.1", "2001:db8::1"
SERVER_HOST = 2  # 203.0.113.2
RELAY_HOSTS = (3, 4)  # 203.0.113.3 and .4
FIRST_HOST = 5
FIRST_ROUTER_HOST = 100  # router N's WAN address is 203.0.113.(100 + N)
MAX_ROUTERS = 150
FIRST_NODE = 10  # a LAN's nodes get .10, .11, ...
NFT_TABLE = "wgpy_router"


def internet4(host: int) -> str:
    return str(INTERNET4[host])


def internet6(host: int) -> str:
    return str(INTERNET6[host])


def lan_networks(index: int, kind: Kind) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """Router `index`'s LAN: private IPv4 behind a NAT, public (RFC 2544) behind a firewall;
    IPv6 is always public (2001:db8:N::/64) and routed."""
    if not 1 <= index <= MAX_ROUTERS:
        raise ValueError(f"router index {index} is outside 1-{MAX_ROUTERS}")
    v4 = f"198.18.{index}.0/24" if kind == "firewall" else f"192.168.{index}.0/24"
    return ipaddress.IPv4Network(v4), ipaddress.IPv6Network(f"2001:db8:{index:x}::/64")


def ruleset(kind: Kind) -> str:
    """The router's nftables table for `kind` (wan0: the internet side, lan0: the LAN)."""
    if kind not in KINDS:
        raise ValueError(f"unknown router kind {kind!r}; choose one of {', '.join(KINDS)}")
    block_udp = (
        '        iifname "lan0" meta l4proto udp counter drop\n' if kind == "udp_blocked" else ""
    )
    nat = ""
    if kind != "firewall":
        random = " fully-random" if kind == "hard" else ""
        nat = f'        oifname "wan0" meta nfproto ipv4 masquerade{random}\n'
    # One transaction: the table is replaced atomically (`add` makes `delete` safe on the
    # first load).
    return (
        f"add table inet {NFT_TABLE}\n"
        f"delete table inet {NFT_TABLE}\n"
        f"table inet {NFT_TABLE} {{\n"
        "    chain input {\n"
        "        type filter hook input priority filter; policy accept;\n"
        '        iifname "wan0" ct state established,related accept\n'
        '        iifname "wan0" meta l4proto ipv6-icmp accept\n'  # neighbour discovery
        '        iifname "wan0" ct state new counter drop\n'
        "    }\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy drop;\n"
        "        ct state established,related accept\n"
        f"{block_udp}"
        '        iifname "lan0" oifname "wan0" accept\n'
        "        counter drop\n"  # unsolicited inbound (counted, as the policy is not)
        "    }\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f"{nat}"
        "    }\n"
        "}\n"
    )


@dataclass(eq=False)
class Host:
    """A public host on the internet bridge."""

    role: str
    ns: Namespace
    ipv4: str
    ipv6: str
    extra4: list[str] = field(default_factory=list)  # more IPv4 addresses on eth0
    extra6: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Host({self.role} {self.ipv4})"


@dataclass(eq=False)
class Router:
    """A home router: wan0 on the internet bridge, lan0 a bridge for its nodes."""

    lab: NatLab
    index: int
    kind: Kind
    ns: Namespace
    wan4: str
    wan6: str
    lan4: ipaddress.IPv4Network
    lan6: ipaddress.IPv6Network
    udp_timeout: int | None = None
    _next_node: itertools.count[int] = field(default_factory=lambda: itertools.count(FIRST_NODE))

    def __repr__(self) -> str:
        return f"Router({self.index} {self.kind} {self.wan4})"

    @property
    def gateway4(self) -> str:
        return str(self.lan4[1])

    @property
    def gateway6(self) -> str:
        return str(self.lan6[1])

    def next_addresses(self) -> tuple[str, str]:
        host = next(self._next_node)
        if host >= self.lan4.num_addresses - 1:
            raise ValueError(f"{self} has no free LAN address left")
        return str(self.lan4[host]), str(self.lan6[host])

    def set_kind(self, kind: Kind, *, flush_conntrack: bool = False) -> None:
        """Change what the router does, atomically (e.g. hard -> easy mid-test).

        The flows it already tracks keep their mappings until they time out (as a router's
        do when its NAT settings change without a reboot); `flush_conntrack` forgets them at
        once, as a reboot would. A firewall's LAN is public and a NAT's private, so a kind
        changes only among the NAT kinds; move the node to another router instead.
        """
        if (kind == "firewall") != (self.kind == "firewall"):
            raise ValueError(
                f"{self} cannot become {kind!r}: a firewall's LAN has public addresses and a "
                "NAT's private ones; move the node to a router of that kind instead."
            )
        self.ns.run(["nft", "-f", "-"], input=ruleset(kind), timeout=15)
        self.kind = kind
        if flush_conntrack:
            self.flush_conntrack()

    def set_udp_timeout(self, seconds: int) -> None:
        """How long a UDP mapping lives after its last packet (both conntrack UDP timeouts:
        a flow seen both ways becomes a "stream" with a timeout of its own)."""
        self.ns.sysctl("net.netfilter.nf_conntrack_udp_timeout", seconds)
        self.ns.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", seconds)
        self.udp_timeout = seconds

    def flush_conntrack(self) -> None:
        """Forget every flow the router tracks (both families), its mappings included."""
        self.ns.run(["conntrack", "-F"], timeout=10)

    def conntrack(self) -> str:
        """The router's connection-tracking table, for failure reports."""
        return self.ns.run(["conntrack", "-L"], check=False, timeout=10).stdout

    def drops(self) -> int:
        """Packets the router's rules dropped on purpose (unsolicited inbound, blocked UDP)."""
        out = self.ns.run(["nft", "-j", "list", "table", "inet", NFT_TABLE], timeout=10).stdout
        total = 0
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            exprs = rule.get("expr", [])
            if any("drop" in e for e in exprs):
                total += sum(e["counter"]["packets"] for e in exprs if "counter" in e)
        return total


@dataclass(eq=False)
class Node:
    """A machine on a router's LAN (eth0); `NatLab.move` may put it behind another router."""

    role: str
    ns: Namespace
    router: Router
    ipv4: str
    ipv6: str

    def __repr__(self) -> str:
        return f"Node({self.role} {self.ipv4} behind {self.router})"


class NatLab:
    """The internet, its public hosts (a server and a relay), routers and their nodes.

    Build it inside a `Lab` (the `lab` fixture): `nat = NatLab(lab)`, then
    `r = nat.router("easy", udp_timeout=5)`, `a = nat.node("a", r)`, `nat.move(a, other)`,
    `r.set_kind("easy")`. `nat.probe(ns, "stun", ...)` runs nat_probe.py in a namespace.
    """

    def __init__(self, lab: Lab, *, ipv6: bool = True) -> None:
        self.lab = lab
        self.ipv6 = ipv6
        self.routers: list[Router] = []
        self.nodes: list[Node] = []
        self.hosts: list[Host] = []
        self._router_index = itertools.count(1)
        self._host_index = itertools.count(FIRST_HOST)
        self._port = itertools.count(1)
        self.internet = self._namespace("inet")
        self._bridge(self.internet, "br0")
        self._address(self.internet, "br0", f"{GATEWAY4}/24", f"{GATEWAY6}/64")
        self.internet.ip("link", "set", "br0", "up")
        self.internet.sysctl("net.ipv4.ip_forward", 1)
        self.internet.sysctl("net.ipv4.conf.all.send_redirects", 0)
        self.internet.sysctl("net.ipv4.conf.br0.send_redirects", 0)
        if ipv6:
            self.internet.sysctl("net.ipv6.conf.all.forwarding", 1)
        self.server = self._add_host("server", SERVER_HOST)
        self.relay = self._add_host("relay", *RELAY_HOSTS)

    # ------------------------------------------------------------------ building

    def _namespace(self, role: str) -> Namespace:
        """A namespace of the lab, set up before any interface is made in it:
        - bridged frames skip netfilter: where br_netfilter is loaded (a Docker host), they
          would otherwise pass the namespace's IP hooks, so the internet bridge loses routed
          replies now and then and a router filters traffic between the nodes of its LAN;
        - IPv6 answers at once: no duplicate address detection (which holds a new link-local
          address back for a second or so, and neighbour discovery needs it) and no redirects
          (paths stay as built)."""
        ns = self.lab.namespace(role)
        script = ns.BRIDGE_NF_OFF
        if self.ipv6:
            for scope in ("all", "default"):
                for key in ("accept_dad", "accept_redirects"):
                    script += f"; echo 0 > /proc/sys/net/ipv6/conf/{scope}/{key}"
        ns.run(["sh", "-c", script], timeout=10)
        return ns

    def _bridge(self, ns: Namespace, name: str) -> None:
        ns.add_bridge(name)  # with a fixed address (netns.Namespace.add_bridge says why)

    def _address(self, ns: Namespace, dev: str, v4: str, v6: str) -> None:
        ns.ip("addr", "add", v4, "dev", dev)
        if self.ipv6:
            ns.ip("addr", "add", v6, "dev", dev, "nodad")

    def _to_bridge(self, ns: Namespace, dev: str, bridge_ns: Namespace, bridge: str) -> str:
        """A veth from `ns` (named `dev`) to a port of `bridge` in `bridge_ns`."""
        port = f"p{next(self._port)}"
        run(["ip", "link", "add", dev, "netns", ns.name, "type", "veth",
             "peer", "name", port, "netns", bridge_ns.name])  # fmt: skip
        bridge_ns.ip("link", "set", port, "master", bridge, "up")
        ns.ip("link", "set", dev, "up")
        return port

    def _add_host(self, role: str, *hosts: int) -> Host:
        ns = self._namespace(role)
        self._to_bridge(ns, "eth0", self.internet, "br0")
        for h in hosts:
            self._address(ns, "eth0", f"{internet4(h)}/24", f"{internet6(h)}/64")
        ns.ip("route", "add", "default", "via", GATEWAY4)
        if self.ipv6:
            ns.ip("-6", "route", "add", "default", "via", GATEWAY6)
        v4, v6 = [internet4(h) for h in hosts], [internet6(h) for h in hosts]
        host = Host(role, ns, v4[0], v6[0], v4[1:], v6[1:])
        self.hosts.append(host)
        self._wait_reachable(ns, [GATEWAY4, *([GATEWAY6] if self.ipv6 else [])])
        return host

    def host(self, role: str) -> Host:
        """Another public host on the internet (a peer with a public address)."""
        index = next(self._host_index)
        if index >= FIRST_ROUTER_HOST:
            raise ValueError(
                f"the lab's internet has room for {FIRST_ROUTER_HOST - FIRST_HOST} hosts"
            )
        return self._add_host(role, index)

    def router(self, kind: Kind, *, udp_timeout: int | None = None) -> Router:
        """A router of `kind` on the internet with an empty LAN; `udp_timeout` lowers its
        conntrack UDP timeouts (the kernel's defaults are 30 s, and 120 s for streams)."""
        index = next(self._router_index)
        lan4, lan6 = lan_networks(index, kind)
        ns = self._namespace(f"r{index}{kind[:4]}")
        wan4, wan6 = internet4(FIRST_ROUTER_HOST + index), internet6(FIRST_ROUTER_HOST + index)
        router = Router(self, index, kind, ns, wan4, wan6, lan4, lan6)
        self._to_bridge(ns, "wan0", self.internet, "br0")
        self._address(ns, "wan0", f"{wan4}/24", f"{wan6}/64")
        ns.ip("route", "add", "default", "via", GATEWAY4)
        self._bridge(ns, "lan0")
        self._address(ns, "lan0", f"{router.gateway4}/24", f"{router.gateway6}/64")
        ns.ip("link", "set", "lan0", "up")
        ns.sysctl("net.ipv4.ip_forward", 1)
        if self.ipv6:
            ns.ip("-6", "route", "add", "default", "via", GATEWAY6)
            ns.sysctl("net.ipv6.conf.all.forwarding", 1)
            self.internet.ip("-6", "route", "add", str(lan6), "via", wan6)
        if kind == "firewall":  # a routed public LAN
            self.internet.ip("route", "add", str(lan4), "via", wan4)
        router.set_kind(kind)  # loads the rules, and with them conntrack
        if udp_timeout is not None:
            router.set_udp_timeout(udp_timeout)
        self.routers.append(router)
        self._wait_reachable(ns, [GATEWAY4, *([GATEWAY6] if self.ipv6 else [])])
        return router

    def node(self, role: str, router: Router) -> Node:
        """A machine on `router`'s LAN, its eth0 addressed from that LAN."""
        ns = self._namespace(role)
        node = Node(role, ns, router, "", "")
        self._plug(node, router)
        self.nodes.append(node)
        return node

    def _plug(self, node: Node, router: Router) -> None:
        ipv4, ipv6 = router.next_addresses()
        self._to_bridge(node.ns, "eth0", router.ns, "lan0")
        self._address(node.ns, "eth0", f"{ipv4}/24", f"{ipv6}/64")
        node.ns.ip("route", "add", "default", "via", router.gateway4)
        if self.ipv6:
            node.ns.ip("-6", "route", "add", "default", "via", router.gateway6)
        node.router, node.ipv4, node.ipv6 = router, ipv4, ipv6
        self._wait_reachable(node.ns, [router.gateway4, *([router.gateway6] if self.ipv6 else [])])

    def move(self, node: Node, router: Router) -> None:
        """Unplug `node` from its LAN and plug it into `router`'s: its eth0 goes away and comes
        back with the new LAN's addresses (processes in the node keep running)."""
        node.ns.ip("link", "del", "eth0")
        self._plug(node, router)

    def _wait_reachable(self, ns: Namespace, addresses: Sequence[str]) -> None:
        for address in addresses:
            wait_for(
                lambda a=address: ns.ping(a, count=1, wait=0.5, interval=0.2) == 1,
                timeout=10,
                interval=0.05,
                what=f"{address} to answer {ns.name}",
            )

    def coturn(self, **options: Any) -> Coturn:
        """coturn on the relay host, listening on all its addresses (UDP/TCP 3478, TLS 443),
        the lab's public ranges allowed as peers (options go to `start_coturn`)."""
        addresses = [self.relay.ipv4, *self.relay.extra4]
        if self.ipv6:
            addresses += [self.relay.ipv6, *self.relay.extra6]
        return start_coturn(
            self.lab,
            ns=self.relay.ns,
            addresses=addresses,
            allowed_peers=LAB_PEER_RANGES,
            **options,
        )

    # ------------------------------------------------------------------ probes

    def probe(self, ns: Namespace, *args: str, timeout: float = 30) -> Any:
        """Run nat_probe.py in `ns` to completion; its JSON output (the last line)."""
        result = ns.run([PYTHON, str(PROBE), *args], check=False, timeout=timeout)
        lines = result.stdout.strip().splitlines()
        if not lines:
            raise CommandError(
                f"nat_probe.py {' '.join(args)} in {ns.name} printed nothing "
                f"(exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        return json.loads(lines[-1])

    def spawn_probe(self, ns: Namespace, *args: str, log: str) -> Process:
        """Start nat_probe.py in the background in `ns` (killed when the lab closes)."""
        return ns.spawn([PYTHON, str(PROBE), *args], log=log)

    def describe(self) -> str:
        """The lab's layout, routers' rules and conntrack tables, for failure reports."""
        parts = [f"hosts: {self.hosts}", f"routers: {self.routers}", f"nodes: {self.nodes}"]
        for router in self.routers:
            try:
                rules = router.ns.run(["nft", "list", "ruleset"], timeout=10).stdout
            except (CommandError, subprocess.TimeoutExpired) as e:
                rules = f"(nft failed: {e})"
            parts.append(f"----- {router}\n{rules}\nconntrack:\n{router.conntrack()}")
        return "\n".join(parts)


def probe_events(process: Process) -> list[dict[str, Any]]:
    """The JSON lines a background probe has printed so far (its log mixes in nothing else)."""
    events = []
    for line in process.output().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events
