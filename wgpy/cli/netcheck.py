"""``wgpy netcheck``: what this host's network lets through, as ``tailscale netcheck`` says it.

UDP out and back or not, the public IPv4 and IPv6 addresses, whether the NAT maps each
destination to a new port, and each relay's latency over UDP, TCP and TLS
(:mod:`wgpy.nat.netcheck`). The STUN servers and relays come from the coordination server
(``GET /api/v1/node/nat``) with the node token in the state directory, as ``wgpy status``
finds the node; ``--stun HOST:PORT`` names STUN servers directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any, TypeAlias

from wgpy.endpoint import Endpoint
from wgpy.mesh.client.api import ApiError, MeshClientError, NodeClient, check_server_url
from wgpy.mesh.client.state import DEFAULT_STATE_DIR, StateDir, StateError
from wgpy.nat.netcheck import TIMEOUT, NetReport, RelayReport, netcheck
from wgpy.nat.servers import NatConfig

from .environment import CommandError, Environment, ExitStatus

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
MAX_STUN_ADDRESSES = 8  # from --stun names, all together
API_TIMEOUT = 5.0  # seconds for the coordination server to answer


def register(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "netcheck",
        help="check what this network lets through: UDP, public addresses, NAT, relays",
        description="Ask STUN servers where this host is (over IPv4 and IPv6), whether its NAT "
        "maps each destination to a new port (which needs two STUN servers), and how far "
        "each relay is over UDP, TCP and TLS. The servers come from the coordination server "
        "of the mesh node in --state-dir, or from --stun.",
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", type=Path, help=f"the node's (default {DEFAULT_STATE_DIR})"
    )
    parser.add_argument(
        "--login-server", metavar="URL", help="the coordination server (default: the node's)"
    )
    parser.add_argument(
        "--stun",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="a STUN server to ask instead of the coordination server's (repeatable)",
    )
    parser.add_argument(
        "--ca-cert",
        metavar="FILE",
        help="trust this CA for relays over TLS (default: the system's)",
    )
    parser.add_argument(
        "--timeout", type=float, default=TIMEOUT, metavar="SECONDS", help=f"per check ({TIMEOUT:g})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=netcheck_command)


def netcheck_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if not 0.1 <= args.timeout <= 60:
        raise CommandError("--timeout must be from 0.1 to 60 seconds")
    if args.ca_cert is not None and not os.path.isfile(args.ca_cert):
        raise CommandError(f"the CA certificate {args.ca_cert} does not exist")
    config = _config(args)
    if not config.stun and not config.turn:
        raise CommandError(
            "the coordination server names no STUN server and no relay "
            "(is its --stun-listen off?); give --stun HOST:PORT"
        )
    try:
        report = asyncio.run(
            netcheck(config.stun, config.turn, timeout=args.timeout, ca_cert=args.ca_cert)
        )
    except OSError as e:
        raise CommandError(f"cannot open a UDP socket: {e.strerror or e}") from None
    nat = _node_nat(args)
    if args.json:
        env.stdout.write(json.dumps({**_as_json(report), "node_nat": nat}, indent=2) + "\n")
    else:
        env.stdout.write(_as_text(report, config) + f"  {_lifetime_text(nat)}\n")
    return ExitStatus.SUCCESS


# ---------------------------------------------------------------------- where the servers are


def _config(args: argparse.Namespace) -> NatConfig:
    if args.stun:
        return NatConfig(stun=tuple(_resolve_stun(args.stun)))
    state = StateDir(args.state_dir or DEFAULT_STATE_DIR)
    try:
        settings = state.read_settings()
        token = state.read_token()
    except StateError as e:
        raise CommandError(e.message) from None
    url = args.login_server or (settings.server_url if settings else None)
    if url is None or token is None:
        raise CommandError(
            f"there is no mesh node in {state.path} to ask its coordination server for the "
            "STUN servers: give --stun HOST:PORT, or --state-dir of a node"
        )
    try:
        url = check_server_url(url)
    except ValueError as e:
        raise CommandError(f"--login-server: {e}") from None
    if settings is not None and settings.server_url != url:
        raise CommandError(
            f"the node token in {state.path} is for {settings.server_url}, not {url}; "
            "give --stun HOST:PORT instead"
        )
    ca_cert = settings.ca_cert if settings else None

    async def ask() -> NatConfig:
        async with NodeClient(url, token=token, ca_cert=ca_cert, timeout=API_TIMEOUT) as client:
            return await client.nat_config()

    try:
        return asyncio.run(ask())
    except ApiError as e:
        if e.status in (404, 405):
            raise CommandError(
                f"the coordination server at {url} has no STUN servers to tell (it is older "
                "than this wgpy); give --stun HOST:PORT"
            ) from None
        if e.status == 200:  # an answer, but not one to use
            raise CommandError(e.message) from None
        raise CommandError(f"the coordination server refused: {e.message}") from None
    except MeshClientError as e:
        raise CommandError(e.message) from None


def _node_nat(args: argparse.Namespace) -> dict[str, Any] | None:
    """What the running node of the state directory measured of its NAT's mapping lifetime
    (it takes up to ~36 s, so netcheck does not measure it itself); None without one."""
    state = StateDir(args.state_dir or DEFAULT_STATE_DIR)
    try:
        return state.read_nat() if state.daemon_pid() is not None else None
    except StateError:
        return None


def _lifetime_text(nat: dict[str, Any] | None) -> str:
    """``Mapping lifetime: at least 12 s, keepalive every 9.6 s``, as the node measured it."""
    if nat is None:
        return "Mapping lifetime: unknown (a running node measures it: wgpy up)"
    survived, below = nat.get("mapping_lifetime"), nat.get("mapping_lifetime_below")
    keepalive = nat.get("keepalive")
    every = f"keepalive every {keepalive:g} s" if isinstance(keepalive, int | float) else ""
    if not isinstance(survived, int | float):
        why = {"configured": "--nat-keepalive given", "measuring": "measuring"}.get(
            str(nat.get("keepalive_source")), str(nat.get("error") or "not measured")
        )
        return f"Mapping lifetime: not measured ({why}), {every}"
    less = f" (less than {below:g} s)" if isinstance(below, int | float) else ""
    return f"Mapping lifetime: at least {survived:g} s{less}, {every}"


def _resolve_stun(texts: list[str]) -> list[Endpoint]:
    """``--stun`` values as addresses: each name resolved, to all its addresses."""
    found: list[Endpoint] = []
    for text in texts:
        try:
            endpoint = Endpoint.parse(text)
        except ValueError as e:
            raise CommandError(f"--stun: {e}") from None
        if endpoint.port == 0:
            raise CommandError(f"--stun: {text} has port 0")
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise CommandError(f"--stun: cannot resolve {endpoint.host} ({e.strerror})") from None
        for info in infos:
            address = Endpoint(str(info[4][0]), endpoint.port)
            if address not in found:
                found.append(address)
    return found[:MAX_STUN_ADDRESSES]


# ---------------------------------------------------------------------- the report


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _as_text(report: NetReport, config: NatConfig) -> str:
    found = report.discovery
    lines = ["Report:"]
    if not found.probes:
        lines.append("  UDP: not checked (no STUN server)")
    else:
        lines.append(f"  UDP: {'yes' if found.udp else 'no (no STUN server answered)'}")
    for version in (4, 6):
        lines.append(f"  IPv{version}: {_public(report, version)}")
    varies = found.mapping_varies(4)
    if varies is None:
        varies_text = "unknown (it takes answers from two STUN server addresses)"
    else:
        varies_text = "yes (a hard NAT: direct paths need the other side open)" if varies else "no"
    lines.append(f"  Mapping varies by destination: {varies_text}")
    nearest = report.nearest
    if not config.turn:
        lines.append("  Nearest relay: none configured")
    elif nearest is None:
        lines.append("  Nearest relay: none answered")
    else:
        lines.append(f"  Nearest relay: {nearest.name} ({_ms(nearest.latency)})")
    if report.relays:
        lines.append("  Relays:")
        lines += [f"    {relay.name}: {_relay_text(relay)}" for relay in report.relays]
    return "\n".join(lines) + "\n"


def _public(report: NetReport, version: int) -> str:
    found = report.discovery
    public = found.public(version)
    if public is not None:
        return f"yes, {public}"
    if version == 6 and not report.ipv6_host:
        return "no (this host has no IPv6)"
    asked = [p for p in found.probes if (":" in p.server.host) == (version == 6)]
    if not asked:
        return f"unknown (no STUN server over IPv{version})"
    return f"no (no STUN server answered over IPv{version})"


def _relay_text(relay: RelayReport) -> str:
    parts = []
    for check in relay.checks:
        what = _ms(check.latency) if check.latency is not None else check.error
        parts.append(f"{check.url.kind} {what}")
    return ", ".join(parts)


def _as_json(report: NetReport) -> dict[str, Any]:
    found = report.discovery
    return {
        "udp": found.udp,
        "ipv4": None if found.public(4) is None else str(found.public(4)),
        "ipv6": None if found.public(6) is None else str(found.public(6)),
        "mapping_varies_by_dest_ip": found.mapping_varies(4),
        "stun": [
            {
                "server": str(p.server),
                "mapped": None if p.mapped is None else str(p.mapped),
                "latency_ms": None if p.rtt is None else round(p.rtt * 1000, 2),
                "error": p.error,
            }
            for p in found.probes
        ],
        "nearest_relay": None if report.nearest is None else report.nearest.name,
        "relays": [
            {
                "name": relay.name,
                "latency_ms": None if relay.latency is None else round(relay.latency * 1000, 2),
                "transports": [
                    {
                        "url": c.url.text,
                        "transport": c.url.kind,
                        "latency_ms": None if c.latency is None else round(c.latency * 1000, 2),
                        "error": c.error,
                    }
                    for c in relay.checks
                ],
            }
            for relay in report.relays
        ],
    }
