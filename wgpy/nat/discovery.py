"""Where this node is, as its peers may see it: ICE candidates (RFC 8445 section 5.1).

- Host candidates: the host's own addresses (those the node reports as its endpoints) with
  the WireGuard listen port.
- Server-reflexive candidates: the address and port a NAT gave the WireGuard socket, learned
  by STUN Binding requests (RFC 8489) sent through :class:`~wgpy.nat.stunmux.StunMux`, so
  from that very socket: the mapping WireGuard's datagrams get. IPv4 and IPv6 alike, to each
  STUN server given (the coordination server's, :mod:`wgpy.nat.servers`).
- Whether the mapping varies by destination (a "hard" NAT, one port per destination): two
  STUN servers at different addresses that see different mapped addresses.

The candidates are aioice :class:`~aioice.Candidate` objects, with foundations and priorities
as RFC 8445 computes them, and one ICE ufrag (:class:`IceCredentials`) for the whole run of
a node (the keys of the checks are per peer: :func:`wgpy.nat.ice.derive_pair_keys`).
Everything here is without I/O except :func:`probe` and :func:`discover`, which send through
the mux.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aioice import Candidate, stun
from aioice.candidate import candidate_foundation

from ..endpoint import Endpoint, EndpointKey, RelayKey
from .stunmux import StunMux

__all__ = [
    "MAX_CANDIDATES",
    "Discovery",
    "IceCredentials",
    "StunProbe",
    "candidate_list",
    "candidate_priority",
    "discover",
    "host_candidates",
    "probe",
    "reflexive_candidates",
    "resolve",
]

MAX_CANDIDATES = 16  # reported at most (the server's limit)
MAX_REFLEXIVE = 4  # server-reflexive candidates kept out of what the STUN servers saw
COMPONENT = 1  # WireGuard is one UDP flow: ICE component 1
TYPE_PREFERENCE = {"host": 126, "prflx": 110, "srflx": 100, "relay": 0}  # RFC 8445 5.1.2.2
PROBE_RTO = 0.1  # seconds before a STUN Binding request is sent again ...
PROBE_RETRIES = 4  # ... this many times: a server that is silent for 3.1 s is down
RESOLVE_TIMEOUT = 3.0  # seconds to resolve a STUN server's name
MAX_STUN_ADDRESSES = 8  # asked at once, names resolved

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class IceCredentials:
    """This node's ICE user name fragment (RFC 8445 section 5.3), made once per run of the
    node. There is no password to publish: the checks with each peer are keyed with a secret
    only the two nodes can derive (:func:`wgpy.nat.ice.derive_pair_keys`), fresh with each
    new ufrag."""

    ufrag: str

    @classmethod
    def generate(cls, rng: Callable[[int], bytes] = os.urandom) -> IceCredentials:
        """8 ice-chars (``A-Z a-z 0-9 + /``): 48 random bits."""
        return cls(ufrag=base64.b64encode(rng(6)).decode("ascii"))


@dataclass(frozen=True)
class StunProbe:
    """One STUN Binding request to one server: what it saw (``mapped``), how long it took,
    the local address the answer came to (``local``, the candidate's base), or ``error``."""

    server: Endpoint
    mapped: Endpoint | None = None
    rtt: float | None = None
    local: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Discovery:
    """What the STUN servers saw of this node's socket."""

    probes: tuple[StunProbe, ...] = ()

    @property
    def udp(self) -> bool:
        """Whether any STUN server answered (UDP gets out and back)."""
        return any(p.mapped is not None for p in self.probes)

    def answered(self, version: int) -> list[StunProbe]:
        return [p for p in self.probes if p.mapped is not None and _version(p.server) == version]

    def public(self, version: int) -> Endpoint | None:
        """The address and port the first STUN server of that IP version saw."""
        answered = self.answered(version)
        return answered[0].mapped if answered else None

    def mapping_varies(self, version: int = 4) -> bool | None:
        """Whether servers at different addresses saw different mappings; None when fewer
        than two such servers answered (it cannot be told)."""
        answered = self.answered(version)
        if len({p.server for p in answered}) < 2:
            return None
        return len({p.mapped for p in answered}) > 1


def candidate_priority(kind: str, local_preference: int, component: int = COMPONENT) -> int:
    """RFC 8445 section 5.1.2.1: 2^24 type preference + 2^8 local preference + (256 -
    component)."""
    if not 0 <= local_preference <= 0xFFFF:
        raise ValueError("an ICE local preference is from 0 to 65535")
    return (TYPE_PREFERENCE[kind] << 24) + (local_preference << 8) + (256 - component)


def _local_preferences(addresses: Sequence[str]) -> list[int]:
    """A distinct local preference for each address (RFC 8445 5.1.2.1 asks for that on a
    multihomed host): IPv6 above IPv4 (RFC 8421), then in the order given."""
    order = sorted(range(len(addresses)), key=lambda i: (":" not in addresses[i], i))
    preferences = [0] * len(addresses)
    for rank, i in enumerate(order):
        preferences[i] = 0xFFFF - rank
    return preferences


def host_candidates(addresses: Iterable[IPAddress | str], port: int) -> list[Candidate]:
    """One host candidate for each address (duplicates once) on the WireGuard ``port``."""
    hosts: list[str] = []
    for address in addresses:
        host = str(Endpoint.from_address(ipaddress.ip_address(address), port).host)
        if host not in hosts:
            hosts.append(host)
    return [
        Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=COMPONENT,
            transport="udp",
            priority=candidate_priority("host", preference),
            host=host,
            port=port,
            type="host",
        )
        for host, preference in zip(hosts, _local_preferences(hosts), strict=True)
    ]


def reflexive_candidates(discovery: Discovery, port: int) -> list[Candidate]:
    """One server-reflexive candidate for each distinct mapping the STUN servers saw (at
    most :data:`MAX_REFLEXIVE`), based on the local address the answer came to."""
    seen: dict[Endpoint, str] = {}
    for p in discovery.probes:
        if p.mapped is not None and p.mapped not in seen and len(seen) < MAX_REFLEXIVE:
            seen[p.mapped] = p.local or ("::" if ":" in p.mapped.host else "0.0.0.0")
    mapped = list(seen)
    preferences = _local_preferences([m.host for m in mapped])
    return [
        Candidate(
            foundation=candidate_foundation("srflx", "udp", base),
            component=COMPONENT,
            transport="udp",
            priority=candidate_priority("srflx", preference),
            host=m.host,
            port=m.port,
            type="srflx",
            related_address=base,
            related_port=port,
        )
        for (m, base), preference in zip(seen.items(), preferences, strict=True)
    ]


def candidate_list(
    addresses: Iterable[IPAddress | str], port: int, discovery: Discovery | None = None
) -> list[Candidate]:
    """This node's candidates, highest priority first, at most :data:`MAX_CANDIDATES`: the
    host candidates and, from ``discovery``, the server-reflexive ones that are not a host
    candidate already (a host with a public address and no NAT; RFC 8445 5.1.3)."""
    hosts = host_candidates(addresses, port)
    mine = {(c.host, c.port) for c in hosts}
    reflexive = [
        c
        for c in reflexive_candidates(discovery or Discovery(), port)
        if (c.host, c.port) not in mine
    ]
    kept = reflexive + hosts[: MAX_CANDIDATES - len(reflexive)]
    return sorted(kept, key=lambda c: -c.priority)


# ---------------------------------------------------------------------- STUN, through the mux


async def probe(
    mux: StunMux, server: Endpoint, *, rto: float = PROBE_RTO, retries: int = PROBE_RETRIES
) -> StunProbe:
    """Send one STUN Binding request to ``server`` from the mux's socket; what it saw."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    started = mux.loop.time()
    try:
        response, came_to = await mux.transact(request, server.as_key(), rto=rto, retries=retries)
    except stun.TransactionError as e:
        return StunProbe(server, error=str(e))
    rtt = mux.loop.time() - started
    attributes = response.attributes
    address: Any = attributes.get("XOR-MAPPED-ADDRESS", attributes.get("MAPPED-ADDRESS"))
    try:  # MAPPED-ADDRESS: an RFC 3489 server
        mapped = Endpoint.from_address(ipaddress.ip_address(address[0]), int(address[1]))
    except (TypeError, ValueError, IndexError):
        return StunProbe(server, rtt=rtt, error=f"{server} answered without a mapped address")
    if mapped.port == 0 or _version(mapped) != _version(server):
        return StunProbe(server, rtt=rtt, error=f"{server} answered with an unusable address")
    return StunProbe(server, mapped=mapped, rtt=rtt, local=local_address(came_to))


async def discover(
    mux: StunMux,
    servers: Iterable[Endpoint],
    *,
    rto: float = PROBE_RTO,
    retries: int = PROBE_RETRIES,
) -> Discovery:
    """Ask every STUN server at once (each address once; a name at each of its addresses,
    IPv4 and IPv6); what they saw. A name that does not resolve is a probe with an error."""
    addresses, failed = await resolve(servers)
    probes = await asyncio.gather(*(probe(mux, s, rto=rto, retries=retries) for s in addresses))
    return Discovery((*failed, *probes))


async def resolve(
    servers: Iterable[Endpoint], *, timeout: float = RESOLVE_TIMEOUT
) -> tuple[list[Endpoint], list[StunProbe]]:
    """The addresses of ``servers`` (at most :data:`MAX_STUN_ADDRESSES`, in order, each once):
    an address as it is, a name as all its IPv4 and IPv6 addresses; and a failed probe for
    each name that does not resolve within ``timeout`` seconds."""
    unique = list(dict.fromkeys(servers))
    answers = await asyncio.gather(*(_addresses(s, timeout) for s in unique))
    found: list[Endpoint] = []
    failed: list[StunProbe] = []
    for server, answer in zip(unique, answers, strict=True):
        if isinstance(answer, str):
            failed.append(StunProbe(server, error=answer))
            continue
        found += [a for a in answer if a not in found]
    return found[:MAX_STUN_ADDRESSES], failed


async def _addresses(server: Endpoint, timeout: float) -> list[Endpoint] | str:
    """``server``'s addresses, or why there are none."""
    if server.is_numeric:
        return [server]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM)
    except (OSError, TimeoutError) as e:
        why = "no answer in time" if isinstance(e, TimeoutError) else e.strerror or str(e)
        return f"cannot resolve {server.host} ({why})"
    out: list[Endpoint] = []
    for info in infos:
        try:
            address = Endpoint.from_address(ipaddress.ip_address(str(info[4][0])), server.port)
        except ValueError:
            continue
        if address not in out:
            out.append(address)
    return out


def local_address(endpoint: EndpointKey) -> str | None:
    """The local address a datagram arrived at, from the sticky source the bind keeps in
    its endpoint (an IP_PKTINFO or IPV6_PKTINFO control message, see :mod:`wgpy.endpoint`);
    None where there is none."""
    if len(endpoint) != 3 or type(endpoint) is RelayKey:
        return None
    level, _kind, data = endpoint[2]  # type: ignore[misc]
    try:
        if level == socket.IPPROTO_IP and len(data) >= 12:
            return socket.inet_ntop(socket.AF_INET, data[4:8])  # ipi_spec_dst
        if level == socket.IPPROTO_IPV6 and len(data) >= 16:
            return str(ipaddress.IPv6Address(data[:16]))
    except (OSError, ValueError):
        pass
    return None


def _version(endpoint: Endpoint) -> int:
    return 6 if ":" in endpoint.host else 4
