"""Which netlink announcements are changes of the underlay (the pure part of
wgpy.mesh.client.addrwatch); tests/interop/test_addrwatch.py watches a real namespace."""

from __future__ import annotations

import struct

from wgpy.mesh.client.addrwatch import (
    NLMSG_HEADER,
    RTM_DELADDR,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    announces_change,
)

RTM_NEWNEIGH = 28  # neighbour table: not a change of ours


def message(kind: int, body: bytes) -> bytes:
    data = NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, 0, 0, 0) + body
    return data + b"\0" * (-len(data) % 4)


def addr(kind: int, index: int) -> bytes:
    return message(
        kind, struct.pack("=BBBBI", 2, 24, 0, 0, index) + b"\x08\x00\x01\x00\xc0\x00\x02\x0a"
    )


def link(index: int) -> bytes:
    return message(RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, index, 0, 0))


def route(oif: int | None) -> bytes:
    rtmsg = struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 254, 3, 0, 1, 0)
    attrs = b"\x08\x00\x05\x00\xcb\x00\x71\x01"  # RTA_GATEWAY 203.0.113.1
    if oif is not None:
        attrs += struct.pack("=HHI", 8, 4, oif)
    return message(RTM_NEWROUTE, rtmsg + attrs)


def test_address_link_and_route_changes_count() -> None:
    assert announces_change(addr(RTM_NEWADDR, 2))
    assert announces_change(addr(RTM_DELADDR, 2))
    assert announces_change(link(2))
    assert announces_change(route(2))
    assert announces_change(route(None))  # no single way out: a change all the same


def test_the_mesh_interface_itself_is_not_a_change_of_the_underlay() -> None:
    assert not announces_change(addr(RTM_NEWADDR, 7), exclude=7)
    assert not announces_change(route(7), exclude=7)
    assert not announces_change(link(7), exclude=7)
    # several messages in one datagram: any of another interface counts
    assert announces_change(route(7) + addr(RTM_NEWADDR, 2), exclude=7)


def test_other_messages_and_malformed_data_are_no_change() -> None:
    assert not announces_change(message(RTM_NEWNEIGH, b"\0" * 12))
    assert not announces_change(b"")
    assert not announces_change(addr(RTM_NEWADDR, 2)[:10])  # a truncated header
    long = bytearray(addr(RTM_NEWADDR, 2))
    long[0:4] = struct.pack("=I", 4096)  # a length beyond the datagram
    assert not announces_change(bytes(long))
    short = bytearray(addr(RTM_NEWADDR, 2))
    short[0:4] = struct.pack("=I", 3)  # shorter than its own header
    assert not announces_change(bytes(short))
    assert not announces_change(message(RTM_NEWADDR, b"\0\0"))  # too short to say where
