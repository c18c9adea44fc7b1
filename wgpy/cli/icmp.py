"""ICMP and ICMPv6 echo for ``wgpy ping``: the messages (pure functions) and one socket.

The socket is an unprivileged ICMP datagram socket where the host allows one
(``net.ipv4.ping_group_range``), else a raw socket (root). On a datagram socket the kernel
picks the identifier and fills in the ICMPv6 checksum; on a raw IPv4 socket a reply comes with
its IP header, which :func:`parse_echo_reply` skips.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

__all__ = ["EchoSocket", "echo_request", "parse_echo_reply"]

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request; IPv4's carries its checksum, ICMPv6's is left to the kernel (it
    covers a pseudo-header only the kernel knows)."""
    message = _HEADER.pack(ECHO_REQUEST[version], 0, 0, ident & 0xFFFF, seq & 0xFFFF) + payload
    if version == 6:
        return message
    return message[:2] + struct.pack("!H", checksum(message)) + message[4:]


def parse_echo_reply(
    version: int, data: bytes, *, ip_header: bool
) -> tuple[int, int, bytes] | None:
    """``(identifier, sequence, payload)`` of an echo reply, None for anything else (other
    ICMP messages, short or damaged datagrams). ``ip_header``: the datagram starts with an
    IPv4 header (a raw IPv4 socket's)."""
    if ip_header:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < _HEADER.size:
        return None
    kind, code, _, ident, seq = _HEADER.unpack_from(data)
    if kind != ECHO_REPLY[version] or code != 0:
        return None
    return ident, seq, data[_HEADER.size :]


class EchoSocket:
    """One ICMP (or ICMPv6) socket to ping ``address`` with."""

    def __init__(self, address: str) -> None:
        ip = ipaddress.ip_address(address)
        self.version = ip.version
        self.address = address
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        proto = socket.IPPROTO_ICMP if ip.version == 4 else socket.IPPROTO_ICMPV6
        try:
            self.sock = socket.socket(family, socket.SOCK_DGRAM, proto)
            self.raw = False
        except PermissionError:
            self.sock = socket.socket(family, socket.SOCK_RAW, proto)  # root only
            self.raw = True
        self.sock.setblocking(False)
        # a datagram socket's identifier is its local port, chosen by the kernel
        self.ident = self.sock.getsockname()[1] if not self.raw else 0

    def send(self, ident: int, seq: int, payload: bytes) -> None:
        self.sock.sendto(echo_request(self.version, ident, seq, payload), (self.address, 0))

    def receive(self) -> tuple[int, int, bytes] | None:
        """The next echo reply from the address (None: nothing, or something else, waits)."""
        data, sender = self.sock.recvfrom(65535)
        if sender[0] != self.address:
            return None
        return parse_echo_reply(self.version, data, ip_header=self.raw and self.version == 4)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
