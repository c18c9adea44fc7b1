"""The sans-IO core on one core: handshakes and packets per second.

A benchmark, not a test: run ``make bench-core`` (or ``.venv/bin/python benchmarks/core.py``).
Each figure is the median of several rounds; the machine is shared, so compare figures from
the same run, not across runs.

- full handshakes/s: initiation, response and first transport message, both roles on this core
- responses/s: initiations consumed and answered by a responder
- encapsulate / decapsulate packets/s: 1420-byte packets in batches through the core
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from hashlib import blake2s

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from wgpy.protocol.crypto import generate_private_key, public_key
from wgpy.protocol.device import Device


class Wall:
    def __init__(self) -> None:
        self.ns = time.time_ns()

    def __call__(self) -> int:
        self.ns += 100_000_000  # every initiation gets a newer timestamp
        return self.ns


def make_pair() -> tuple[Device, Device, bytes, bytes]:
    wall = Wall()
    ka, kb = generate_private_key(os.urandom), generate_private_key(os.urandom)
    a = Device(ka, rng=os.urandom, wall_clock=wall)
    b = Device(kb, rng=os.urandom, wall_clock=wall)
    pa, pb = public_key(ka), public_key(kb)
    a.add_peer(pb, endpoint=("192.0.2.2", 51820), allowed_ips=["10.0.0.2/32"])
    b.add_peer(pa, endpoint=("192.0.2.1", 51820), allowed_ips=["10.0.0.1/32"])
    return a, b, pa, pb


def packet(size: int, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        size,
        0,
        0,
        64,
        17,
        0,
        bytes(map(int, src.split("."))),
        bytes(map(int, dst.split("."))),
    )
    return header + os.urandom(size - 20)


def bench_handshakes(n: int) -> float:
    a, b, _, pb = make_pair()
    peer = a.peers[pb]
    now = 0.0
    start = time.perf_counter()
    for _ in range(n):
        now += 6.0  # past REKEY_TIMEOUT, so the core allows another initiation
        a._initiate(peer, now, retry=False)
        b.receive_datagrams([(d, ("192.0.2.1", 51820)) for d, _ in a.datagrams_to_send()], now)
        a.receive_datagrams([(d, ("192.0.2.2", 51820)) for d, _ in b.datagrams_to_send()], now)
        b.receive_datagrams([(d, ("192.0.2.1", 51820)) for d, _ in a.datagrams_to_send()], now)
        b.datagrams_to_send()
    elapsed = time.perf_counter() - start
    assert b.peers[a.public_key].current is not None  # type: ignore[index]
    return n / elapsed


def bench_responses(n: int) -> float:
    a, b, _, pb = make_pair()
    peer = a.peers[pb]
    initiations = []
    now = 0.0
    for _ in range(n):
        now += 6.0
        a._initiate(peer, now, retry=False)
        initiations.append(a.datagrams_to_send()[0][0])
    src = ("192.0.2.1", 51820)
    start = time.perf_counter()
    t = 0.0
    for data in initiations:
        t += 1.0
        b.receive_datagrams([(data, src)], t)
    elapsed = time.perf_counter() - start
    answered = len(b.datagrams_to_send())
    assert answered == n, (answered, b.drops)
    return n / elapsed


def bench_handshake_floor(n: int, *, x25519_only: bool = False) -> float:
    """The cryptography one full handshake cannot do without, and nothing else: 2 fixed-base
    and 6 variable-base X25519, 96 BLAKE2s (84 inside the 16 KDFs, 12 HASH), 4 keyed BLAKE2s
    (MAC1 made and checked twice), 4 AEAD calls and 4 more AEAD contexts (the two keypairs),
    5 random draws. Full handshakes/s can never exceed this; the gap is protocol logic."""
    private = os.urandom(32)
    out = _ffi.new("unsigned char[32]")
    _lib.crypto_scalarmult_base(out, private)
    public = bytes(_ffi.buffer(out))
    key, nonce, data = os.urandom(32), bytes(12), os.urandom(96)
    start = time.perf_counter()
    for _ in range(n):
        for _ in range(2):
            o = _ffi.new("unsigned char[32]")
            _lib.crypto_scalarmult_base(o, private)
            bytes(_ffi.buffer(o))
        for _ in range(6):
            o = _ffi.new("unsigned char[32]")
            _lib.crypto_scalarmult(o, private, public)
            bytes(_ffi.buffer(o))
        if x25519_only:
            continue
        for _ in range(96):
            blake2s(data).digest()
        for _ in range(4):
            blake2s(data[:64], key=key, digest_size=16).digest()
        for _ in range(4):
            ChaCha20Poly1305(key).encrypt(nonce, data[:12], data[:32])
            ChaCha20Poly1305(key)
        for _ in range(5):
            os.urandom(32)
    return n / (time.perf_counter() - start)


def established(size: int) -> tuple[Device, Device]:
    a, b, _, _ = make_pair()
    a.send_packets([packet(64)], 0.0)
    for _ in range(3):
        b.receive_datagrams([(d, ("192.0.2.1", 51820)) for d, _ in a.datagrams_to_send()], 0.0)
        a.receive_datagrams([(d, ("192.0.2.2", 51820)) for d, _ in b.datagrams_to_send()], 0.0)
    b.packets_to_deliver()
    return a, b


def bench_encapsulate(total: int, batch: int, size: int) -> float:
    a, _ = established(size)
    packets = [packet(size) for _ in range(batch)]
    rounds = total // batch
    start = time.perf_counter()
    for _ in range(rounds):
        a.send_packets(packets, 1.0)
        a.datagrams_to_send()
    elapsed = time.perf_counter() - start
    return rounds * batch / elapsed


def bench_decapsulate(total: int, batch: int, size: int) -> float:
    a, b = established(size)
    rounds = total // batch
    src = ("192.0.2.1", 51820)
    batches = []
    packets = [packet(size) for _ in range(batch)]
    for _ in range(rounds):
        a.send_packets(packets, 1.0)
        batches.append([(d, src) for d, _ in a.datagrams_to_send()])
    start = time.perf_counter()
    for datagrams in batches:
        b.receive_datagrams(datagrams, 1.0)
        b.packets_to_deliver()
    elapsed = time.perf_counter() - start
    assert not b.drops, b.drops
    return rounds * batch / elapsed


def median_of(rounds: int, fn: Callable[[], float]) -> tuple[float, float, float]:
    values = [fn() for _ in range(rounds)]
    return statistics.median(values), min(values), max(values)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    results = {}
    cases: list[tuple[str, str, Callable[[], float]]] = [
        ("full_handshakes_per_s", "full handshakes/s", lambda: bench_handshakes(2000 // scale)),
        ("responses_per_s", "initiations answered/s", lambda: bench_responses(3000 // scale)),
        (
            "encapsulate_pps",
            "encapsulate packets/s (1420 B)",
            lambda: bench_encapsulate(200_000 // scale, 64, 1420),
        ),
        (
            "decapsulate_pps",
            "decapsulate packets/s (1420 B)",
            lambda: bench_decapsulate(200_000 // scale, 64, 1420),
        ),
    ]
    for key, label, fn in cases:
        med, lo, hi = median_of(args.rounds, fn)
        results[key] = {"median": med, "min": lo, "max": hi}
        print(f"{label:34s} {med:12,.0f}   (min {lo:,.0f}, max {hi:,.0f})", flush=True)
    # The handshake against its cryptographic floor, interleaved round by round so that the
    # ratios come from the same moments of this noisy machine.
    n = 500 // scale
    floors: dict[str, list[float]] = {"full": [], "floor": [], "x25519": []}
    for _ in range(args.rounds):
        floors["full"].append(bench_handshakes(n))
        floors["floor"].append(bench_handshake_floor(n))
        floors["x25519"].append(bench_handshake_floor(n, x25519_only=True))
    med = {k: statistics.median(v) for k, v in floors.items()}
    results["handshake_floor_per_s"] = {"median": med["floor"]}
    results["handshake_x25519_per_s"] = {"median": med["x25519"]}
    print(f"{'crypto floor of a handshake/s':34s} {med['floor']:12,.0f}   "
          f"(X25519 alone {med['x25519']:,.0f}/s; full handshakes this moment "
          f"{med['full']:,.0f}/s = {med['full'] / med['floor']:.0%} of the floor)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
