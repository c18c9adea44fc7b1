"""A stateful inbound filter for one peer: replies to flows we started pass, new flows don't.

The mesh policy may let us reach a peer while not letting that peer reach us. WireGuard needs
both ends configured either way, so the inbound direction is enforced here: packets from the
peer are delivered only when they answer a flow this node started (TCP, UDP and ICMP echo,
over IPv4 and IPv6), like a minimal connection tracker. Flows expire after ``FLOW_TIMEOUT``
seconds without outbound traffic. Sans-IO: ``now`` is passed in.
"""

from __future__ import annotations

FLOW_TIMEOUT = 180.0
MAX_FLOWS = 65536
_TCP, _UDP, _ICMP, _ICMP6 = 6, 17, 1, 58
_ECHO_REQUEST = {_ICMP: 8, _ICMP6: 128}
_ECHO_REPLY = {_ICMP: 0, _ICMP6: 129}


def _parse(packet: bytes) -> tuple[int, bytes, bytes, int] | None:
    """(protocol, source address, destination address, offset of the L4 header)."""
    n = len(packet)
    if n >= 20 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        if ihl < 20 or n < ihl + 4:
            return None
        return packet[9], packet[12:16], packet[16:20], ihl
    if n >= 44 and packet[0] >> 4 == 6:
        return packet[6], packet[8:24], packet[24:40], 40  # extension headers: not followed
    return None


def _flow(packet: bytes, outbound: bool) -> tuple[int, bytes, bytes, int, int] | None:
    """A key that an outbound packet and the inbound replies to it share."""
    parsed = _parse(packet)
    if parsed is None:
        return None
    proto, src, dst, off = parsed
    if proto in (_TCP, _UDP):
        sport = (packet[off] << 8) | packet[off + 1]
        dport = (packet[off + 2] << 8) | packet[off + 3]
        if outbound:
            return proto, dst, src, dport, sport
        return proto, src, dst, sport, dport
    if proto in (_ICMP, _ICMP6) and len(packet) >= off + 8:
        kind = packet[off]
        ident = (packet[off + 4] << 8) | packet[off + 5]
        if outbound and kind == _ECHO_REQUEST[proto]:
            return proto, dst, src, ident, 0
        if not outbound and kind == _ECHO_REPLY[proto]:
            return proto, src, dst, ident, 0
    return None


class ReplyOnlyFilter:
    """Tracks the flows we start towards one peer and admits only their replies."""

    __slots__ = ("_flows",)

    def __init__(self) -> None:
        self._flows: dict[tuple[int, bytes, bytes, int, int], float] = {}

    def outbound(self, packet: bytes, now: float) -> None:
        key = _flow(packet, outbound=True)
        if key is None:
            return
        flows = self._flows
        if len(flows) >= MAX_FLOWS and key not in flows:
            expired = [k for k, t in flows.items() if now - t > FLOW_TIMEOUT]
            for k in expired or list(flows)[: MAX_FLOWS // 4]:
                del flows[k]
        flows[key] = now

    def inbound(self, packet: bytes, now: float) -> bool:
        key = _flow(packet, outbound=False)
        if key is None:
            return False
        started = self._flows.get(key)
        return started is not None and now - started <= FLOW_TIMEOUT

    def __len__(self) -> int:
        return len(self._flows)
