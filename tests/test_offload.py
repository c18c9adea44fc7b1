"""TUN offloads without a TUN: splitting super-packets and coalescing runs of TCP segments,
checked against a plain 16-bit checksum loop and against each other (split(coalesce(x)) == x),
and fed garbage, which must never raise anything but OffloadError."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.device.offload import (
    GSO_TCPV4,
    GSO_TCPV6,
    NEEDS_CSUM,
    VNET_HDR_LEN,
    ZERO_HEADER,
    OffloadError,
    coalesce,
    split,
)

ACK, PSH, FIN, SYN = 0x10, 0x08, 0x01, 0x02


def csum16(data: bytes) -> int:
    """RFC 1071, the slow way."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 16:
        return src + dst + struct.pack("!IxxxB", length, proto)
    return src + dst + struct.pack("!xBH", proto, length)


def tcp_valid(packet: bytes) -> bool:
    v6 = packet[0] >> 4 == 6
    iph = 40 if v6 else (packet[0] & 15) * 4
    src, dst = (packet[8:24], packet[24:40]) if v6 else (packet[12:16], packet[16:20])
    return csum16(pseudo(src, dst, 6, len(packet) - iph) + packet[iph:]) == 0xFFFF


def ipv4_header_valid(packet: bytes) -> bool:
    return csum16(packet[:20]) == 0xFFFF


def tcp_packet(
    payload: bytes,
    *,
    seq: int = 1000,
    ack: int = 5000,
    flags: int = ACK,
    window: int = 500,
    v6: bool = False,
    ip_id: int = 7,
    sport: int = 40000,
    dport: int = 5201,
    options: bytes = b"",
    ttl: int = 64,
) -> bytes:
    tcph = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, (tcph // 4) << 4, flags,
                      window, 0, 0) + options  # fmt: skip
    if v6:
        src, dst = ipaddress.ip_address("fd77::1").packed, ipaddress.ip_address("fd77::2").packed
        ip = struct.pack("!IHBB", 6 << 28, tcph + len(payload), 6, ttl) + src + dst
    else:
        src, dst = bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2])
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + tcph + len(payload), ip_id, 0x4000, ttl, 6, 0)
        ip = ip[:10] + struct.pack("!H", 0xFFFF - csum16(ip + src + dst)) + src + dst
    c = 0xFFFF - csum16(pseudo(src, dst, 6, tcph + len(payload)) + tcp + payload)
    return ip + tcp[:16] + struct.pack("!H", c) + tcp[18:] + payload


def flow(count: int, size: int = 1380, *, last: int | None = None, v6: bool = False,
         flags_last: int = ACK) -> list[bytes]:  # fmt: skip
    sizes = [size] * count
    if last is not None:
        sizes[-1] = last
    out, seq = [], 1000
    for i, n in enumerate(sizes):
        fl = flags_last if i == count - 1 else ACK
        out.append(tcp_packet(os.urandom(n), seq=seq, ip_id=7 + i, v6=v6, flags=fl))
        seq += n
    return out


def test_the_helpers_build_valid_packets() -> None:
    for p in flow(3) + flow(2, v6=True):
        assert tcp_valid(p)
    assert all(ipv4_header_valid(p) for p in flow(3))
    bad = bytearray(flow(1)[0])
    bad[-1] ^= 1
    assert not tcp_valid(bytes(bad))


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("last", [None, 1, 700])
def test_a_run_becomes_one_frame_and_splits_back_exactly(v6: bool, last: int | None) -> None:
    packets = flow(45, last=last, v6=v6, flags_last=ACK | PSH)
    frames = coalesce(packets)
    assert len(frames) == 1
    flags, gso_type, hdr_len, gso_size, start, offset = struct.unpack_from("<BBHHHH", frames[0])
    iph = 40 if v6 else 20
    assert (flags, gso_type, hdr_len, gso_size, start, offset) == (
        NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, iph + 20, 1380, iph, 16)  # fmt: skip
    frame = frames[0][VNET_HDR_LEN:]
    assert len(frame) == iph + 20 + sum(len(p) - iph - 20 for p in packets)
    if not v6:
        assert ipv4_header_valid(frame)
    assert frame[iph + 13] == ACK | PSH  # the last segment's PSH is the run's
    assert split(frames[0]) == packets


def test_split_matches_the_kernel_rules_per_segment() -> None:
    packets = flow(5, last=100, flags_last=ACK | PSH | FIN)
    segments = split(coalesce(packets)[0])
    for i, seg in enumerate(segments):
        assert tcp_valid(seg) and ipv4_header_valid(seg)
        assert struct.unpack_from("!H", seg, 4)[0] == 7 + i  # IP IDs count up
        assert seg[33] == (ACK | PSH | FIN if i == 4 else ACK)  # FIN and PSH only on the last


def test_a_lone_packet_keeps_its_bytes_behind_a_zero_header() -> None:
    p = tcp_packet(b"hello")
    assert coalesce([p]) == [ZERO_HEADER + p]
    assert split(ZERO_HEADER + p) == [p]


def test_needs_csum_without_gso_is_completed() -> None:
    p = tcp_packet(os.urandom(333))
    src, dst = p[12:16], p[16:20]
    partial = csum16(pseudo(src, dst, 6, len(p) - 20))  # what the kernel leaves in the field
    raw = p[:36] + struct.pack("!H", partial) + p[38:]
    frame = struct.pack("<BBHHHH", NEEDS_CSUM, 0, 0, 0, 20, 16) + raw
    assert split(frame) == [p]


def test_what_breaks_a_run() -> None:
    a = flow(4)
    gap = a[:2] + a[3:]  # a missing segment
    assert len(coalesce(gap)) == 2
    bad = bytearray(a[2])
    bad[-1] ^= 0xFF  # with verify, a wrong checksum is never hidden inside a run
    frames = coalesce([a[0], a[1], bytes(bad), a[3]], verify=True)
    assert ZERO_HEADER + bytes(bad) in frames
    assert len(coalesce([a[0], bytes(bad)], verify=True)) == 2  # nor at a run's head
    assert len(coalesce([bytes(bad), a[1]], verify=True)) == 2
    # without, the run is merged as kernel WireGuard trusts authenticated packets
    assert len(coalesce([a[0], a[1], bytes(bad), a[3]])) == 1
    psh = [*flow(3, flags_last=ACK | PSH), tcp_packet(b"x" * 1380, seq=1000 + 3 * 1380)]
    assert len(coalesce(psh)) == 2  # nothing follows a PSH
    other_ack = [a[0], tcp_packet(a[1][40:], seq=1000 + 1380, ack=9999, ip_id=8)]
    assert len(coalesce(other_ack)) == 2
    other_window = [a[0], tcp_packet(a[1][40:], seq=1000 + 1380, window=1, ip_id=8)]
    assert len(coalesce(other_window)) == 2
    other_ttl = [a[0], tcp_packet(a[1][40:], seq=1000 + 1380, ttl=3, ip_id=8)]
    assert len(coalesce(other_ttl)) == 2
    short_then_long = [tcp_packet(b"s" * 100), tcp_packet(b"l" * 1380, seq=1100, ip_id=8)]
    assert len(coalesce(short_then_long)) == 2
    syn = tcp_packet(b"", flags=SYN)
    assert coalesce([syn]) == [ZERO_HEADER + syn]
    opts = b"\x01\x01\x08\x0a" + bytes(8)  # NOP NOP timestamps
    with_opts = [
        tcp_packet(b"o" * 1368, seq=1000 + 1368 * i, options=opts, ip_id=i) for i in range(3)
    ]
    assert len(coalesce(with_opts)) == 1 and split(coalesce(with_opts)[0]) == with_opts


def test_flows_interleave_and_each_keeps_its_order() -> None:
    one = flow(3)
    two = [tcp_packet(p[40:], seq=struct.unpack_from("!I", p, 24)[0], sport=40001, ip_id=7 + i)
           for i, p in enumerate(flow(3))]  # fmt: skip
    udp = bytes([0x45]) + bytes(8) + b"\x11" + bytes(30)
    mixed = [one[0], two[0], udp, one[1], two[1], one[2], two[2]]
    frames = coalesce(mixed)
    assert len(frames) == 3
    assert split(frames[0]) == one and split(frames[1]) == two
    assert frames[2] == ZERO_HEADER + udp
    # a packet of the flow that cannot join (a FIN) ends its run: later ones start anew
    fin = tcp_packet(b"", seq=1000 + 3 * 1380, flags=ACK | FIN)
    later = tcp_packet(b"z" * 1380, seq=1000 + 3 * 1380, ip_id=20)
    frames = coalesce([*one, fin, later])
    assert [len(split(f)) for f in frames] == [3, 1, 1]


def test_a_run_never_exceeds_an_ip_packet() -> None:
    packets = flow(60)  # 60 * 1380 bytes would not fit in 64 KiB
    frames = coalesce(packets)
    assert len(frames) == 2
    assert all(len(f) - VNET_HDR_LEN <= 65535 for f in frames)
    assert split(frames[0]) + split(frames[1]) == packets


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        ZERO_HEADER,
        struct.pack("<BBHHHH", 1, 1, 40, 0, 20, 16) + flow(1)[0],  # gso_size 0
        struct.pack("<BBHHHH", 1, 1, 40, 1380, 20, 16) + flow(1, v6=True)[0],  # v4 type, v6
        struct.pack("<BBHHHH", 1, 5, 28, 1380, 20, 6) + flow(1)[0],  # UDP GSO: not offered
        struct.pack("<BBHHHH", 1, 0, 0, 0, 2000, 16) + flow(1)[0],  # checksum past the end
    ],
)
def test_impossible_frames_raise_offload_error(frame: bytes) -> None:
    with pytest.raises(OffloadError):
        split(frame)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=120), max_size=8), st.data())
def test_garbage_never_breaks_either_side(blobs: list[bytes], data: st.DataObject) -> None:
    valid = flow(3)
    # splice garbage between, and over the headers of, real segments
    packets = [b for b in blobs if b]
    for p in valid:
        cut = data.draw(st.integers(0, 60))
        packets.append(data.draw(st.sampled_from([p, os.urandom(cut) + p[cut:]])))
    for frame in coalesce(packets):
        assert frame[:VNET_HDR_LEN] == ZERO_HEADER or frame[0] == NEEDS_CSUM
        with contextlib.suppress(OffloadError):
            split(frame)
    for blob in blobs:
        with contextlib.suppress(OffloadError):
            split(blob)


def udp_packet(payload: bytes, *, v6: bool = False, ip_id: int = 1, sport: int = 4000) -> bytes:
    udp = struct.pack("!HHHH", sport, 53, 8 + len(payload), 0)
    if v6:
        src, dst = ipaddress.ip_address("fd77::1").packed, ipaddress.ip_address("fd77::2").packed
        ip = struct.pack("!IHBB", 6 << 28, 8 + len(payload), 17, 64) + src + dst
    else:
        src, dst = bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2])
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 28 + len(payload), ip_id, 0x4000, 64, 17, 0)
        ip = ip[:10] + struct.pack("!H", 0xFFFF - csum16(ip + src + dst)) + src + dst
    c = 0xFFFF - csum16(pseudo(src, dst, 17, 8 + len(payload)) + udp + payload)
    return ip + udp[:6] + struct.pack("!H", c or 0xFFFF) + payload


@pytest.mark.parametrize("v6", [False, True])
def test_a_udp_run_becomes_one_frame_where_asked(v6: bool) -> None:
    payloads = [os.urandom(1200) for _ in range(10)] + [os.urandom(5)]
    packets = [udp_packet(p, v6=v6, ip_id=i) for i, p in enumerate(payloads)]
    assert coalesce(packets) == [ZERO_HEADER + p for p in packets]  # not unless asked
    frames = coalesce(packets, udp=True)
    assert len(frames) == 1
    iph = 40 if v6 else 20
    assert struct.unpack_from("<BBHHHH", frames[0]) == (NEEDS_CSUM, 5, iph + 8, 1200, iph, 6)
    frame = frames[0][VNET_HDR_LEN:]
    assert frame[iph + 8 :] == b"".join(payloads)
    assert struct.unpack_from("!H", frame, iph + 4)[0] == 8 + sum(map(len, payloads))
    if not v6:
        assert struct.unpack_from("!H", frame, 2)[0] == len(frame) and ipv4_header_valid(frame)
    # a longer datagram after a shorter one, or another flow, starts a new frame
    mixed = [packets[0], packets[-1], packets[1], udp_packet(b"x" * 1200, v6=v6, sport=1)]
    assert len(coalesce(mixed, udp=True)) == 3


def test_an_ipv4_packet_with_options_ends_its_flows_run() -> None:
    one = flow(3)
    with_options = bytearray(one[1])
    # the same segment with a 4-byte IP option (NOP x4): IHL 6, lengths and checksum fixed up
    raw = bytes([0x46]) + bytes(with_options[1:20]) + b"\x01\x01\x01\x01" + one[1][20:]
    raw = raw[:2] + struct.pack("!H", len(raw)) + raw[4:10] + b"\0\0" + raw[12:]
    raw = raw[:10] + struct.pack("!H", 0xFFFF - csum16(raw[:24])) + raw[12:]
    assert len(coalesce([one[0], one[1]])) == 1  # these two would merge...
    frames = coalesce([one[0], raw, one[1]])  # ...but not across a packet that cannot join
    assert frames == [ZERO_HEADER + one[0], ZERO_HEADER + raw, ZERO_HEADER + one[1]]
