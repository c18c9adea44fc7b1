"""The data model as immutable records, and their JSON as the API shows it.

Overlay addresses come from one number per node, ``addr_index`` (1 .. 2^22 - 2): the IPv4
address is 100.64.0.0 + index, the IPv6 address fd7a:115c:a1e0:: + index. The index is
allocated once, when the node is created, and kept for the node's life (restarts, re-logins,
key changes). The indexes of every node's resolver service addresses, 100.100.100.100 and
fd7a:115c:a1e0::53 (:data:`RESERVED_ADDR_INDEXES`), are never allocated.
Times are seconds since the epoch (floats); the API shows them in ISO 8601 UTC.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import Any

IPV4_POOL = ipaddress.IPv4Network("100.64.0.0/10")
IPV6_POOL = ipaddress.IPv6Network("fd7a:115c:a1e0::/48")
MAX_ADDR_INDEX = IPV4_POOL.num_addresses - 2  # not the pool's first or last address
_V4_BASE = int(IPV4_POOL.network_address)
_V6_BASE = int(IPV6_POOL.network_address)
# each node's own resolver listens on these (Tailscale's MagicDNS addresses): no node has them
DNS_SERVICE_ADDRESSES = (
    ipaddress.IPv4Address("100.100.100.100"),
    ipaddress.IPv6Address("fd7a:115c:a1e0::53"),
)
RESERVED_ADDR_INDEXES = frozenset(
    int(a) - (_V4_BASE if a.version == 4 else _V6_BASE) for a in DNS_SERVICE_ADDRESSES
)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    created_at: float
    password: bool = False  # has a password to sign in with (store/accounts.py)
    totp: bool = False  # has enrolled a TOTP second factor
    oidc: bool = False  # made for an account at the identity provider (store/oidc.py)
    groups: tuple[str, ...] = ()  # from its last OIDC sign-in (policy group:NAME)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": iso(self.created_at),
            "password": self.password,
            "totp": self.totp,
            "oidc": self.oidc,
            "groups": list(self.groups),
        }


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    user_id: int
    user: str
    hostname: str
    public_key: str
    addr_index: int
    endpoints: tuple[str, ...]
    tags: tuple[str, ...]
    ephemeral: bool
    expires_at: float | None
    last_seen: float | None
    stream_id: str | None  # the open map stream, if any: the node is online
    stream_replica: str | None  # the server replica that holds it
    created_at: float
    # ICE (POST /api/v1/node/candidates): candidate-attributes, checked (wgpy/candidates.py)
    candidates: tuple[str, ...] = ()
    ice_ufrag: str = ""  # no password: the checks' keys are per pair of nodes, never sent
    # The machine certificate the node proved it holds (server/machines.py), and its name;
    # expires_at is then no later than the certificate's end (or revocation).
    machine_id: int | None = None
    machine: str | None = None

    @property
    def online(self) -> bool:
        return self.stream_id is not None

    @property
    def ipv4(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(_V4_BASE + self.addr_index)

    @property
    def ipv6(self) -> ipaddress.IPv6Address:
        return ipaddress.IPv6Address(_V6_BASE + self.addr_index)

    @property
    def ip_addresses(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
        return self.ipv4, self.ipv6

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self, now: float, *, online: bool | None = None) -> dict[str, Any]:
        """NODE as the API shows it (the node itself and admins)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "user": self.user,
            "hostname": self.hostname,
            "public_key": self.public_key,
            "ipv4": str(self.ipv4),
            "ipv6": str(self.ipv6),
            "endpoints": list(self.endpoints),
            "tags": list(self.tags),
            "ephemeral": self.ephemeral,
            "expires_at": iso(self.expires_at),
            "expired": self.expired(now),
            "last_seen": iso(self.last_seen),
            "online": self.online if online is None else online,
            "created_at": iso(self.created_at),
            "machine": self.machine,
        }

    def peer_json(self, can_reach: bool, reachable_from: bool) -> dict[str, Any]:
        """PEER: what another node's map says of this one (the ICE fields only once the
        node reported candidates)."""
        peer: dict[str, Any] = {
            "public_key": self.public_key,
            "hostname": self.hostname,
            "user": self.user,
            "addresses": [f"{self.ipv4}/32", f"{self.ipv6}/128"],
            "endpoints": list(self.endpoints),
            "tags": list(self.tags),
            "online": self.online,
            "can_reach": can_reach,
            "reachable_from": reachable_from,
        }
        if self.ice_ufrag:
            peer["candidates"] = list(self.candidates)
            peer["ice_ufrag"] = self.ice_ufrag
        return peer

    def peer_view(self) -> tuple[object, ...]:
        """What PEER shows, for telling whether peers must hear of a change (``online``
        last: netmap.py tells a change of it alone by that)."""
        return (
            self.public_key,
            self.hostname,
            self.user,
            self.addr_index,
            self.endpoints,
            self.tags,
            self.candidates,
            self.ice_ufrag,
            self.online,
        )

    def self_view(self) -> tuple[object, ...]:
        """What the node's own record shows, less what churns (online, last_seen)."""
        return (
            self.public_key,
            self.hostname,
            self.user,
            self.addr_index,
            self.endpoints,
            self.tags,
            self.user_id,
            self.ephemeral,
            self.expires_at,
        )


@dataclass(frozen=True, slots=True)
class PreAuthKey:
    id: str
    user_id: int
    user: str
    reusable: bool
    ephemeral: bool
    tags: tuple[str, ...]
    expires_at: float
    used: bool
    created_at: float

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "reusable": self.reusable,
            "ephemeral": self.ephemeral,
            "tags": list(self.tags),
            "expires_at": iso(self.expires_at),
            "expired": self.expires_at <= now,
            "used": self.used,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    expires_at: float | None
    created_at: float

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "expires_at": iso(self.expires_at),
            "expired": self.expires_at is not None and self.expires_at <= now,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class TagsRemoved:
    """A node that lost tags because a new policy no longer lets its user carry them."""

    node_id: int
    name: str  # USER/HOSTNAME
    tags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node_id, "name": self.name, "tags": list(self.tags)}


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    version: int  # 0: never set
    document: dict[str, Any] | None  # None: the default policy
    updated_at: float | None
    tags_removed: tuple[TagsRemoved, ...] = ()  # what setting this policy took off nodes


@dataclass(frozen=True, slots=True)
class MachineRecord:
    """A machine certificate the server knows (issued by its machine CA, wgpy/machinecert.py)."""

    id: int
    name: str
    serial: str  # hex
    fingerprint: str  # SHA-256 of the DER certificate, hex
    not_before: float
    not_after: float
    revoked_at: float | None
    created_at: float

    def valid(self, now: float) -> bool:
        return self.revoked_at is None and self.not_before <= now <= self.not_after

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "serial": self.serial,
            "fingerprint": self.fingerprint,
            "not_before": iso(self.not_before),
            "not_after": iso(self.not_after),
            "expired": now > self.not_after,
            "revoked": self.revoked_at is not None,
            "revoked_at": iso(self.revoked_at),
            "created_at": iso(self.created_at),
        }


# The states of a login request (store/login_requests.py).
PENDING = "pending"
APPROVED = "approved"
REFUSED = "refused"
CANCELLED = "cancelled"
EXPIRED = "expired"  # a pending request past its expiry; never stored as such
LOGIN_METHODS = ("password", "oidc", "admin")


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """A node waiting for a person to sign in and approve its key (``wgpy up
    --login-server`` without an auth key). ``id`` is the path part of the URL the person
    opens; the secret the node waits with is not in here (the store keeps its hash)."""

    id: str
    public_key: str
    hostname: str
    created_at: float
    expires_at: float
    state: str  # PENDING, APPROVED, REFUSED, CANCELLED or EXPIRED
    user: str | None = None  # who approved it
    method: str | None = None  # how they signed in: one of LOGIN_METHODS
    node_id: int | None = None  # the node approved (before: the node a re-login proved)
    machine_id: int | None = None  # the machine certificate the node proved, if any
    message: str | None = None  # why it was refused
    decided_at: float | None = None
    token_taken: bool = False  # the node fetched its token (it gets it once)

    @property
    def pending(self) -> bool:
        return self.state == PENDING

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "public_key": self.public_key,
            "hostname": self.hostname,
            "state": self.state,
            "user": self.user,
            "method": self.method,
            "node_id": self.node_id,
            "machine_id": self.machine_id,
            "message": self.message,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "expires_in": max(0, round(self.expires_at - now)) if self.pending else 0,
            "decided_at": iso(self.decided_at),
        }


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One authentication event (store/audit.py): who, which node, how, from where, and the
    result. Never a secret: no password, code, token or private key material."""

    id: int
    at: float
    event: str  # e.g. "register", "login", "signin", "nodes.delete" (docs/mesh-api.md)
    result: str  # "ok", "refused" (credentials or policy said no) or "failed"
    method: str | None  # "authkey", "token", "password", "oidc", "admin", "machine", ...
    user: str | None
    node_id: int | None
    source: str | None  # the client's address
    detail: str | None  # one sentence: what was refused and why, or what was done

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": iso(self.at),
            "event": self.event,
            "result": self.result,
            "method": self.method,
            "user": self.user,
            "node": self.node_id,
            "source": self.source,
            "detail": self.detail,
        }
