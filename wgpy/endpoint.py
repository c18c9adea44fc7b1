"""Where a WireGuard peer is on the underlay: one type, parsed and written in wg's syntax.

``192.0.2.1:51820``, ``[2001:db8::1]:51820``, ``[fe80::1%eth0]:51820``: an address and a
UDP port, IPv6 in square brackets (with its ``%zone`` where it is link-local). Two parsers,
for two kinds of input:

- :meth:`Endpoint.parse`, a config file's ``Endpoint =`` as ``wg``'s ``config.c`` splits it:
  host names (resolved later, by :func:`wgpy.config.resolve_endpoint` where ``wgpy up`` and
  ``wg setconf`` resolve them), UDP service names for the port, and IPv6 without brackets
  split at the last colon. Errors quote the text: it is the user's own line.
- :meth:`Endpoint.parse_address`, what arrives from a program or the network (UAPI
  ``endpoint=`` lines, the coordination server's JSON, the map): exactly Go's
  ``netip.ParseAddrPort``, numeric only, and errors that do not quote the text (they are
  logged, and a misplaced key must not reach a log).

Both give an :class:`Endpoint`; ``str()`` writes it back as ``wg`` prints it.

The core's key. The sans-IO core (:mod:`wgpy.protocol`) and the UDP side
(:mod:`wgpy.device.udp`) do not hold :class:`Endpoint` objects: there a peer's endpoint is a
plain tuple, ``(host, port)``, or ``(host, port, source)`` for one read from the network, where
``source`` is the local address the datagram arrived at (the IP_PKTINFO/IPV6_PKTINFO control
message that answers are sent with, see :mod:`wgpy.device.udp`). Tuples are hashed and compared
per packet in the hot path (a GSO run is one endpoint, source included), so they stay tuples.
``host`` in a key is the same text as :attr:`Endpoint.host` (IPv6 without brackets, with its
``%zone``), so :meth:`Endpoint.as_key` and :meth:`Endpoint.from_key` convert without parsing;
``from_key`` drops the source, which is this host's side, not where the peer is.

A relayed path (TURN, :mod:`wgpy.nat.relay`) is a :class:`RelayKey`, ``(host, port, link)``:
the peer's address as the relay sees it and the relay link that reaches it. It is a tuple of
three like a key with a source, so the core hashes, compares and stores it the same way, but
of its own type: the core's ``without_source`` drops only a plain tuple's third element, so
a relayed path keeps its link when the core forgets sources, and
:meth:`wgpy.device.udp.UdpBind.send_batch` tells it apart inside the branch it already takes
for keys of three (``type(key) is RelayKey``, once per run of datagrams): a direct path's key,
with or without a source, costs nothing more than before.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Endpoint", "EndpointKey", "RelayKey", "RelayLink", "Source", "host_text"]

Source = tuple[int, int, bytes]
"""Where answers to a peer leave from: an IP_PKTINFO or IPV6_PKTINFO control message for
``sendmsg``, (level, type, data)."""


class RelayLink(Protocol):
    """What a relayed path's key names: a link through a relay that sends to a peer."""

    @property
    def name(self) -> str:
        """The relay's name (what ``wgpy status`` shows)."""
        ...

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        """Send ``data`` to ``address`` through the relay (counted, never raised: UDP)."""
        ...


class RelayKey(tuple[str, int, RelayLink]):
    """The key of a relayed path: ``(host, port, link)``, see the module docstring."""

    __slots__ = ()

    def __new__(cls, host: str, port: int, link: RelayLink) -> RelayKey:
        return tuple.__new__(cls, (host, port, link))

    def __repr__(self) -> str:
        return f"RelayKey({self[0]!r}, {self[1]!r}, via {self[2].name!r})"


EndpointKey = tuple[str, int] | tuple[str, int, Source] | RelayKey
"""The core's and the UDP bind's form of an endpoint (see the module docstring)."""

_DECIMAL = re.compile(r"[0-9]+")  # ASCII digits only: no sign, no spaces, no other scripts
_SERVICE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def host_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as Go's ``netip.Addr.String()`` writes it (IPv4-mapped IPv6 in dotted form,
    where Python before 3.13 writes hex)."""
    if ip.version == 6:
        assert isinstance(ip, ipaddress.IPv6Address)
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return f"::ffff:{mapped}" + (f"%{ip.scope_id}" if ip.scope_id else "")
    return str(ip)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host (an IP address, or a host name from a config file) and a UDP port.

    ``host`` is written without brackets; an IPv6 address keeps its ``%zone``. Endpoints
    from :meth:`parse_address` and :meth:`from_address` have their address in canonical form,
    so two of them are equal when they name the same address and port."""

    host: str
    port: int

    # ------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``host:port``, ``ipv4:port`` or ``[ipv6]:port``, as ``wg`` splits them (a config
        file's ``Endpoint =``); the port may be 0 to 65535 or a UDP service name. Nothing is
        resolved. ValueError says what is wrong."""
        if not text:
            raise ValueError("expected host:port or [IPv6 address]:port, got nothing")
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise ValueError(f"there is no ']' to match the '[' in {_shown(text)}")
            host, rest = text[1:close], text[close + 1 :]
            if not rest.startswith(":") or len(rest) == 1:
                raise ValueError(f"there is no port after the ']' in {_shown(text)}")
            port_text = rest[1:]
        else:
            host, colon, port_text = text.rpartition(":")
            if not colon or not port_text:
                raise ValueError(f"expected host:port or [IPv6 address]:port, got {_shown(text)}")
        if not host:
            raise ValueError(f"there is no host before the port in {_shown(text)}")
        return cls(host, parse_port(port_text))

    @classmethod
    def parse_address(cls, text: str) -> Endpoint:
        """An endpoint from ``1.2.3.4:51820``, ``[2001:db8::1]:51820`` or
        ``[fe80::1%eth0]:51820``, with exactly the rules of Go's ``netip.ParseAddrPort``:
        brackets for IPv6 and only for IPv6, a port of 0 to 65535, no host names. The address
        comes back in canonical form. ValueError says what is wrong, without quoting
        ``text``."""
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError("not ip:port")
        if not host:
            raise ValueError("no IP address before the port")
        if not port:
            raise ValueError("no port after the IP address")
        bracketed = host[0] == "["
        if bracketed:
            if len(host) < 2 or host[-1] != "]":
                raise ValueError("a ']' is missing")
            host = host[1:-1]
        number = _port_number(port)
        if number is None:
            raise ValueError("the port is not a number from 0 to 65535")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                "not a numeric IP address (UAPI endpoints are never host names)"
            ) from None
        if bracketed and ip.version == 4:
            raise ValueError("square brackets are only for IPv6 addresses")
        if not bracketed and ip.version == 6:
            raise ValueError("an IPv6 address must be in square brackets")
        return cls(host_text(ip), number)

    # ------------------------------------------------------------------ conversions

    @classmethod
    def from_address(
        cls, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
    ) -> Endpoint:
        """The endpoint of ``address`` (its canonical text) and ``port``."""
        return cls(host_text(address), port)

    @classmethod
    def from_key(cls, key: object) -> Endpoint | None:
        """The endpoint of a core key ``(host, port)`` or ``(host, port, source)`` (the source
        is dropped); None for anything else (the core takes any hashable, and tests give it
        other things)."""
        if (type(key) is tuple or type(key) is RelayKey) and len(key) >= 2:
            host, port = key[0], key[1]
            if isinstance(host, str) and isinstance(port, int):
                return cls(host, port)
        return None

    def as_key(self) -> tuple[str, int]:
        """The core's key for this endpoint, ``(host, port)``, with no source (answers leave
        from the routing table's choice until the peer's first packet brings one). The host
        must be an address: resolve a config file's host names first."""
        return (self.host, self.port)

    # ------------------------------------------------------------------ properties

    @property
    def is_numeric(self) -> bool:
        """Whether the host is an IP address literal (nothing to resolve)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_port(text: str) -> int:
    """A port as ``wg`` reads one in a config file: 0 to 65535, or a UDP service name from
    the services database. ValueError says what is wrong."""
    if _DECIMAL.fullmatch(text):
        port = _port_number(text)
        if port is not None:
            return port
    elif _SERVICE_NAME.fullmatch(text):
        try:
            return socket.getservbyname(text, "udp")
        except OSError:
            shown = _shown(text)
            raise ValueError(f"{shown} is not a port number or a known UDP service") from None
    raise ValueError(f"expected a port number from 0 to 65535, got {_shown(text)}")


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut short where it is long (hostile input)."""
    return repr(text) if len(text) <= 80 else repr(text[:80]) + f" (and {len(text) - 80} more)"


def _port_number(text: str) -> int | None:
    """``text`` as a port number (ASCII digits, leading zeros allowed), else None; a
    hundred-thousand-digit string is not handed to ``int()``, which refuses those."""
    if _DECIMAL.fullmatch(text) is None or len(text.lstrip("0")) > 5:
        return None
    port = int(text)
    return port if port <= 0xFFFF else None
