"""What ``GET /api/v1/node/nat`` tells a node: where the STUN responder is, and short-lived
TURN credentials for the relays (coturn's shared-secret REST scheme, ``use-auth-secret``).

Pure but for :func:`load_turn_secret`, which reads the secret's file once at start. The
secret is held by :class:`TurnSettings` and never shown (its repr leaves it out) or logged;
nodes get credentials that expire (``--turn-ttl``), never the secret.

coturn's scheme: the username is ``EXPIRY:NAME`` (EXPIRY in Unix seconds; coturn refuses it
after then), the password base64(HMAC-SHA1(secret, username)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .secretfile import read_secret_file

DEFAULT_TURN_TTL = 86400  # seconds: one day
MIN_TURN_TTL = 60
MAX_TURN_TTL = 30 * 86400


_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?\Z"
)
_TURN_URL = re.compile(
    r"(?P<scheme>turns?):(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:?\[\]/@]+))"
    r"(?::(?P<port>[0-9]{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?\Z"
)

_HOST_HEADER = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?|([^:\[\]]+)(?::[0-9]{1,5})?")


class NatConfigError(ValueError):
    """A TURN setting that cannot be used; the message is one sentence for the operator."""


@dataclass(frozen=True, slots=True)
class TurnUrl:
    text: str  # as given (checked), what nodes get
    host: str  # the relay, by which URLs are grouped

    @classmethod
    def parse(cls, text: str) -> TurnUrl:
        """A ``turn:`` or ``turns:`` URL (RFC 7065): ``turn:HOST[:PORT][?transport=udp|tcp]``,
        HOST a name, an IPv4 address or ``[IPv6]``; TLS (turns:) only over TCP."""
        match = _TURN_URL.match(text)
        bad = NatConfigError(
            f"--turn {text!r} is not a TURN URL; expected turn:HOST[:PORT][?transport=udp|tcp] "
            "or turns:HOST[:PORT][?transport=tcp], e.g. turns:relay.example:443?transport=tcp"
        )
        if match is None:
            raise bad
        host = match["v6"] or match["host"]
        if match["v6"]:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise bad from None
        elif not _DNS_NAME.match(host):
            raise bad
        port = match["port"]
        if port is not None and not 1 <= int(port) <= 65535:
            raise bad
        if match["scheme"] == "turns" and match["transport"] == "udp":
            raise NatConfigError(
                f"--turn {text!r}: turns: (TLS) runs over TCP; use ?transport=tcp, or turn: for UDP"
            )
        return cls(text, host.lower())


@dataclass(frozen=True)
class TurnSettings:
    urls: tuple[TurnUrl, ...]
    secret: bytes = field(repr=False)
    ttl: int = DEFAULT_TURN_TTL

    def credentials(self, node_id: int, now: float) -> list[dict[str, Any]]:
        """One entry per relay (the URLs of one host together), all with the same
        credentials, valid until ``now + ttl``."""
        expires = int(now) + self.ttl
        username = f"{expires}:{node_id}"
        password = turn_password(self.secret, username)
        relays: dict[str, list[str]] = {}
        for url in self.urls:
            relays.setdefault(url.host, []).append(url.text)
        return [
            {"urls": urls, "username": username, "password": password, "expires": expires}
            for urls in relays.values()
        ]


def turn_password(secret: bytes, username: str) -> str:
    """coturn's REST password: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.digest(secret, username.encode(), hashlib.sha1)).decode()


def check_turn_ttl(ttl: int) -> int:
    if not MIN_TURN_TTL <= ttl <= MAX_TURN_TTL:
        raise NatConfigError(
            f"--turn-ttl must be from {MIN_TURN_TTL} to {MAX_TURN_TTL} seconds (default "
            f"{DEFAULT_TURN_TTL})"
        )
    return ttl


def load_turn_secret(path: Path) -> bytes:
    """The shared secret in ``path`` (surrounding whitespace stripped). The file must be
    the owner's alone (mode 0600 or 0400): anyone who reads it can mint TURN credentials."""
    secret = read_secret_file(path, "TURN secret", NatConfigError)
    if not secret:
        raise NatConfigError(f"the TURN secret file {path} is empty; put coturn's secret in it")
    return secret


def turn_settings(urls: tuple[str, ...], secret_file: Path | None, ttl: int) -> TurnSettings | None:
    """The relays and their secret, checked; None when no relay is configured."""
    if not urls and secret_file is None:
        return None
    if not urls:
        raise NatConfigError("--turn-secret needs the relay's address: add --turn URL")
    parsed = tuple(TurnUrl.parse(u) for u in urls)
    if secret_file is None:
        raise NatConfigError(
            "--turn needs --turn-secret FILE, the file holding coturn's static-auth-secret"
        )
    return TurnSettings(parsed, load_turn_secret(secret_file), check_turn_ttl(ttl))


# ----------------------------------------------------------------------------------------
# STUN addresses


def api_host(header: str | None) -> str | None:
    """The host of a ``Host`` header (``name``, ``192.0.2.1:8080``, ``[2001:db8::1]:443``):
    an IP address (IPv6 without brackets) or a DNS name; None if there is none or it is
    neither."""
    if not header:
        return None
    match = re.fullmatch(
        r"\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?|([^:\[\]]+)(?::[0-9]{1,5})?", header
    )
    if match is None:
        return None
    if match[1] is not None:
        try:
            return str(ipaddress.IPv6Address(match[1]))
        except ValueError:
            return None
    host = match[2]
    return host.lower().rstrip(".") if _DNS_NAME.match(host) else None


def stun_addresses(listening: list[tuple[str, int]], host: str) -> list[str]:
    """What a node that reached the API at ``host`` should ask for STUN: each address the
    responder listens on, one on every address (0.0.0.0, ::) as ``host`` (when the family
    fits: a name fits both); ``host:port``, an IPv6 address in brackets; no duplicates."""
    try:
        host_version: int | None = ipaddress.ip_address(host).version
    except ValueError:
        host_version = None  # a name: the node resolves it
    out: list[str] = []
    for address, port in listening:
        ip = ipaddress.ip_address(address)
        if ip.is_unspecified:
            if host_version is not None and host_version != ip.version:
                continue
            address = host
        text = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        if text not in out:
            out.append(text)
    return out
