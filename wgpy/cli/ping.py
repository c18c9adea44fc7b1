"""``wgpy ping PEER``: ping a mesh peer through the tunnel and say which path each pong took,
as ``tailscale ping`` does.

PEER is a peer's DNS name from the node's map (``HOST.USER.BASE``, ``HOST.USER`` or the
short ``HOST``; of two users' hosts of one name, this node's user's), its hostname, one of
its mesh addresses, or the start of its public key (at least 4 characters, unambiguous).
Each ping is an ICMP echo to the peer's mesh address: it goes into this node's interface,
through WireGuard, to the peer, and the pong comes back the same way. The path is read the
moment each pong arrives, from the running node: where WireGuard sends to the peer now (the
interface's control socket) and what the node's path manager selected (the peer list the
daemon keeps, ``peers.json``). Where the two disagree (the manager changed the path less
than half a second ago and has not saved it yet), the peer list is read again until it
catches up, for up to a second.

By default (``--until-direct``, as tailscale's) pinging stops at the first pong over a
direct path, and a run that saw none after ``-c`` pings fails with "direct connection not
established"; ``--no-until-direct`` sends all ``-c`` pings.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import time
from pathlib import Path
from typing import Any

from wgpy.keys import key_to_base64
from wgpy.mesh.client.state import DEFAULT_STATE_DIR, StateDir, StateError
from wgpy.uapi.client import UapiError, uapi_get

from .environment import CommandError, Environment, ExitStatus
from .icmp import EchoSocket
from .status import no_path_text, parse_path, path_text

__all__ = ["find_peer", "register"]

PATH_SETTLE = 1.0  # seconds to wait for the peer list to catch up with the interface
MIN_KEY_PREFIX = 4


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ping",
        help="ping a mesh peer and say which path (direct or relay) each pong took",
        description="Ping a mesh peer through the tunnel (ICMP echo to its mesh address) and "
        "say for each pong which path it came through: direct ADDRESS:PORT, or the relay. "
        "Stops at the first direct pong unless --no-until-direct.",
    )
    parser.add_argument(
        "peer",
        metavar="PEER",
        help="name (HOST.USER.BASE, HOST.USER or HOST), mesh address or public key start",
    )
    parser.add_argument(
        "-c", "--count", type=int, default=10, help="send at most this many pings (default 10)"
    )
    parser.add_argument(
        "--until-direct",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop at the first pong over a direct path, fail without one (default on)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="wait this long for each pong (default 2)",
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="between the starts of two pings (default 1)",
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", type=Path, help=f"default {DEFAULT_STATE_DIR}"
    )
    parser.set_defaults(handler=ping_command)


def find_peer(peers: list[dict[str, Any]], wanted: str, own_user: str = "") -> dict[str, Any]:
    """The one peer ``wanted`` names (its DNS name in full, HOST.USER or HOST, hostname, mesh
    address, or public key start); a CommandError says why there is none. Two users' hosts
    of one name: ``own_user``'s wins, as the node's resolver answers the short name."""
    text = wanted.strip()
    by_name = [p for p in peers if p.get("hostname") == text]
    if len(by_name) > 1 and own_user:
        mine = [p for p in by_name if p.get("user") == own_user]
        by_name = mine if len(mine) == 1 else by_name
    if len(by_name) == 1:
        return by_name[0]
    named = _by_dns_name(peers, text)
    if named is not None:
        return named
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is not None:
        for peer in peers:
            if any(_address(a) == address for a in peer.get("addresses", [])):
                return peer
        raise CommandError(f"no peer of this node has the mesh address {text}: see `wgpy status`")
    if len(text) >= MIN_KEY_PREFIX:
        by_key = [p for p in peers if str(p.get("public_key", "")).startswith(text)]
        if len(by_key) == 1:
            return by_key[0]
        if len(by_key) > 1:
            raise CommandError(
                f"{len(by_key)} peers' public keys start with {text}: give more of the key"
            )
    if len(by_name) > 1:
        raise CommandError(
            f"{len(by_name)} peers are called {text}: name one by its mesh address instead"
        )
    raise CommandError(
        f"this node has no peer called {text} (a hostname, mesh address or public key "
        "start): see `wgpy status`"
    )


def _by_dns_name(peers: list[dict[str, Any]], text: str) -> dict[str, Any] | None:
    """The peer whose DNS name (HOST.USER.BASE, from the map) is ``text`` in full or starts
    with ``text`` as HOST.USER (case and a final dot do not matter)."""
    name = text.lower().rstrip(".")
    if not name:
        return None
    found = [p for p in peers if isinstance(p.get("name"), str) and p["name"] == name]
    if not found and name.count(".") == 1:
        found = [
            p
            for p in peers
            if isinstance(p.get("name"), str) and p["name"].split(".", 2)[:2] == name.split(".")
        ]
    return found[0] if len(found) == 1 else None


def _address(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_interface(str(text)).ip
    except ValueError:
        return None


def ping_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.count < 1:
        raise CommandError("-c must be at least 1")
    if not 0 < args.timeout <= 60 or not 0 <= args.interval <= 60:
        raise CommandError("--timeout must be more than 0 and --interval at least 0 (seconds)")
    state = StateDir(args.state_dir or DEFAULT_STATE_DIR)
    try:
        settings = state.read_settings()
        node = state.read_node()
        pid = state.daemon_pid()
        peers = state.read_peers() if settings is not None else []
    except StateError as e:
        raise CommandError(e.message) from None
    if settings is None or node is None:
        raise CommandError(
            f"there is no mesh node in {state.path}: join one with "
            "`wgpy up --login-server URL --auth-key KEY`"
        )
    if pid is None:
        raise CommandError(
            f"this mesh node ({settings.interface}) is not running: start it with `wgpy up`"
        )
    peer = find_peer(peers, args.peer, str(node.get("user") or ""))
    name = str(peer.get("hostname") or str(peer.get("public_key", "?"))[:8])
    if peer.get("can_reach") is False:
        raise CommandError(
            f"the policy does not let this node reach {name} (only answer it): "
            "there is nothing to ping"
        )
    addresses = [a for a in (_address(x) for x in peer.get("addresses", [])) if a is not None]
    if not addresses:
        raise CommandError(f"the peer {name} has no mesh address to ping")
    target = str(min(addresses, key=lambda a: a.version))  # IPv4 first, as status shows
    public_key = str(peer.get("public_key"))
    pinger = Pinger(state, settings.interface, public_key)
    pinger.endpoint()  # the node's interface answers, or say it is down
    try:
        sock = EchoSocket(target)
    except PermissionError:
        raise CommandError(
            f"cannot open an ICMP socket to ping {target}: run it as root, or let this group "
            "ping (sysctl net.ipv4.ping_group_range)"
        ) from None
    except OSError as e:
        raise CommandError(
            f"cannot open an ICMP socket to ping {target}: {e.strerror or e}"
        ) from None
    token = env.rng(8)
    pongs = 0
    try:
        for seq in range(1, args.count + 1):
            payload = token + seq.to_bytes(2, "big")
            started = time.monotonic()
            sock.send(os.getpid(), seq, payload)
            rtt = _wait_pong(sock, payload, started, args.timeout)
            if rtt is None:
                why = pinger.no_pong_reason(peer)
                env.stdout.write(f"timeout waiting for pong from {name} ({target}){why}\n")
            else:
                pongs += 1
                kind, where = pinger.path_now()
                env.stdout.write(f"pong from {name} ({target}) via {where} in {_ms(rtt * 1000)}\n")
                env.stdout.flush()
                if kind == "direct" and args.until_direct:
                    return ExitStatus.SUCCESS
            if seq < args.count:
                time.sleep(max(0.0, started + args.interval - time.monotonic()))
    finally:
        sock.close()
    if pongs == 0:
        raise CommandError(f"no pong from {name} ({target}) in {args.count} pings")
    if args.until_direct:
        raise CommandError("direct connection not established")
    return ExitStatus.SUCCESS


def _wait_pong(sock: EchoSocket, payload: bytes, sent: float, timeout: float) -> float | None:
    """The round-trip time of the echo whose payload is ``payload``, sent at ``sent`` (the
    clock read before the send: the pong may be back before the send returns), or None after
    ``timeout`` seconds."""
    deadline = sent + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        try:
            reply = sock.receive()
        except BlockingIOError:
            continue
        if reply is not None and reply[2] == payload:
            return time.monotonic() - sent
    return None


def _ms(ms: float) -> str:
    return f"{ms:.1f} ms" if ms >= 0.1 else f"{ms:.2f} ms"


class Pinger:
    """Reads one peer's path from the running node."""

    def __init__(self, state: StateDir, interface: str, public_key: str) -> None:
        self.state = state
        self.interface = interface
        self.public_key = public_key

    def endpoint(self) -> str | None:
        """Where the interface sends to the peer now."""
        try:
            device = uapi_get(self.interface)
        except (UapiError, OSError):
            raise CommandError(
                f"this mesh node's interface {self.interface} does not answer: is it up? "
                "(`wgpy status`)"
            ) from None
        for p in device.peers:
            if key_to_base64(p.public_key) == self.public_key:
                return p.endpoint
        raise CommandError("the peer has left this node's interface (the map changed)")

    def saved_path(self) -> dict[str, Any] | None:
        try:
            peers = self.state.read_peers()
        except StateError:
            return None  # being written: read again
        for peer in peers:
            if peer.get("public_key") == self.public_key:
                return parse_path(peer.get("path"))
        return None

    def path_now(self) -> tuple[str, str]:
        """``(kind, "direct ADDRESS:PORT" | "relay NAME")`` of the path WireGuard uses for
        the peer now."""
        endpoint = self.endpoint()
        deadline = time.monotonic() + PATH_SETTLE
        while True:
            path = self.saved_path()
            if path is None or path["kind"] == "none":
                # no path of the manager's: WireGuard's own endpoint, which roaming moves to
                # where the peer's packets (this pong) came from
                if path is None or time.monotonic() >= deadline:
                    return "direct", f"direct {endpoint or '?'}"
            elif path["endpoint"] == endpoint or time.monotonic() >= deadline:
                text = path_text(path, endpoint)
                return path["kind"], text or f"direct {endpoint or '?'}"
            time.sleep(0.05)
            endpoint = self.endpoint()

    def no_pong_reason(self, peer: dict[str, Any]) -> str:
        """Why a ping may have gone unanswered, as ``: REASON`` (empty when nothing is
        known)."""
        try:
            control = self.state.read_control()
        except StateError:
            control = None
        if control is not None and control.get("state") == "unreachable":
            reason = "the coordination server is unreachable"
        elif not peer.get("online"):
            reason = "peer offline"
        else:
            path = self.saved_path()
            reason = no_path_text(path) if path is not None and path["kind"] == "none" else ""
        return f": {reason}" if reason else ""
