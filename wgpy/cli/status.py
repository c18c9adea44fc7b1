"""``wgpy status``: a mesh node's view of its mesh, as ``tailscale status`` shows it.

The peers come from the list the node's daemon saves in its state directory whenever its map
changes (``peers.json``); what WireGuard knows of each (the endpoint in use, the latest
handshake, bytes moved) comes live from the interface's control socket while the daemon runs.
What the daemon last saw of the coordination server (``control.json``) is said in one line
when something is wrong: the server unreachable since when, the node deleted (its token
refused) or expired. A node whose key expires within 7 days (or has expired) is warned
about in one line (``self.expiry_warning`` in ``--json``, with ``self.expires_at``).

Where the node runs ICE (:mod:`wgpy.nat.paths`), each peer's path comes from the same list:
``direct ADDRESS:PORT`` or ``relay NAME``, the round-trip time of its last check, or why
there is none yet (checks running, or the last round found no path). A peer whose problem
is its own (offline, no path) says so in words on its line, and in ``--json`` as
``problem``.

The relays as the daemon last saw them (``control.json``'s ``relay``,
:meth:`wgpy.nat.relay.RelayManager.status`): ``--json`` has them under ``self.relay`` (the one
in use, its transport, and whether each answers); a relay that does not answer (all of its
URLs failed, or its health check did) is said in one sentence: what failed, in words
(``relay NAME does not answer over UDP or TCP (connection refused)``; ``--json`` has the raw
errors) (``self.relay_problem``).

What the node measured of its NAT (``nat.json``, ``self.nat`` in ``--json``) is one line: how
long its mappings last and the keepalive interval that follows, and, when the STUN
demultiplexer on the WireGuard port dropped datagrams (``drops``), how many and why.

The node's resolver (``dns.json``, ``self.dns`` in ``--json``) is one line: the base domain
it answers and where, and how the host's resolver sends names to it (systemd-resolved,
resolvconf, /etc/resolv.conf, or left alone).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from wgpy.keys import key_to_base64
from wgpy.mesh.client.netmap import MapError, parse_time
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
        dns = state.read_dns()
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
    expiry = expiry_warning(node.get("expires_at"), now)
    relay = relay_state(control)
    relay_trouble = relay_problem(relay)
    advertised, approved = (
        _strings(node.get("advertised_routes")),
        _strings(node.get("approved_routes")),
    )
    awaiting = [r for r in advertised if r not in approved]
    if args.json:
        report = {
            "self": {
                "hostname": node.get("hostname"),
                "user": node.get("user"),
                "name": node.get("name") or None,  # HOST.USER.BASE; None from older servers
                "ipv4": node.get("ipv4"),
                "ipv6": node.get("ipv6"),
                "interface": settings.interface,
                "server": settings.server_url,
                "running": pid is not None,
                "control": control,
                "problem": problem,
                # when the node's key expires (ISO 8601; None: never), and the warning the
                # text view prints in its last KEY_EXPIRY_WARNING seconds
                "expires_at": node.get("expires_at"),
                "expiry_warning": expiry,
                # the NAT's measured mapping lifetime and the keepalive (a running node's)
                "nat": nat if pid is not None else None,
                # the node's resolver: where it answers, how the host points at it
                "dns": dns if pid is not None else None,
                "relay": relay,
                # the sentences of the text view, in one
                "relay_problem": "; ".join(relay_trouble) if relay_trouble else None,
                # subnet routes this node advertises, those approved, those still waiting
                "advertised_routes": advertised,
                "approved_routes": approved,
                "routes_awaiting_approval": awaiting,
                "accept_routes": settings.accept_routes,
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
        "name": str(node.get("name") or "-"),
    }
    ordered = sorted(rows, key=lambda r: _address_key(r["ipv4"]))
    named = any(r["name"] not in (None, "-") for r in [me, *ordered])  # a server with names
    widths = {
        column: min(limit, max(len(r[column] or "-") for r in [me, *ordered]))
        for column, limit in COLUMN_LIMITS.items()
        if column != "name" or named
    }
    lines = [(me, f"this node: {settings.interface}, {running}, server {settings.server_url}")]
    lines += [(row, _describe(row, now, settings.accept_routes)) for row in ordered]
    for row, text in lines:
        cells = [_fit(row[column] or "-", width) for column, width in widths.items()]
        env.stdout.write("  ".join(cells) + "  " + text + "\n")
    if problem is not None:
        env.stdout.write(f"# {problem}\n")
    if expiry is not None and control_state(control) != "expired":
        env.stdout.write(f"# {expiry}\n")
    for line in relay_trouble or []:
        env.stdout.write(f"# {line}\n")
    for line in nat_lines(nat if pid is not None else None):
        env.stdout.write(f"# {line}\n")
    dns_text = dns_line(dns if pid is not None else None)
    if dns_text is not None:
        env.stdout.write(f"# {dns_text}\n")
    for line in route_lines(advertised, awaiting):
        env.stdout.write(f"# {line}\n")
    if not rows:
        if pid is not None and problem is None:
            env.stdout.write("(no peers: the policy lets this node reach no one yet)\n")
        else:
            env.stdout.write("(no peers)\n")
    return ExitStatus.SUCCESS


# columns of the table and their widest (a longer name is cut, with "…" as its last mark;
# --json has it whole); name: the DNS name, HOST.USER.BASE ("-" for a node without one; no
# column at all from a server without names)
COLUMN_LIMITS = {"ipv4": 15, "hostname": 24, "user": 16, "name": 48}
KEY_EXPIRY_WARNING = 7 * 86400  # seconds before the node's key expires that status warns


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
            "removed until an admin renews it or it logs in again (`wgpy down`, then `wgpy up "
            "--login-server URL` without an auth key) or registers again with --auth-key"
        )
    if state == "connecting":
        return f"still logging in at the coordination server {server} since {when}"
    return None


def control_state(control: dict[str, Any] | None) -> str | None:
    state = control.get("state") if control is not None else None
    return state if isinstance(state, str) else None


def expiry_warning(expires_at: Any, now: float) -> str | None:
    """A sentence when the node's key expires within KEY_EXPIRY_WARNING seconds or has
    expired (None: it never expires, or not soon)."""
    try:
        at = parse_time(expires_at)
    except MapError:
        return None
    if at is None or at - now > KEY_EXPIRY_WARNING:
        return None
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
    if at <= now:
        return (
            f"this node's key expired on {when}: log in again with `wgpy down`, then "
            "`wgpy up --login-server URL` (no auth key); it keeps its name and addresses"
        )
    left = at - now
    within = f"{int(left // 86400)} days" if left >= 2 * 86400 else f"{max(1, int(left // 3600))} h"
    return (
        f"this node's key expires on {when} (in {within}): then its peers are removed until "
        "it logs in again (`wgpy down`, then `wgpy up --login-server URL`, no auth key)"
    )


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
            urls = [
                {k: u.get(k) if isinstance(u.get(k), str) else None for k in URL_KEYS}
                for u in item.get("urls") or []
                if isinstance(u, dict)
            ]
            relays.append(
                {
                    "name": item["name"],
                    "reachable": reachable if isinstance(reachable, bool) else None,
                    "error": error if isinstance(error, str) else None,
                    # each URL tried and its raw error (wgpy.nat.relay's status)
                    "urls": [u for u in urls if u["transport"] and u["error"]],
                }
            )
    text = {
        k: raw.get(k) if isinstance(raw.get(k), str) else None
        for k in ("in_use", "transport", "relayed")
    }
    return {**text, "relays": relays}


URL_KEYS = ("url", "transport", "error")


def relay_problem(relay: dict[str, Any] | None) -> list[str] | None:
    """One sentence per relay that does not answer, what failed in words (``--json`` has the
    raw errors under ``self.relay``); first, when none answers, what that means. None: all
    that were tried answer."""
    if relay is None or not relay["relays"]:
        return None
    down = [r for r in relay["relays"] if r["reachable"] is False]
    if not down:
        return None
    lines = [relay_failure(r) for r in down]
    if len(down) == len(relay["relays"]) and relay["in_use"] is None:
        return [
            "no relay answers, so peers without a direct path cannot be reached "
            "(the node keeps trying)",
            *lines,
        ]
    if relay["in_use"]:
        lines[-1] += f"; using {relay['in_use']}"
    return lines


def relay_failure(relay: dict[str, Any]) -> str:
    """``relay NAME does not answer over UDP, TCP or TLS (connection refused)``."""
    name = relay["name"]
    tried = [(u["transport"], u["error"]) for u in relay["urls"]]
    error = (relay["error"] or "").rstrip(".")
    if not tried and error.startswith(("turn:", "turns:")) and ": " in error:
        url, _, why = error.partition(": ")  # an older daemon: the first URL's error only
        tried = [(_url_transport(url), why)]
    if not tried:
        return f"relay {name} does not answer ({error_words(error) if error else 'no answer'})"
    over = _or([TRANSPORT_WORDS.get(kind, kind.upper()) for kind, _ in dict(tried).items()])
    reasons = {kind: error_words(why) for kind, why in tried}
    if len(set(reasons.values())) == 1:
        why = next(iter(reasons.values()))
    else:
        why = "; ".join(f"{TRANSPORT_WORDS.get(k, k.upper())}: {w}" for k, w in reasons.items())
    return f"relay {name} does not answer over {over} ({why})"


TRANSPORT_WORDS = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}

# what a relay's error says, in words (the first whose marks appear in it, lowercase)
ERROR_WORDS = (
    (("certificate",), "its TLS certificate is not trusted"),
    (("(401",), "it refused this node's credentials"),
    (("connection refused", "connect call failed", "errno 111"), "connection refused"),
    (("no answer in time", "timed out", "timeout"), "no answer in time"),
    (("network is unreachable", "errno 101"), "network unreachable"),
    (("no route to host", "host is unreachable", "errno 113"), "no route to host"),
    (("name or service not known", "name resolution", "nodename nor servname"),
     "its name does not resolve"),
    (("connection reset", "errno 104"), "connection reset"),
)  # fmt: skip


def error_words(error: str) -> str:
    """A relay's error (``[Errno 111] Connect call failed ('203.0.113.3', 3478)``) in words
    (``connection refused``); one not known here as it came, without its errno."""
    low = error.lower()
    for marks, words in ERROR_WORDS:
        if any(mark in low for mark in marks):
            return words
    if error.startswith("[Errno") and "] " in error:
        error = error.split("] ", 1)[1]
    return error.rstrip(".") or "no answer"


def _url_transport(url: str) -> str:
    if url.startswith("turns:"):
        return "tls"
    return "tcp" if "transport=tcp" in url else "udp"


def _or(words: list[str]) -> str:
    """``UDP``, ``UDP or TCP``, ``UDP, TCP or TLS``."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


HOST_DNS = {
    "resolved": "systemd-resolved sends them here (split DNS)",
    "resolvconf": "resolvconf sends every name here",
    "direct": "/etc/resolv.conf sends every name here",
}


def dns_line(dns: dict[str, Any] | None) -> str | None:
    """The node's resolver in one sentence (None: none running, or an old daemon)."""
    if not isinstance(dns, dict) or not isinstance(dns.get("listening"), list):
        return None
    where = [str(a) for a in dns["listening"]]
    if not where:
        return "DNS: the node's resolver listens nowhere (see the log)"
    text = f"DNS: names under {dns.get('base_domain')} answered at {where[0]}"
    split = dns.get("split_domains")
    if isinstance(split, dict) and split:
        text += f" (also {', '.join(sorted(str(d) for d in split))}, forwarded)"
    if isinstance(dns.get("exit_node_resolver"), str):
        text += f", other names by the exit node's resolver at {dns['exit_node_resolver']}"
    host = dns.get("host")
    if not dns.get("accept_dns"):
        return text + "; the host's DNS left alone (--accept-dns=false)"
    if host in HOST_DNS:
        return f"{text}; {HOST_DNS[str(host)]}"
    return text + "; the host's DNS not changed (see the log)"


def nat_lines(nat: dict[str, Any] | None) -> list[str]:
    """What the running node measured of its NAT (``nat.json``): the mapping lifetime and
    the keepalive interval, and the datagrams dropped on the WireGuard port's STUN
    demultiplexer (only when there are some)."""
    if nat is None:
        return []
    survived, below = nat.get("mapping_lifetime"), nat.get("mapping_lifetime_below")
    keepalive = nat.get("keepalive")
    every = f"; keepalive every {keepalive:g} s" if _is_number(keepalive) else ""
    if _is_number(survived):
        less = f" (less than {below:g} s)" if _is_number(below) else ""
        lines = [f"NAT: mappings last at least {survived:g} s{less}{every}"]
    else:
        source = nat.get("keepalive_source")
        if source == "measuring":
            why = "measuring how long mappings last"
        elif source == "configured":
            why = "mapping lifetime not measured (--nat-keepalive given)"
        else:
            error = str(nat.get("error") or "").rstrip(".")
            why = "mapping lifetime not measured" + (f" ({error})" if error else "")
        lines = [f"NAT: {why}{every}"]
    drops = nat.get("drops")
    if isinstance(drops, dict):
        counts = [
            (count, DROP_WORDS.get(reason, str(reason).replace("-", " ")))
            for reason, count in drops.items()
            if _is_number(count) and count > 0
        ]
        if counts:
            said = ", ".join(f"{count:g} {words}" for count, words in counts)
            lines.append(f"dropped on the WireGuard port: {said}")
    return lines


# wgpy.nat.stunmux's drop reasons (StunMux.drops) in words
DROP_WORDS = {
    "not-stun": "neither STUN nor relay data",
    "truncated": "truncated",
    "bad-length": "with a wrong length",
    "too-large": "too large STUN",
    "malformed": "malformed STUN",
    "unmatched-response": "unmatched STUN responses",
    "wrong-source": "STUN responses from the wrong address",
    "wrong-method": "STUN responses of the wrong method",
    "no-integrity": "unsigned STUN responses",
    "bad-integrity": "bad integrity",
    "no-request-handler": "unhandled STUN requests",
    "no-indication-handler": "unhandled STUN indications",
    "no-channel-handler": "unhandled relay data",
    "handler-error": "failed in their handler",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
        "name": peer.get("name") or None,
        "ipv4": ipv4,
        "addresses": addresses,
        "online": bool(peer.get("online")),
        "can_reach": bool(peer.get("can_reach")),
        "reachable_from": bool(peer.get("reachable_from")),
        "routes": _strings(peer.get("routes")),  # subnets it routes for this node
        # an exit node for this node, and whether all traffic goes through it now
        "exit_node": bool(peer.get("exit_node")),
        "exit_node_in_use": bool(peer.get("exit_node_in_use")),
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


def route_lines(advertised: list[str], awaiting: list[str]) -> list[str]:
    """What the node says of the routes it advertises."""
    if not advertised:
        return []
    served = [r for r in advertised if r not in awaiting]
    lines = [f"routes advertised and approved: {', '.join(served)}"] if served else []
    if awaiting:
        lines.append(
            f"routes awaiting approval: {', '.join(awaiting)} (an admin approves them with "
            "`wgpy admin routes approve NODE PREFIX...`)"
        )
    return lines


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _describe(row: dict[str, Any], now: float, accept_routes: bool = True) -> str:
    parts = ["online" if row["online"] else "offline"]
    if not row["can_reach"]:
        parts.append("replies only (the policy lets it reach us, not us it)")
    if row["routes"]:
        refused = "" if accept_routes else " (not used: --accept-routes=false)"
        parts.append(f"routes {', '.join(row['routes'])}{refused}")
    if row.get("exit_node_in_use"):
        parts.append("exit node: all traffic goes through it")
    elif row.get("exit_node"):
        parts.append("offers to be an exit node (wgpy up --exit-node)")
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
