"""TUN segmentation offloads: the virtio-net header, TCP segmentation and TCP coalescing.

With ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) the kernel
hands the TUN reader whole TCP super-packets of up to 64 KiB, one read for what would have been
some 45 packets, and accepts such super-packets on write: one write, and one pass through the
receiving TCP stack, for a run of segments. Every frame on the fd starts with a 10-byte
``struct virtio_net_hdr``:

    flags u8 (NEEDS_CSUM), gso_type u8 (NONE, TCPV4, TCPV6), hdr_len u16, gso_size u16,
    csum_start u16, csum_offset u16        (host byte order, little-endian here)

- :func:`split` turns a frame read from the TUN into IP packets with complete checksums, as
  the kernel's GSO would: per segment its IPv4 total length, ID and header checksum (or IPv6
  payload length), TCP sequence number, FIN and PSH on the last segment only, TCP checksum.
- :func:`coalesce` turns decrypted packets into frames to write: consecutive TCP segments of
  one flow (in order, same ACK, window and options, ACK or ACK|PSH only, PSH only last, equal
  sizes but a shorter last, valid checksums) become one frame with GSO type TCPV4/TCPV6 and a
  partial checksum; everything else goes out alone behind a zero header. The rules are the
  kernel's GRO rules (tcp_gro_receive), as wireguard-go's tun/offload_linux.go applies them.

Both run on input from outside (a peer decides what :func:`coalesce` sees): every length and
offset is checked, and what does not fit the rules is passed on untouched, never raised.

Checksums use the identity that a ones' complement sum of 16-bit words is the number those
bytes spell, modulo 0xFFFF (2**16 = 1 mod 0xFFFF): one ``int.from_bytes`` per packet.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

VNET_HDR_LEN = 10
NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
ZERO_HEADER = bytes(VNET_HDR_LEN)

_VNET = struct.Struct("<BBHHHH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TCP = 6
_UDP = 17
_FIN, _PSH, _ACK = 0x01, 0x08, 0x10
_MAX_IP = 0xFFFF


class OffloadError(ValueError):
    """A frame from the TUN that cannot be split (counted and dropped by the caller)."""


def _sum(data: bytes) -> int:
    """The ones' complement sum of ``data`` as 16-bit big-endian words, modulo 0xFFFF."""
    if len(data) & 1:
        data += b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def _finish(total: int) -> bytes:
    """The checksum field for a sum (mod 0xFFFF) of everything it covers, field zeroed."""
    s = total % 0xFFFF or 0xFFFF  # a nonzero sum never folds to 0 in ones' complement
    return _U16.pack(0xFFFF - s)


def _pseudo(packet: bytes, v6: bool, proto: int, length: int) -> int:
    addrs = packet[8:40] if v6 else packet[12:20]
    return int.from_bytes(addrs, "big") + proto + length


def ipv4_header_checksum(header: bytes) -> bytes:
    """The checksum of an IPv4 header whose checksum field is zero."""
    return _finish(_sum(header))


def transport_checksum_valid(packet: bytes, iph: int, v6: bool, proto: int) -> bool:
    l4 = packet[iph:]
    return (_pseudo(packet, v6, proto, len(l4)) + _sum(l4)) % 0xFFFF == 0


def _ip_header(header: bytes, v6: bool, l4_len: int, ip_id: int | None = None) -> bytes:
    """``header`` (a whole IP header) for a packet with ``l4_len`` bytes after it: length
    field set and, for IPv4, the ID replaced by ``ip_id`` if given and the checksum redone."""
    if v6:
        return header[:4] + _U16.pack(l4_len) + header[6:]
    ident = header[4:6] if ip_id is None else _U16.pack(ip_id)
    start = header[:2] + _U16.pack(len(header) + l4_len) + ident + header[6:10]
    return start + ipv4_header_checksum(start + b"\0\0" + header[12:]) + header[12:]


# ---------------------------------------------------------------------- TUN -> network


def split(frame: bytes) -> list[bytes]:
    """The IP packets in one frame read from a TUN opened with IFF_VNET_HDR."""
    if len(frame) < VNET_HDR_LEN + 20:
        raise OffloadError(f"frame of {len(frame)} bytes is too short")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _VNET.unpack_from(frame)
    packet = frame[VNET_HDR_LEN:]
    if gso_type == GSO_NONE:
        if flags & NEEDS_CSUM:
            # the field holds the pseudo-header's partial sum: add the rest and complement
            at = csum_start + csum_offset
            if at + 2 > len(packet) or csum_start >= len(packet):
                raise OffloadError("checksum offsets point past the packet")
            field = _finish(_sum(packet[csum_start:]))
            packet = packet[:at] + field + packet[at + 2 :]
        return [packet]
    version = packet[0] >> 4
    if not ((gso_type == GSO_TCPV4 and version == 4) or (gso_type == GSO_TCPV6 and version == 6)):
        raise OffloadError(f"GSO type {gso_type} with IP version {version} is not supported")
    v6 = version == 6
    iph = csum_start
    if iph < 20 or iph + 20 > len(packet) or csum_offset != 16 or gso_size == 0:
        raise OffloadError("GSO frame with impossible offsets")
    tcph = (packet[iph + 12] >> 4) * 4
    hdr_len = iph + tcph  # the kernel's hdr_len is not always right; the header says
    if tcph < 20 or hdr_len > len(packet):
        raise OffloadError(f"GSO frame with a TCP header of {tcph} bytes")
    ip_header = packet[:iph]
    tcp_header = packet[iph:hdr_len]
    src_dst = _pseudo(packet, v6, _TCP, 0)
    seq0 = _U32.unpack_from(tcp_header, 4)[0]
    tcp_flags = tcp_header[13]
    head = tcp_header[:4]
    middle = tcp_header[8:13]
    window = tcp_header[14:16]
    options = tcp_header[18:]
    ip_id = 0 if v6 else _U16.unpack_from(ip_header, 4)[0]
    out = []
    end = len(packet)
    for i, start in enumerate(range(hdr_len, end, gso_size)):
        chunk = packet[start : start + gso_size]
        last = start + gso_size >= end
        l4_len = tcph + len(chunk)
        ip = _ip_header(ip_header, v6, l4_len, (ip_id + i) & 0xFFFF)
        fl = tcp_flags if last else tcp_flags & ~(_FIN | _PSH)
        before = (
            head + _U32.pack((seq0 + i * gso_size) & 0xFFFFFFFF) + middle + bytes((fl,)) + window
        )
        l4 = before + b"\0\0" + options + chunk
        out.append(ip + before + _finish(src_dst + l4_len + _sum(l4)) + options + chunk)
    return out


# ---------------------------------------------------------------------- network -> TUN


class _Run:
    """Consecutive segments of one TCP or UDP flow, to be written as one frame."""

    __slots__ = (
        "ack_doff",
        "first",
        "gso",
        "ip_sig",
        "iph",
        "l4h",
        "last_len",
        "next_seq",
        "options",
        "parts",
        "psh",
        "size",
        "udp",
        "v6",
        "window",
    )

    def __init__(
        self, packet: bytes, v6: bool, iph: int, l4h: int, seq: int, plen: int, psh: bool
    ) -> None:
        self.first = packet
        self.v6 = v6
        self.iph = iph
        self.l4h = l4h  # the TCP or UDP header's length
        self.udp = l4h == 8
        self.gso = plen
        self.last_len = plen
        self.next_seq = (seq + plen) & 0xFFFFFFFF
        self.psh = psh
        self.size = len(packet)
        self.parts: list[bytes] = []
        self.ip_sig = _ip_sig(packet, v6)
        # what every later segment must repeat: ACK number and data offset, window, options
        self.ack_doff = packet[iph + 8 : iph + 13]
        self.window = packet[iph + 14 : iph + 16]
        self.options = packet[iph + 18 : iph + l4h]  # the urgent pointer, then options

    def frame(self) -> bytes:
        first = self.first
        if not self.parts:
            return ZERO_HEADER + first
        iph, v6 = self.iph, self.v6
        l4_len = self.size - iph
        ip = _ip_header(first[:iph], v6, l4_len)
        # NEEDS_CSUM: the field holds the pseudo-header's sum, the kernel adds the rest
        proto = _UDP if self.udp else _TCP
        partial = _U16.pack(_pseudo(first, v6, proto, l4_len) % 0xFFFF or 0xFFFF)
        if self.udp:
            l4 = first[iph : iph + 4] + _U16.pack(l4_len) + partial
            vnet = _VNET.pack(NEEDS_CSUM, GSO_UDP_L4, iph + 8, self.gso, iph, 6)
            return b"".join((vnet, ip, l4, first[iph + 8 :], *self.parts))
        flags = first[iph + 13] | (_PSH if self.psh else 0)
        tcp = first[iph : iph + 13] + bytes((flags,)) + first[iph + 14 : iph + 16] + partial
        gso_type = GSO_TCPV6 if v6 else GSO_TCPV4
        vnet = _VNET.pack(NEEDS_CSUM, gso_type, iph + self.l4h, self.gso, iph, 16)
        return b"".join((vnet, ip, tcp, first[iph + 18 :], *self.parts))


def _ip_sig(p: bytes, v6: bool) -> int:
    """The IP header fields segments of one run must share, as one number."""
    if v6:  # version, traffic class, flow label; hop limit
        return (p[0] << 32 | p[1] << 24 | p[2] << 16 | p[3] << 8) | p[7]
    # TOS; DF and reserved bits (fragments never get here); TTL
    return p[1] << 16 | (p[6] >> 5) << 8 | p[8]


def coalesce(packets: Iterable[bytes], *, udp: bool = False, verify: bool = False) -> list[bytes]:
    """Frames (virtio-net header + packet) to write for ``packets``, in order per flow.

    ``udp`` also merges runs of UDP datagrams of one flow (GSO type UDP_L4: only where the
    kernel has USO, Linux 6.2; the kernel cuts them apart again unless the receiving socket
    asked for UDP_GRO).

    A merged frame goes up the stack as CHECKSUM_PARTIAL, so the kernel does not check the
    TCP checksums of the segments in it. ``verify`` checks them here first, as the kernel's
    GRO and wireguard-go do; by default they are not checked, as the Linux kernel's WireGuard
    marks every decrypted packet CHECKSUM_UNNECESSARY: the AEAD has already authenticated
    every byte, and a peer that wants to send a wrong segment can send it with a right
    checksum. (Checking costs a pass over each payload in Python, about a third of the
    receiving side's time in a bulk TCP transfer.)"""
    out: list[bytes | _Run] = []
    runs: dict[bytes, _Run] = {}
    append = out.append
    get = runs.get
    u32 = _U32.unpack_from
    for p in packets:
        n = len(p)
        b0 = p[0] if n >= 28 else 0
        if b0 == 0x45:  # IPv4 without options
            v6 = False
            iph = 20
            proto = p[9]
            # a fragment or a length that disagrees: passed on alone
            alone = (p[2] << 8 | p[3]) != n or bool(p[6] & 0x3F or p[7])
            key = p[12:24]  # addresses and ports
        elif b0 >> 4 == 6 and n >= 48:
            v6 = True
            iph = 40
            proto = p[6]
            alone = (p[4] << 8 | p[5]) != n - 40
            key = p[8:44]
        else:
            ihl = (b0 & 15) * 4
            if b0 >> 4 == 4 and n >= ihl + 4:
                # IPv4 with options goes alone and ends its flow's run, keeping the order
                runs.pop(p[12:20] + p[ihl : ihl + 4], None)
            append(ZERO_HEADER + p)
            continue
        if proto == _UDP and udp:
            key = b"u" + key
            plen = n - iph - 8
            run = get(key)
            if alone or plen <= 0 or (p[iph + 4] << 8 | p[iph + 5]) != n - iph:
                runs.pop(key, None)
                append(ZERO_HEADER + p)
            elif (
                run is not None
                and run.last_len == run.gso
                and plen <= run.gso
                and run.size + plen <= _MAX_IP
                and run.ip_sig == _ip_sig(p, v6)
            ):
                run.parts.append(p[iph + 8 :])
                run.size += plen
                run.last_len = plen
            else:
                run = runs[key] = _Run(p, v6, iph, 8, 0, plen, False)
                append(run)
            continue
        if proto != _TCP or n < iph + 20:
            append(ZERO_HEADER + p)
            continue
        hl = iph + ((p[iph + 12] >> 4) << 2)
        plen = n - hl
        flags = p[iph + 13]
        if alone or hl < iph + 20 or plen <= 0 or (flags != _ACK and flags != _ACK | _PSH):
            runs.pop(key, None)  # keep this flow's order: nothing later joins an earlier run
            append(ZERO_HEADER + p)
            continue
        seq = u32(p, iph + 4)[0]
        run = get(key)
        if (
            run is not None
            and seq == run.next_seq
            and not run.psh
            and run.last_len == run.gso
            and plen <= run.gso
            and run.size + plen <= _MAX_IP
            and run.l4h == hl - iph
            and p[iph + 8 : iph + 13] == run.ack_doff
            and p[iph + 14 : iph + 16] == run.window
            and p[iph + 18 : hl] == run.options
            and run.ip_sig == _ip_sig(p, v6)
            and (
                not verify
                or (
                    (run.parts or transport_checksum_valid(run.first, iph, v6, _TCP))
                    and transport_checksum_valid(p, iph, v6, _TCP)
                )
            )
        ):
            run.parts.append(p[hl:])
            run.size += plen
            run.last_len = plen
            run.next_seq = (seq + plen) & 0xFFFFFFFF
            run.psh = flags != _ACK
            continue
        run = runs[key] = _Run(p, v6, iph, hl - iph, seq, plen, flags != _ACK)
        append(run)
    return [x if isinstance(x, bytes) else x.frame() for x in out]
