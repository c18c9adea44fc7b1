"""The UDP side of an interface as a seam, as wireguard-go's ``conn.Bind``.

:class:`~wgpy.device.interface.Interface` takes its bind as it takes its TUN. Today's
implementation is :class:`~wgpy.device.udp.UdpBind` (an IPv4 and an IPv6 socket with GSO, GRO
and sticky sources); :class:`~wgpy.device.memorybind.MemoryBind` joins interfaces in memory
for tests; NAT traversal will add a relayed one (TURN).

The interface drives a bind like this, and nothing else::

    bind.watch(loop, on_readable)            # on_readable(reader) when a reader has datagrams
    bind.readers()                           # [(fd, reader)] to poll after a lone packet
    datagrams = bind.read_batch(reader, n)   # [(data, endpoint key)], at most about n
    lost = bind.send_batch(datagrams)        # keys whose local source could not be used
    bind.open(port); bind.set_fwmark(mark)   # wg set ... listen-port / fwmark
    bind.unwatch(loop); bind.close()

Endpoints here are the core's keys (:data:`wgpy.endpoint.EndpointKey`), never
:class:`~wgpy.endpoint.Endpoint` objects: they are hashed and compared per packet.
``Bind`` is a static type: the interface calls the implementation's methods directly, so the
read and send paths cost what they cost without the seam.

Another protocol on the WireGuard port (NAT traversal's STUN, and TURN ChannelData, RFC 8489
and 8656) sets :attr:`Bind.demux`: the bind then hands it every datagram that is not a
WireGuard message, told apart by the first four bytes (a WireGuard message starts with its
type, 1 to 4, then three zero bytes; no STUN message of a method ICE or TURN uses starts so,
its type being 0x0001-0x011C, nor ChannelData, whose first byte is 0x40-0x7F), and those
datagrams do not reach WireGuard. It sends its answers with :meth:`Bind.send_batch`, from the
very socket WireGuard uses, so a NAT maps both alike. With ``demux`` None (the default) every
datagram goes to WireGuard and the read path does one ``is None`` test a datagram, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..endpoint import EndpointKey

__all__ = ["WIREGUARD_PREFIXES", "Bind", "Demux", "is_wireguard"]

Demux = Callable[[bytes, EndpointKey], None]
"""Takes a datagram that is not WireGuard's and the endpoint it came from."""

WIREGUARD_PREFIXES = (b"\x01\0\0\0", b"\x02\0\0\0", b"\x03\0\0\0", b"\x04\0\0\0")
"""How every WireGuard message starts: its type (initiation, response, cookie reply,
transport data) as a little-endian 32-bit word. ``data.startswith(WIREGUARD_PREFIXES)`` is one
call in C, with no copy."""


def is_wireguard(data: bytes) -> bool:
    """Whether ``data`` starts as a WireGuard message (it may still be a bad one)."""
    return data.startswith(WIREGUARD_PREFIXES)


class Bind(Protocol):
    """A listen port for WireGuard datagrams (see the module docstring)."""

    demux: Demux | None
    """Another protocol on this port: see the module docstring."""

    @property
    def port(self) -> int:
        """The port bound to (the one chosen where 0 was asked for); 0 when closed."""
        ...

    @property
    def fwmark(self) -> int:
        """The firewall mark of outgoing datagrams (SO_MARK); 0 for none."""
        ...

    def open(self, port: int) -> None:
        """Listen on ``port`` (0: any free one) instead of the current port. On failure
        (OSError) the bind keeps listening where it did. Call :meth:`unwatch` first and
        :meth:`watch` after: the readers may change."""
        ...

    def set_fwmark(self, mark: int) -> None:
        """Mark outgoing datagrams with ``mark`` (0: none)."""
        ...

    def watch(self, loop: asyncio.AbstractEventLoop, on_readable: Callable[[Any], None]) -> None:
        """Have ``loop`` call ``on_readable(reader)`` while ``reader`` has datagrams to read
        (level-triggered: again after a read that left some)."""
        ...

    def unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop the calls :meth:`watch` arranged."""
        ...

    def readers(self) -> list[tuple[int, Any]]:
        """``(file descriptor, reader)`` for each reader that has a descriptor the interface
        may poll (see :data:`wgpy.device.interface.POLL_US`); empty for a bind without."""
        ...

    def read_batch(self, reader: Any, limit: int) -> list[tuple[bytes, EndpointKey]]:
        """Datagrams from ``reader`` until about ``limit`` are read or none are left, each
        with the endpoint it came from. OSError where reading failed."""
        ...

    def send_batch(self, datagrams: Sequence[tuple[bytes, object]]) -> Sequence[object]:
        """Send in order (endpoints are core keys). Returns the endpoints whose local source
        could not be sent from (what was for them went from the routing table's choice),
        for the core to forget; usually empty. Failures to send are counted, not raised:
        UDP is lossy."""
        ...

    def close(self) -> None:
        """Stop listening. :meth:`unwatch` first."""
        ...
