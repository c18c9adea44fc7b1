"""Two wgpy protocol cores talking over an in-memory wire: no root, no sockets.

Run it with ``make demo`` or ``.venv/bin/python examples/in_memory_pair.py``. It shows the
sans-IO API that the asyncio shell drives: inner packets in, datagrams out, and the reverse,
with time passed in by the caller.
"""

from __future__ import annotations

import base64
import os
import struct
import time

from wgpy.protocol.crypto import generate_private_key, public_key
from wgpy.protocol.device import Device

KINDS = {1: "initiation", 2: "response", 3: "cookie reply", 4: "transport"}


def ping(src: str, dst: str, text: bytes) -> bytes:
    """An IPv4/UDP-shaped packet carrying ``text`` (enough for cryptokey routing)."""
    addr = [bytes(map(int, a.split("."))) for a in (src, dst)]
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(text), 0, 0, 64, 17, 0, *addr) + text


def short(key: bytes) -> str:
    return base64.b64encode(key).decode()[:10] + "…"


def main() -> None:
    alice_key, bob_key = generate_private_key(os.urandom), generate_private_key(os.urandom)
    alice = Device(alice_key, rng=os.urandom, wall_clock=time.time_ns)
    bob = Device(bob_key, rng=os.urandom, wall_clock=time.time_ns)
    alice_addr, bob_addr = ("192.0.2.1", 51820), ("192.0.2.2", 51820)
    alice.add_peer(public_key(bob_key), endpoint=bob_addr, allowed_ips=["10.0.0.2/32"])
    bob.add_peer(public_key(alice_key), endpoint=alice_addr, allowed_ips=["10.0.0.1/32"])
    print(f"alice {short(public_key(alice_key))} at {alice_addr}, inner 10.0.0.1")
    print(f"bob   {short(public_key(bob_key))} at {bob_addr}, inner 10.0.0.2\n")

    devices = {alice_addr: ("alice", alice), bob_addr: ("bob", bob)}
    start = time.monotonic()

    def wire() -> None:
        for _ in range(10):
            moved = False
            for addr, (name, dev) in list(devices.items()):
                for data, dest in dev.datagrams_to_send():
                    moved = True
                    dest_name, dest_dev = devices[dest]
                    print(f"  {name:5s} -> {dest_name:5s}  {KINDS[data[0]]:10s} {len(data):5d} B")
                    dest_dev.receive_datagrams([(data, addr)], time.monotonic() - start)
                for packet in dev.packets_to_deliver():
                    print(f"  {name} delivers to its TUN: {packet[20:]!r}")
            if not moved:
                return

    print("alice sends a packet to 10.0.0.2 (no session yet: it is staged, a handshake starts)")
    alice.send_packets([ping("10.0.0.1", "10.0.0.2", b"hello bob")], time.monotonic() - start)
    wire()
    print("\nbob answers")
    bob.send_packets([ping("10.0.0.2", "10.0.0.1", b"hello alice")], time.monotonic() - start)
    wire()
    due = (alice.get_timer() or 0.0) - (time.monotonic() - start)
    print(f"\nalice's next timer (a keepalive) is due in {due:.1f} s; drops: {dict(alice.drops)}")


if __name__ == "__main__":
    main()
