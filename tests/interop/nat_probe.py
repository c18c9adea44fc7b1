"""Probes the NAT lab's tests run inside namespaces (stdlib + aioice only). Each prints JSON.

    nat_probe.py stun --to ADDR:PORT [--to ...] [--bind ADDR:PORT] [--tcp] [--wait S]
        STUN Binding requests from one socket to each destination in turn; prints
        {"local": [ip, port], "mapped": [[ip, port] or null, ...]}. With --wait the first
        destination is retried until it answers or S seconds pass (a server starting up).
    nat_probe.py session --bind ADDR:PORT --to ADDR:PORT --listen S [--hello TEXT]
        One UDP socket: sends TEXT to the destination, then prints a JSON line for every
        datagram received during S seconds ({"event": "received", "from": [...], "data":
        "...", "at": seconds}), after {"event": "ready", "local": [...]} and before
        {"event": "done"}. Unsolicited inbound and mapping lifetimes are tested with it.
    nat_probe.py send --to ADDR:PORT --data TEXT [--bind ADDR:PORT]
        One datagram, unsolicited; prints {"sent": N}.
    nat_probe.py reflect --bind ADDR:PORT --for S
        For each datagram "delay=D": replies "now SRC" at once and "late SRC" after D s;
        anything else is echoed. Prints {"event": "ready"} first.
    nat_probe.py turn --server ADDR:PORT --transport udp|tcp|tls --username U --password P
            --peer ADDR:PORT [--cafile F] [--denied-peer ADDR:PORT]
        A TURN allocation with aioice's TURN client; sends a datagram to the peer through the
        relay and waits for the peer's echo; with --denied-peer, asks for a channel to that
        peer too, then relays once more; prints {"relayed": [...], "echo": "...", "denied":
        ERROR-CODE or null, "after_denied": "..."} or {"error": "...", "code": ERROR-CODE}.

Addresses are IPv4 (`192.0.2.1:3478`) or bracketed IPv6 (`[2001:db8::1]:3478`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import socket
import ssl
import struct
import sys
import time
from typing import Any

from aioice import stun, turn

Address = tuple[str, int]


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"{text!r} is not ADDRESS:PORT")
    return host.strip("[]"), int(port)


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def udp_socket(bind: Address | None, like: str) -> socket.socket:
    family = family_of(bind[0] if bind else like)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(bind or ("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    return sock


# --------------------------------------------------------------------------- STUN


def binding_request() -> stun.Message:
    return stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)


def mapped_from(data: bytes, request: stun.Message) -> Address | None:
    try:
        message = stun.parse_message(data)
    except ValueError:
        return None
    if message.transaction_id != request.transaction_id:
        return None
    address = message.attributes.get("XOR-MAPPED-ADDRESS")
    return (address[0], address[1]) if address else None


def stun_udp(sock: socket.socket, to: Address, timeout: float) -> Address | None:
    """One Binding transaction: retransmitted every 0.25 s until `timeout`."""
    request = binding_request()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.sendto(bytes(request), to)
        resend = time.monotonic() + min(0.25, left)
        while (wait := resend - time.monotonic()) > 0:
            if not select.select([sock], [], [], wait)[0]:
                break
            data, _ = sock.recvfrom(2048)
            mapped = mapped_from(data, request)
            if mapped:
                return mapped
    return None


def stun_tcp(bind: Address | None, to: Address, timeout: float) -> tuple[Address, Address | None]:
    request = binding_request()
    with socket.socket(family_of(to[0]), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if bind:
            sock.bind(bind)
        sock.settimeout(timeout)
        try:
            sock.connect(to)
        except OSError:
            return sock.getsockname()[:2], None
        local = sock.getsockname()[:2]
        sock.sendall(bytes(request))
        data = b""
        try:
            while len(data) < 20 or len(data) < 20 + struct.unpack("!H", data[2:4])[0]:
                chunk = sock.recv(2048)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return local, None
        length = struct.unpack("!H", data[2:4])[0] if len(data) >= 4 else 0
        return local, mapped_from(data[: 20 + length], request)


def cmd_stun(args: argparse.Namespace) -> int:
    bind = parse_address(args.bind) if args.bind else None
    destinations = [parse_address(t) for t in args.to]
    results: list[Address | None] = []
    if args.tcp:
        local: Address | None = None
        for to in destinations:
            local, mapped = stun_tcp(bind, to, args.timeout)
            results.append(mapped)
        emit({"local": local, "mapped": results})
        return 0
    with udp_socket(bind, destinations[0][0]) as sock:
        first = None
        deadline = time.monotonic() + args.wait
        for _ in range(int(args.wait / args.timeout) + 1):
            first = stun_udp(sock, destinations[0], args.timeout)
            if first or time.monotonic() >= deadline:
                break
        results.append(first)
        for to in destinations[1:]:
            results.append(stun_udp(sock, to, args.timeout))
        emit({"local": sock.getsockname()[:2], "mapped": results})
    return 0


# --------------------------------------------------------------------------- plain UDP


def cmd_session(args: argparse.Namespace) -> int:
    to = parse_address(args.to)
    with udp_socket(parse_address(args.bind), to[0]) as sock:
        start = time.monotonic()
        emit({"event": "ready", "local": sock.getsockname()[:2]})
        sock.sendto(args.hello.encode(), to)
        while (left := start + args.listen - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                continue
            data, source = sock.recvfrom(2048)
            emit(
                {
                    "event": "received",
                    "from": source[:2],
                    "data": data.decode(errors="replace"),
                    "at": round(time.monotonic() - start, 3),
                }
            )
    emit({"event": "done"})
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    to = parse_address(args.to)
    with udp_socket(parse_address(args.bind) if args.bind else None, to[0]) as sock:
        emit({"sent": sock.sendto(args.data.encode(), to)})
    return 0


def cmd_reflect(args: argparse.Namespace) -> int:
    bind = parse_address(args.bind)
    with socket.socket(family_of(bind[0]), socket.SOCK_DGRAM) as sock:
        sock.bind(bind)
        emit({"event": "ready"})
        end = time.monotonic() + args.duration
        late: list[tuple[float, Address]] = []  # (when, to), at most one per request
        while (now := time.monotonic()) < end:
            for due in [x for x in late if x[0] <= now]:
                late.remove(due)
                sock.sendto(f"late {due[1][0]}:{due[1][1]}".encode(), due[1])
            wait = min([end - now, *(when - now for when, _ in late)])
            if not select.select([sock], [], [], max(wait, 0))[0]:
                continue
            data, source = sock.recvfrom(2048)
            text = data.decode(errors="replace")
            if text.startswith("delay=") and len(late) < 64:
                sock.sendto(f"now {source[0]}:{source[1]}".encode(), source)
                late.append((time.monotonic() + float(text[6:]), source[:2]))
            else:
                sock.sendto(data, source)
    return 0


# --------------------------------------------------------------------------- TURN


class Receiver(asyncio.DatagramProtocol):
    """Where the TURN client delivers what the relay received from peers."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.queue.put_nowait((data, addr))


def error_code(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    if response is not None and "ERROR-CODE" in response.attributes:
        return int(response.attributes["ERROR-CODE"][0])
    return None


async def turn_client(args: argparse.Namespace) -> dict[str, Any]:
    server = parse_address(args.server)
    peer = parse_address(args.peer)
    loop = asyncio.get_running_loop()
    options = {
        "username": args.username,
        "password": args.password,
        "lifetime": 600,
        "channel_refresh_time": 500,
    }
    client: turn.TurnClientUdpProtocol | turn.TurnClientTcpProtocol
    if args.transport == "udp":
        _, client = await loop.create_datagram_endpoint(
            lambda: turn.TurnClientUdpProtocol(server, **options), remote_addr=server
        )
    else:
        context = None
        if args.transport == "tls":
            context = ssl.create_default_context(cafile=args.cafile)
        _, client = await loop.create_connection(
            lambda: turn.TurnClientTcpProtocol(server, **options),
            host=server[0],
            port=server[1],
            ssl=context,
        )
    receiver = Receiver()
    try:
        relayed = await client.connect()
        client.receiver = receiver
        await client.send_data(b"hello through the relay", peer)
        data, source = await asyncio.wait_for(receiver.queue.get(), args.timeout)
        result: dict[str, Any] = {
            "relayed": list(relayed),
            "echo": data.decode(errors="replace"),
            "echo_from": list(source),
            "denied": None,
        }
        if args.denied_peer:
            try:
                await client.channel_bind(0x7000, parse_address(args.denied_peer))
            except stun.TransactionError as e:
                result["denied"] = error_code(e) or str(e)
            # The refusal must leave the allocation as it was: relay once more.
            await client.send_data(b"still relaying", peer)
            data, _ = await asyncio.wait_for(receiver.queue.get(), args.timeout)
            result["after_denied"] = data.decode(errors="replace")
        return result
    finally:
        await client.delete()


def cmd_turn(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(asyncio.wait_for(turn_client(args), args.timeout + 10))
    except (stun.TransactionError, OSError, TimeoutError, ssl.SSLError) as e:
        emit({"error": f"{type(e).__name__}: {e}", "code": error_code(e)})
        return 1
    emit(result)
    return 0


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nat_probe.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stun")
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--bind")
    p.add_argument("--tcp", action="store_true")
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--wait", type=float, default=0.0)
    p.set_defaults(func=cmd_stun)
    p = sub.add_parser("session")
    p.add_argument("--bind", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--listen", type=float, required=True)
    p.add_argument("--hello", default="hello")
    p.set_defaults(func=cmd_session)
    p = sub.add_parser("send")
    p.add_argument("--to", required=True)
    p.add_argument("--bind")
    p.add_argument("--data", default="unsolicited")
    p.set_defaults(func=cmd_send)
    p = sub.add_parser("reflect")
    p.add_argument("--bind", required=True)
    p.add_argument("--for", dest="duration", type=float, required=True)
    p.set_defaults(func=cmd_reflect)
    p = sub.add_parser("turn")
    p.add_argument("--server", required=True)
    p.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp")
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--cafile")
    p.add_argument("--denied-peer")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_turn)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
