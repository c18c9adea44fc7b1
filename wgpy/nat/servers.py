"""Where the STUN and TURN servers are: the coordination server's ``GET /api/v1/node/nat``
answer (docs/mesh-api.md), and TURN URLs (RFC 7065), read without I/O.

The answer is input from the network: entries that are not what the contract says are left
out (and counted in :attr:`NatConfig.skipped`), never trusted and never fatal. A STUN server
is an IP address or a host name, and a port (the server writes the name the node reached it
by; :func:`wgpy.nat.discovery.resolve` turns it into addresses). A TURN URL is
``turn:HOST[:PORT][?transport=udp|tcp]`` or ``turns:HOST[:PORT][?transport=tcp]``, where HOST
may be a name too.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ..endpoint import Endpoint

__all__ = [
    "DEFAULT_REFRESH",
    "NatConfig",
    "TurnServer",
    "TurnUrl",
    "parse_nat_config",
    "parse_stun_address",
    "parse_turn_url",
]

DEFAULT_REFRESH = 600.0  # seconds before the NAT configuration is asked for again
MIN_REFRESH = 10.0  # seconds: a server that asks for less is not obeyed
MAX_STUN_SERVERS = 8
MAX_TURN_SERVERS = 8
MAX_TURN_URLS = 8  # per TURN server
MAX_TEXT = 512  # characters in a URL, a user name or a password
MAX_ENTRIES = 64  # entries of a list looked at (the rest are not even read)
TURN_PORT = 3478  # RFC 8656: turn: over UDP and TCP
TURNS_PORT = 5349  # RFC 8656: turns: over TLS (deployments use 443 too)
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")  # a DNS name


@dataclass(frozen=True)
class TurnUrl:
    """One way to reach a TURN server: over UDP, TCP or TLS (``turns:``)."""

    secure: bool
    host: str  # an IP address (IPv6 without brackets) or a name
    port: int
    transport: str  # "udp" or "tcp"
    text: str  # as the server wrote it

    @property
    def kind(self) -> str:
        """``udp``, ``tcp`` or ``tls``: what ``wgpy netcheck`` reports."""
        return "tls" if self.secure else self.transport

    @property
    def address(self) -> str:
        """``host:port`` with IPv6 in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TurnServer:
    """A relay and the short-lived credentials to use it (coturn's REST scheme)."""

    urls: tuple[TurnUrl, ...]
    username: str
    password: str = field(repr=False)
    expires: float  # UNIX time

    @property
    def name(self) -> str:
        """The relay's host (what ``wgpy netcheck`` and ``wgpy status`` call it)."""
        return self.urls[0].host


@dataclass(frozen=True)
class NatConfig:
    """The STUN servers to learn this node's public addresses from, the relays, and when to
    ask again."""

    stun: tuple[Endpoint, ...] = ()
    turn: tuple[TurnServer, ...] = ()
    refresh: float = DEFAULT_REFRESH
    skipped: int = 0  # entries left out as unusable


def parse_turn_url(text: str) -> TurnUrl:
    """A ``turn:`` or ``turns:`` URL (RFC 7065). ValueError says what is wrong (without
    quoting the text, which came from the network)."""
    if len(text) > MAX_TEXT:
        raise ValueError("the TURN URL is too long")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() not in ("turn", "turns"):
        raise ValueError("a TURN URL starts with turn: or turns:")
    secure = scheme.lower() == "turns"
    rest, question, query = rest.partition("?")
    transport = "tcp" if secure else "udp"
    if question:
        name, equals, value = query.partition("=")
        if name.lower() != "transport" or not equals or value.lower() not in ("udp", "tcp"):
            raise ValueError("the only query a TURN URL may have is transport=udp or tcp")
        transport = value.lower()
        if secure and transport != "tcp":
            raise ValueError("turns: runs over TCP (TLS); DTLS is not supported")
    port = TURNS_PORT if secure else TURN_PORT
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise ValueError("a ']' is missing in the TURN URL")
        host, after = rest[1:close], rest[close + 1 :]
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            raise ValueError("only an IPv6 address may be in square brackets") from None
        if after:
            if not after.startswith(":"):
                raise ValueError("the TURN URL has text after its host")
            port = _port(after[1:])
    else:
        if rest.count(":") > 1:
            raise ValueError("an IPv6 address in a TURN URL must be in square brackets")
        host, colon, port_text = rest.partition(":")
        if colon:
            port = _port(port_text)
    if not host or any(c.isspace() or c in "/@#" for c in host):
        raise ValueError("the TURN URL has no usable host")
    return TurnUrl(secure=secure, host=host, port=port, transport=transport, text=text)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not 0 < int(text) <= 0xFFFF:
        raise ValueError("the port is not a number from 1 to 65535")
    return int(text)


def parse_stun_address(text: Any) -> Endpoint:
    """A STUN server as the contract writes it: ``IP:PORT``, ``[IPv6]:PORT`` or ``NAME:PORT``
    (the name the node used to reach the server; resolved when used). ValueError if not."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError("a STUN server is HOST:PORT")
    try:
        endpoint = Endpoint.parse_address(text)
    except ValueError:
        host, colon, port = text.rpartition(":")
        if not colon or not _HOST_NAME.fullmatch(host) or not (port.isascii() and port.isdigit()):
            raise ValueError("a STUN server is IP:PORT, [IPv6]:PORT or NAME:PORT") from None
        endpoint = Endpoint(host.lower(), _port(port))
    if endpoint.port == 0:
        raise ValueError("a STUN server's port is from 1 to 65535")
    return endpoint


def parse_nat_config(raw: Any) -> NatConfig:
    """The answer of ``GET /api/v1/node/nat``. ValueError if it is not a JSON object; bad
    entries in it are skipped and counted."""
    if not isinstance(raw, dict):
        raise ValueError("the server's NAT configuration is not a JSON object")
    skipped = 0
    stun: list[Endpoint] = []
    entries = raw.get("stun")
    for entry in entries[:MAX_ENTRIES] if isinstance(entries, list) else []:
        try:
            endpoint = parse_stun_address(entry)
        except ValueError:
            skipped += 1
            continue
        if endpoint not in stun and len(stun) < MAX_STUN_SERVERS:
            stun.append(endpoint)
    turn: list[TurnServer] = []
    servers = raw.get("turn")
    for server in servers[:MAX_ENTRIES] if isinstance(servers, list) else []:
        parsed = _turn_server(server)
        if parsed is None:
            skipped += 1
        elif len(turn) < MAX_TURN_SERVERS:
            turn.append(parsed)
    refresh = raw.get("refresh")
    if isinstance(refresh, int | float) and not isinstance(refresh, bool) and refresh > 0:
        seconds = max(MIN_REFRESH, min(float(refresh), 86400.0))
    else:
        seconds = DEFAULT_REFRESH
    return NatConfig(stun=tuple(stun), turn=tuple(turn), refresh=seconds, skipped=skipped)


def _turn_server(raw: Any) -> TurnServer | None:
    if not isinstance(raw, dict):
        return None
    texts = raw.get("urls")
    username, password, expires = raw.get("username"), raw.get("password"), raw.get("expires")
    if not isinstance(texts, list) or not texts:
        return None
    if not all(isinstance(t, str) and 0 < len(t) <= MAX_TEXT for t in (username, password)):
        return None
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        return None
    urls: list[TurnUrl] = []
    for text in texts[:MAX_TURN_URLS]:
        try:
            urls.append(parse_turn_url(text if isinstance(text, str) else ""))
        except ValueError:
            continue
    if not urls:
        return None
    assert isinstance(username, str) and isinstance(password, str)
    return TurnServer(urls=tuple(urls), username=username, password=password, expires=expires)
