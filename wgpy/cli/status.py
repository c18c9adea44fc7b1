"""``wgpy status``: a mesh node's view of its mesh, as ``tailscale status`` shows it.

The peers come from the list the node's daemon saves in its state directory whenever its map
changes (``peers.json``); what WireGuard knows of each (the endpoint in use, the latest
handshake, bytes moved) comes live from the interface's control socket while the daemon runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from wgpy.device.uapi_client import PeerState, UapiError, uapi_get
from wgpy.keys import key_to_base64
from wgpy.mesh.client.state import DEFAULT_STATE_DIR, StateDir, StateError

from .environment import CommandError, Environment, ExitStatus


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="show this mesh node and its peers",
        description="Show this mesh node (addresses, interface, whether its daemon runs) and "
        "each peer it may reach: its addresses, whether the server sees it online, and what "
        "WireGuard knows of it (endpoint, latest handshake, bytes moved).",
    )
    status.add_argument(
        "--state-dir", metavar="DIR", type=Path, help=f"default {DEFAULT_STATE_DIR}"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=status_command)


def status_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    state = StateDir(args.state_dir or DEFAULT_STATE_DIR)
    try:
        settings = state.read_settings()
        node = state.read_node()
        peers = state.read_peers()
        pid = state.daemon_pid()
    except StateError as e:
        raise CommandError(e.message) from None
    if settings is None or node is None:
        raise CommandError(
            f"there is no mesh node in {state.path}: join one with "
            "`wgpy up --login-server URL --auth-key KEY`"
        )
    live: dict[str, PeerState] = {}
    if pid is not None:
        try:
            device = uapi_get(settings.interface)
        except (UapiError, OSError):
            pid = None  # its interface is gone: as good as stopped
        else:
            live = {key_to_base64(p.public_key): p for p in device.peers}
    now = time.time()
    rows = [_peer_row(p, live.get(str(p.get("public_key")))) for p in peers]
    if args.json:
        report = {
            "self": {
                "hostname": node.get("hostname"),
                "user": node.get("user"),
                "ipv4": node.get("ipv4"),
                "ipv6": node.get("ipv6"),
                "interface": settings.interface,
                "server": settings.server_url,
                "running": pid is not None,
            },
            "peers": rows,
        }
        env.stdout.write(json.dumps(report, indent=2) + "\n")
        return ExitStatus.SUCCESS
    running = f"running (pid {pid})" if pid is not None else "stopped (wgpy up to start)"
    env.stdout.write(
        f"{node.get('ipv4', '-'):<16}{node.get('hostname', '-'):<16}{node.get('user', '-'):<12}"
        f"this node: {settings.interface}, {running}, server {settings.server_url}\n"
    )
    for row in sorted(rows, key=lambda r: _address_key(r["ipv4"])):
        env.stdout.write(
            f"{row['ipv4']:<16}{row['hostname']:<16}{row['user']:<12}{_describe(row, now)}\n"
        )
    if not rows:
        env.stdout.write("(no peers: the policy lets this node reach no one yet)\n")
    return ExitStatus.SUCCESS


def _peer_row(peer: dict[str, Any], state: PeerState | None) -> dict[str, Any]:
    addresses = [str(a) for a in peer.get("addresses", [])]
    ipv4 = next((a.split("/")[0] for a in addresses if ":" not in a), "-")
    row: dict[str, Any] = {
        "public_key": peer.get("public_key"),
        "hostname": str(peer.get("hostname") or "-"),
        "user": str(peer.get("user") or "-"),
        "ipv4": ipv4,
        "addresses": addresses,
        "online": bool(peer.get("online")),
        "can_reach": bool(peer.get("can_reach")),
        "reachable_from": bool(peer.get("reachable_from")),
        "endpoint": None,
        "latest_handshake": None,
        "rx_bytes": 0,
        "tx_bytes": 0,
    }
    if state is not None:
        row["endpoint"] = state.endpoint
        if state.last_handshake_time_sec:
            row["latest_handshake"] = state.last_handshake_time_sec
        row["rx_bytes"], row["tx_bytes"] = state.rx_bytes, state.tx_bytes
    return row


def _describe(row: dict[str, Any], now: float) -> str:
    parts = ["online" if row["online"] else "offline"]
    if not row["can_reach"]:
        parts.append("replies only (the policy lets it reach us, not us it)")
    if row["latest_handshake"]:
        ago = max(0, int(now - row["latest_handshake"]))
        parts.append(f"direct {row['endpoint'] or '?'}, handshake {ago} s ago")
        parts.append(f"rx {_bytes(row['rx_bytes'])}, tx {_bytes(row['tx_bytes'])}")
    else:
        parts.append("no handshake yet")
    return "; ".join(parts)


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _address_key(address: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in address.split("."))
    except ValueError:
        return (1 << 16,)
