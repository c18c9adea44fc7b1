"""``wgpy status``: a mesh node's view of its mesh, as ``tailscale status`` shows it.

The peers come from the list the node's daemon saves in its state directory whenever its map
changes (``peers.json``); what WireGuard knows of each (the endpoint in use, the latest
handshake, bytes moved) comes live from the interface's control socket while the daemon runs.
What the daemon last saw of the coordination server (``control.json``) is said in one line
when something is wrong: the server unreachable since when, the node deleted (its token
refused) or expired.

Where the node runs ICE (:mod:`wgpy.nat.paths`), each peer's path comes from the same list:
``direct ADDRESS:PORT`` or ``relay NAME``, the round-trip time of its last check, or why
there is none yet (checks running, or the last round found no path). A peer whose problem
is its own (offline, no path) says so in words on its line, and in ``--json`` as
``problem``.

The relays as the daemon last saw them (``control.json``'s ``relay``,
:meth:`wgpy.nat.relay.RelayManager.status`): ``--json`` has them under ``self.relay`` (the one
in use, its transport, and whether each answers); a relay that does not answer (all of its
URLs failed, or its health check did) is said in one line (``self.relay_problem``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from wgpy.keys import key_to_base64
from wgpy.mesh.client.state import DEFAULT_STATE_DIR, StateDir, StateError
from wgpy.uapi.client import PeerState, UapiError, uapi_get

from .environment import CommandError, Environment, ExitStatus


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="show this mesh node and its peers",
        description="Show this mesh node (addresses, interface, whether its daemon runs) and "
        "each peer it may reach: its addresses, whether the server sees it online, its path "
        "(direct ADDRESS:PORT or relay NAME) with its latency, or why it has none yet, and "
        "what WireGuard knows of it (latest handshake, bytes moved).",
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
        control = state.read_control()
        nat = state.read_nat()
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
    is_running = pid is not None  # a stopped node's saved paths are history, not its paths
    rows = [_peer_row(p, live.get(str(p.get("public_key"))), is_running) for p in peers]
    # the control plane as the running daemon last saw it (a stopped node has none)
    control = control if pid is not None else None
    problem = _problem(control, settings.server_url, now)
    relay = relay_state(control)
    relay_trouble = relay_problem(relay)
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
                "control": control,
                "problem": problem,
                # the NAT's measured mapping lifetime and the keepalive (a running node's)
                "nat": nat if pid is not None else None,
                "relay": relay,
                "relay_problem": relay_trouble,
            },
            "peers": rows,
        }
        env.stdout.write(json.dumps(report, indent=2) + "\n")
        return ExitStatus.SUCCESS
    running = f"running (pid {pid})" if pid is not None else "stopped (wgpy up to start)"
    me = {
        "ipv4": str(node.get("ipv4") or "-"),
        "hostname": str(node.get("hostname") or "-"),
        "user": str(node.get("user") or "-"),
    }
    ordered = sorted(rows, key=lambda r: _address_key(r["ipv4"]))
    widths = {
        column: min(limit, max(len(r[column]) for r in [me, *ordered]))
        for column, limit in COLUMN_LIMITS.items()
    }
    lines = [(me, f"this node: {settings.interface}, {running}, server {settings.server_url}")]
    lines += [(row, _describe(row, now)) for row in ordered]
    for row, text in lines:
        cells = [_fit(row[column], width) for column, width in widths.items()]
        env.stdout.write("  ".join(cells) + "  " + text + "\n")
    if problem is not None:
        env.stdout.write(f"# {problem}\n")
    if relay_trouble is not None:
        env.stdout.write(f"# {relay_trouble}\n")
    if not rows:
        if pid is not None and problem is None:
            env.stdout.write("(no peers: the policy lets this node reach no one yet)\n")
        else:
            env.stdout.write("(no peers)\n")
    return ExitStatus.SUCCESS


# columns of the table and their widest (a longer name is cut, with "…" as its last mark;
# --json has it whole)
COLUMN_LIMITS = {"ipv4": 15, "hostname": 24, "user": 16}


def _fit(text: str, width: int) -> str:
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.ljust(width)


def _problem(control: dict[str, Any] | None, server: str, now: float) -> str | None:
    """One sentence on what keeps the running node from its mesh (None: nothing)."""
    if control is None:
        return None
    state = control.get("state")
    since = control.get("since")
    when = _since(since, now) if isinstance(since, int | float) else "a while"
    error = str(control.get("error") or "").rstrip(".")
    because = f" ({error})" if error else ""
    if state == "unreachable":
        return (
            f"the coordination server {server} has been unreachable since {when}{because}; "
            "the peers are kept as they were and the node keeps trying"
        )
    if state == "refused":
        return (
            f"the coordination server no longer accepts this node since {when}{because}: it was "
            "deleted there (by an admin, or with the server's database); register again with "
            "`wgpy up --login-server URL --auth-key KEY` after `wgpy down`"
        )
    if state == "expired":
        return (
            f"this node has expired at the coordination server since {when}: its peers are "
            "removed until an admin renews it or it registers again with --auth-key"
        )
    if state == "connecting":
        return f"still logging in at the coordination server {server} since {when}"
    return None


def relay_state(control: dict[str, Any] | None) -> dict[str, Any] | None:
    """The relays as the daemon saved them (None: it has none, or an old daemon)."""
    raw = control.get("relay") if control is not None else None
    if not isinstance(raw, dict):
        return None
    relays = []
    for item in raw.get("relays") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            reachable = item.get("reachable")
            error = item.get("error")
            relays.append(
                {
                    "name": item["name"],
                    "reachable": reachable if isinstance(reachable, bool) else None,
                    "error": error if isinstance(error, str) else None,
                }
            )
    text = {
        k: raw.get(k) if isinstance(raw.get(k), str) else None
        for k in ("in_use", "transport", "relayed")
    }
    return {**text, "relays": relays}


def relay_problem(relay: dict[str, Any] | None) -> str | None:
    """One sentence on relays that do not answer (None: all that were tried do)."""
    if relay is None or not relay["relays"]:
        return None
    down = [r for r in relay["relays"] if r["reachable"] is False]
    if not down:
        return None
    why = "; ".join(f"{r['name']}: {(r['error'] or 'no answer').rstrip('.')}" for r in down)
    if len(down) == len(relay["relays"]) and relay["in_use"] is None:
        return (
            f"no relay answers ({why}): peers without a direct path cannot be reached; "
            "the node keeps trying"
        )
    names = ", ".join(r["name"] for r in down)
    using = f"; using {relay['in_use']}" if relay["in_use"] else ""
    return f"relay {names} unreachable ({why}){using}"


def _since(timestamp: float, now: float) -> str:
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    ago = max(0, int(now - timestamp))
    if ago < 120:
        return f"{at}, {ago} s ago"
    if ago < 7200:
        return f"{at}, {ago // 60} min ago"
    return f"{at}, {ago // 3600} h ago"


def _peer_row(peer: dict[str, Any], state: PeerState | None, running: bool) -> dict[str, Any]:
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
        "path": parse_path(peer.get("path")) if running else None,
        "problem": None,
    }
    if state is not None:
        row["endpoint"] = state.endpoint
        if state.last_handshake_time_sec:
            row["latest_handshake"] = state.last_handshake_time_sec
        row["rx_bytes"], row["tx_bytes"] = state.rx_bytes, state.tx_bytes
    row["problem"] = peer_problem(row)
    return row


def parse_path(value: Any) -> dict[str, Any] | None:
    """The path the daemon saved for a peer (None: no ICE for it, or an old daemon)."""
    if not isinstance(value, dict) or value.get("kind") not in ("direct", "relay", "none"):
        return None
    rtt = value.get("rtt_ms")
    return {
        "kind": value["kind"],
        "endpoint": value.get("endpoint") if isinstance(value.get("endpoint"), str) else None,
        "relay": value.get("relay") if isinstance(value.get("relay"), str) else None,
        "rtt_ms": rtt if isinstance(rtt, int | float) and not isinstance(rtt, bool) else None,
        "checks": value.get("checks") if isinstance(value.get("checks"), str) else None,
    }


def path_text(path: dict[str, Any] | None, endpoint: str | None) -> str | None:
    """``direct ADDRESS:PORT`` or ``relay NAME`` for a peer's path (None: it has none).
    A peer without ICE (``path`` None) is sent to where WireGuard sends: its endpoint."""
    if path is None:
        return f"direct {endpoint}" if endpoint else None
    if path["kind"] == "direct":
        return f"direct {path['endpoint'] or endpoint or '?'}"
    if path["kind"] == "relay":
        return f"relay {path['relay'] or path['endpoint'] or endpoint or '?'}"
    return None


def no_path_text(path: dict[str, Any] | None) -> str:
    """Why a peer has no path, in words."""
    checks = path.get("checks") if path is not None else None
    if checks == "failed":
        return "no path: ICE checks found none (retrying about every 30 s)"
    if checks == "running" or path is not None:
        return "no path yet: ICE checks running"
    return "no path yet: no handshake"


def peer_problem(row: dict[str, Any]) -> str | None:
    """What keeps this node from a peer, in words (None: nothing)."""
    if not row["online"]:
        return "peer offline: the coordination server has not heard from it"
    path = row["path"]
    if path is not None and path["kind"] == "none":
        return no_path_text(path)
    return None


def _describe(row: dict[str, Any], now: float) -> str:
    parts = ["online" if row["online"] else "offline"]
    if not row["can_reach"]:
        parts.append("replies only (the policy lets it reach us, not us it)")
    path = row["path"]
    where = path_text(path, row["endpoint"]) if row["latest_handshake"] or path else None
    if where is not None:
        rtt = path["rtt_ms"] if path is not None else None
        parts.append(where + (f", {_ms(rtt)}" if rtt is not None else ""))
    elif path is not None:
        parts.append(no_path_text(path))
    if row["latest_handshake"]:
        ago = max(0, int(now - row["latest_handshake"]))
        parts.append(f"handshake {ago} s ago")
        parts.append(f"rx {_bytes(row['rx_bytes'])}, tx {_bytes(row['tx_bytes'])}")
    else:
        parts.append("no handshake yet")
    return "; ".join(parts)


def _ms(ms: float) -> str:
    return f"{ms:.1f} ms" if ms >= 0.1 else f"{ms:.2f} ms"


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
