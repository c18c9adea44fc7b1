"""Helper programs the interop tests run inside namespaces (stdlib + cryptography only).

    traffic.py recv --bind ADDR --port P             one TCP connection; prints its sha256
    traffic.py send --to ADDR --port P --bytes N     sends N random bytes; prints their sha256
    traffic.py flood --to ADDR --port P --count N --peer-key B64 [--as-key B64]

`flood` sends hostile datagrams to a WireGuard listen port: random junk, messages of each type
with the right and wrong sizes, initiations with a valid MAC1 for the target (so they reach the
handshake code), genuine Noise initiations (from a key the target knows, if --as-key is given;
from unknown keys otherwise), their replays, and bit-flipped mutations of them. It is bounded
by --count and --duration, and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import socket
import struct
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

CHUNK = 64 * 1024


def recv(args: argparse.Namespace) -> None:
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((args.bind, args.port))
        srv.listen(1)
        srv.settimeout(args.timeout)
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(args.timeout)
            h = hashlib.sha256()
            n = 0
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                k = conn.recv_into(buf)
                if not k:
                    break
                h.update(view[:k])
                n += k
    print(json.dumps({"sha256": h.hexdigest(), "bytes": n}), flush=True)


def send(args: argparse.Namespace) -> None:
    family = socket.AF_INET6 if ":" in args.to else socket.AF_INET
    h = hashlib.sha256()
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(args.timeout)
        s.connect((args.to, args.port))
        left = args.bytes
        while left > 0:
            chunk = os.urandom(min(CHUNK, left))
            s.sendall(chunk)
            h.update(chunk)
            left -= len(chunk)
        s.shutdown(socket.SHUT_WR)
        # Wait for the receiver to close: everything was read.
        while s.recv(CHUNK):
            pass
    print(json.dumps({"sha256": h.hexdigest(), "bytes": args.bytes}), flush=True)


# --------------------------------------------------------------------------- Noise, minimal


def _blake2s(*parts: bytes) -> bytes:
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "blake2s")


def _kdf(key: bytes, data: bytes, n: int) -> list[bytes]:
    prk = _hmac(key, data)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = _hmac(prk, prev + bytes([i]))
        out.append(prev)
    return out


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"


class Initiator:
    """Builds genuine handshake initiations (message type 1) to one responder.

    Self-contained on purpose (not wgpy.protocol): the flood must not share bugs with wgpy.
    """

    def __init__(self, responder_public: bytes, static_private: bytes | None):
        self.rpub = responder_public
        self.static = (
            X25519PrivateKey.from_private_bytes(static_private)
            if static_private
            else X25519PrivateKey.generate()
        )
        self.mac1_key = _blake2s(b"mac1----", responder_public)
        self.tai = time.time_ns()

    def timestamp(self) -> bytes:
        # TAI64N, strictly increasing per message.
        self.tai = max(self.tai + 1000, time.time_ns())
        secs, nanos = divmod(self.tai, 1_000_000_000)
        return struct.pack(">QI", secs + 2**62 + 10, nanos)

    def initiation(self, sender_index: int) -> bytes:
        def dh(priv: X25519PrivateKey, pub: bytes) -> bytes:
            return priv.exchange(X25519PublicKey.from_public_bytes(pub))

        def aead(key: bytes, plain: bytes, ad: bytes) -> bytes:
            return ChaCha20Poly1305(key).encrypt(b"\0" * 12, plain, ad)

        c = _blake2s(CONSTRUCTION)
        h = _blake2s(_blake2s(c, IDENTIFIER), self.rpub)
        e = X25519PrivateKey.generate()
        epub = e.public_key().public_bytes_raw()
        (c,) = _kdf(c, epub, 1)
        h = _blake2s(h, epub)
        c, k = _kdf(c, dh(e, self.rpub), 2)
        spub = self.static.public_key().public_bytes_raw()
        enc_static = aead(k, spub, h)
        h = _blake2s(h, enc_static)
        c, k = _kdf(c, dh(self.static, self.rpub), 2)
        enc_ts = aead(k, self.timestamp(), h)
        body = struct.pack("<II", 1, sender_index) + epub + enc_static + enc_ts
        return self.with_mac1(body + b"\0" * 32)

    def with_mac1(self, msg: bytes) -> bytes:
        """Recompute MAC1 (and zero MAC2) so a message gets past the cheap check."""
        alpha = msg[:-32]
        return alpha + _mac(self.mac1_key, alpha) + b"\0" * 16


def flood(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    target_pub = base64.b64decode(args.peer_key)
    known = Initiator(target_pub, base64.b64decode(args.as_key) if args.as_key else None)
    stranger = Initiator(target_pub, None)
    genuine: list[bytes] = []

    def flip(msg: bytes) -> bytes:
        b = bytearray(msg)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)

    def header(kind: int, size: int) -> bytes:
        return struct.pack("<I", kind) + rng.randbytes(max(0, size - 4))

    def make(i: int) -> bytes:
        kind = i % 12
        if kind == 0:  # junk of any size
            return rng.randbytes(rng.randint(0, 1500))
        if kind == 1:  # right type, right size, random content
            return header(rng.randint(1, 4), rng.choice((148, 92, 64, 32, 48, 1452)))
        if kind == 2:  # right type, wrong size
            t, size = rng.choice(((1, 148), (2, 92), (3, 64), (4, 32)))
            return header(t, size + rng.choice((-1, 1, -16, 16)))
        if kind == 3:  # random initiation body with a valid MAC1
            return known.with_mac1(header(1, 148))
        if kind == 4:  # random response body with a valid MAC1
            return known.with_mac1(header(2, 92))
        if kind == 5:  # cookie reply for a random index
            return header(3, 64)
        if kind == 6:  # transport data for a random receiver index and counter
            return header(4, 32 + 16 * rng.randint(0, 90))
        if kind == 7 or not genuine:  # genuine initiation (unique timestamp)
            who = known if (i // 12) % 2 == 0 else stranger
            msg = who.initiation(rng.getrandbits(32))
            if len(genuine) < 256:
                genuine.append(msg)
            return msg
        if kind == 8:  # replay of a genuine one
            return rng.choice(genuine)
        if kind == 9:  # mutated genuine one, MAC1 fixed up so it reaches the crypto
            return known.with_mac1(flip(rng.choice(genuine)))
        if kind == 10:  # mutated genuine one, as is
            return flip(rng.choice(genuine))
        # nonzero reserved bytes on an otherwise genuine initiation
        mutable = bytearray(rng.choice(genuine))
        mutable[1 + rng.randrange(3)] = rng.randint(1, 255)
        return known.with_mac1(bytes(mutable))

    family = socket.AF_INET6 if ":" in args.to else socket.AF_INET
    sent = errors = replies = 0
    reply_types: dict[str, int] = {}  # by message type: 2 handshake response, 3 cookie reply
    start = time.monotonic()
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for i in range(args.count):
            # Pace the flood over --duration seconds (bounded by count and time).
            due = start + args.duration * i / args.count
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            try:
                s.sendto(make(i), (args.to, args.port))
                sent += 1
            except (BlockingIOError, ConnectionRefusedError, OSError):
                errors += 1
            for _ in range(8):
                try:
                    reply = s.recv(2048)
                except (BlockingIOError, ConnectionRefusedError, OSError):
                    break
                replies += 1
                kind = str(reply[0]) if reply else "empty"
                reply_types[kind] = reply_types.get(kind, 0) + 1
            if time.monotonic() - start > args.duration + 30:
                break
    summary = {"sent": sent, "errors": errors, "replies": replies, "reply_types": reply_types}
    print(json.dumps(summary), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--bind", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--timeout", type=float, default=120)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.add_argument("--timeout", type=float, default=120)
    f = sub.add_parser("flood")
    f.add_argument("--to", required=True)
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--count", type=int, default=20_000)
    f.add_argument("--duration", type=float, default=3.0)
    f.add_argument("--peer-key", required=True, help="the target's public key (base64)")
    f.add_argument("--as-key", help="a private key (base64) the target knows as a peer")
    f.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    {"recv": recv, "send": send, "flood": flood}[args.cmd](args)


if __name__ == "__main__":
    main()
