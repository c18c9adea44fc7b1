"""Two (or more) in-memory devices and a wire between them: no sockets, explicit time; and a
TUN stand-in (PipeTun) for whole interfaces."""

from __future__ import annotations

import ipaddress
import os
import random
import struct
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from wgpy.protocol.crypto import generate_private_key, public_key
from wgpy.protocol.device import Device
from wgpy.protocol.peer import Peer


def make_rng(seed: int):  # type: ignore[no-untyped-def]
    return random.Random(seed).randbytes


@dataclass
class WallClock:
    """Wall-clock nanoseconds that tests move by hand (1.7e18 is in 2023)."""

    ns: int = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        return self.ns


def ipv4_packet(src: str, dst: str, payload: bytes = b"", proto: int = 17) -> bytes:
    """A minimal IPv4 packet with a correct total length (checksum left zero)."""
    total = 20 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + payload


def ipv6_packet(src: str, dst: str, payload: bytes = b"", next_header: int = 17) -> bytes:
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(payload),
        next_header,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return header + payload


@dataclass
class Node:
    device: Device
    address: Hashable
    private: bytes
    public: bytes
    inner: str  # our inner IPv4 address
    inner6: str
    received: list[bytes] = field(default_factory=list)


class Wire:
    """Moves datagrams between devices by destination address; can drop or record them."""

    def __init__(self, wall: WallClock | None = None) -> None:
        self.wall = wall or WallClock()
        self.epoch = self.wall.ns
        self.nodes: dict[Hashable, Node] = {}
        self.log: list[tuple[Hashable, Hashable, bytes]] = []
        self.drop_to: set[Hashable] = set()

    def add(self, node: Node) -> None:
        self.nodes[node.address] = node

    def tick(self, now: float) -> None:
        """Keep the wall clock in step with the simulated monotonic clock."""
        self.wall.ns = self.epoch + int(now * 1e9)

    def send(self, node: Node, packets: list[bytes], now: float) -> None:
        self.tick(now)
        node.device.send_packets(packets, now)

    def run(self, now: float, rounds: int = 20) -> int:
        """Deliver until nothing moves (bounded); returns how many datagrams moved."""
        self.tick(now)
        moved = 0
        for _ in range(rounds):
            batch = []
            for node in self.nodes.values():
                for data, dest in node.device.datagrams_to_send():
                    batch.append((node.address, dest, data))
            if not batch:
                break
            for src, dest, data in batch:
                self.log.append((src, dest, data))
                moved += 1
                target = self.nodes.get(dest)
                if target is None or dest in self.drop_to:
                    continue
                target.device.receive_datagrams([(data, src)], now)
            for node in self.nodes.values():
                node.received.extend(node.device.packets_to_deliver())
        return moved

    def advance(self, until: float, limit: int = 10_000) -> None:
        """Fire every device's timers at their own deadlines, in order, up to ``until``."""
        for _ in range(limit):
            deadlines = [
                (t, node)
                for node in self.nodes.values()
                if (t := node.device.get_timer()) is not None and t <= until
            ]
            if not deadlines:
                return
            t, node = min(deadlines, key=lambda x: x[0])
            self.tick(t)
            node.device.handle_timer(t)
            self.run(t)
        raise AssertionError("timers kept firing: a timer loop?")

    def fire_timers(self, now: float) -> None:
        self.tick(now)
        for node in self.nodes.values():
            t = node.device.get_timer()
            if t is not None and t <= now:
                node.device.handle_timer(now)


def make_node(
    n: int, wall: WallClock, seed: int | None = None, address: Hashable | None = None
) -> Node:
    rng = make_rng(seed if seed is not None else n)
    private = generate_private_key(rng)
    device = Device(private, rng=rng, wall_clock=wall)
    return Node(
        device=device,
        address=address or (f"192.0.2.{n}", 51820),
        private=private,
        public=public_key(private),
        inner=f"10.0.0.{n}",
        inner6=f"fd00::{n}",
    )


def connect(a: Node, b: Node, *, psk: bytes | None = None, endpoints: bool = True) -> Peer:
    """Make b a peer of a (one direction); returns a's Peer object for b."""
    return a.device.add_peer(
        b.public,
        preshared_key=psk,
        endpoint=b.address if endpoints else None,
        allowed_ips=[f"{b.inner}/32", f"{b.inner6}/128"],
    )


def pair(psk: bytes | None = None) -> tuple[Wire, Node, Node, WallClock]:
    wall = WallClock()
    a, b = make_node(1, wall), make_node(2, wall)
    connect(a, b, psk=psk)
    connect(b, a, psk=psk)
    wire = Wire(wall)
    wire.add(a)
    wire.add(b)
    return wire, a, b, wall


class PipeTun:
    """A TUN stand-in: packets to read in a list, readiness from a pipe holding one byte while
    any wait (the loop polls it like a TUN fd); what the interface writes is kept."""

    mtu = 1420

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: list[bytes] = []
        self.written: list[bytes] = []
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)

    def push(self, packets: Iterable[bytes]) -> None:
        was_empty = not self.queue
        self.queue.extend(packets)
        if was_empty and self.queue:
            os.write(self._w, b"x")

    def fileno(self) -> int:
        return self._r

    def read_batch(self, limit: int = 128) -> list[bytes]:
        taken, self.queue = self.queue[:limit], self.queue[limit:]
        if not self.queue:
            os.read(self._r, 1)
        return taken

    def write_batch(self, packets: Iterable[bytes]) -> None:
        self.written.extend(bytes(p) for p in packets)

    def close(self) -> None:
        if self._r >= 0:
            os.close(self._r)
            os.close(self._w)
            self._r = -1
