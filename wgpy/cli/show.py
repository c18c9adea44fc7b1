"""``wgpy show`` and ``wgpy showconf``: byte for byte what ``wg show`` and ``wg showconf`` print
for a userspace interface (one served on /var/run/wireguard/NAME.sock).

As ``wg``: colours only when stdout is a terminal (``WG_COLOR_MODE=always|never`` overrides),
private and preshared keys ``(hidden)`` unless ``WG_HIDE_KEYS=never``, peers ordered by latest
handshake (most recent first, never-handshaken last), and ``show all`` reports an interface it
cannot read on stderr and goes on with the others.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping

from wgpy import keys
from wgpy.config import format_network
from wgpy.uapi.client import DeviceState, PeerState, UapiError, list_interfaces, uapi_get

from .environment import PROG, CommandError, Environment, ExitStatus

FIELDS = (
    "public-key",
    "private-key",
    "listen-port",
    "fwmark",
    "peers",
    "preshared-keys",
    "endpoints",
    "allowed-ips",
    "latest-handshakes",
    "transfer",
    "persistent-keepalive",
    "dump",
)

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
CYAN = "\x1b[36m"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``show`` and ``showconf`` to the ``wgpy`` parser."""
    show = commands.add_parser(
        "show",
        help="show WireGuard interfaces as `wg show` does",
        description="Show the configuration and state of userspace WireGuard interfaces, "
        "exactly as `wg show` prints them. With a FIELD, print only that, in wg's "
        "tab-separated form.",
    )
    show.add_argument(
        "interface",
        nargs="?",
        default="all",
        metavar="{IFNAME|all|interfaces}",
        help="an interface, every interface (the default), or the list of interface names",
    )
    show.add_argument("field", nargs="?", choices=FIELDS, metavar="FIELD", help=", ".join(FIELDS))
    show.set_defaults(handler=show_command)
    showconf = commands.add_parser(
        "showconf",
        help="print an interface's configuration as `wg showconf` does",
        description="Print the current configuration of a userspace WireGuard interface in "
        "the format `wg setconf` reads, exactly as `wg showconf` prints it.",
    )
    showconf.add_argument("interface", metavar="IFNAME")
    showconf.set_defaults(handler=showconf_command)


# ----------------------------------------------------------------------------------------
# Commands


def show_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    name: str = args.interface
    field: str | None = args.field
    if name == "interfaces":
        if field is not None:
            raise CommandError("`show interfaces' takes no FIELD", ExitStatus.USAGE)
        names = list_interfaces()
        if names:
            env.stdout.write(" ".join(names) + "\n")
        return ExitStatus.SUCCESS
    now = int(time.time())
    if name != "all":
        state = _get(name)
        if field is None:
            env.stdout.write(pretty(state, now, color=_color(env), show_keys=_show_keys(env)))
        else:
            env.stdout.write(ugly(state, field, with_interface=False))
        return ExitStatus.SUCCESS
    names = list_interfaces()
    status = ExitStatus.ERROR if names else ExitStatus.SUCCESS
    for index, name in enumerate(names):
        try:
            state = uapi_get(name)
        except UapiError as e:
            env.stdout.flush()
            env.stderr.write(f"{PROG} show: cannot access interface {name}: {e.message}\n")
            env.stderr.flush()
            continue
        if field is None:
            env.stdout.write(pretty(state, now, color=_color(env), show_keys=_show_keys(env)))
            if index + 1 < len(names):
                env.stdout.write("\n")
        else:
            env.stdout.write(ugly(state, field, with_interface=True))
        status = ExitStatus.SUCCESS
    return status


def showconf_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    env.stdout.write(showconf(_get(args.interface)))
    return ExitStatus.SUCCESS


def _get(name: str) -> DeviceState:
    try:
        return uapi_get(name)
    except UapiError as e:
        raise CommandError(f"cannot access interface {name}: {e.message}") from None


def _color(env: Environment) -> bool:
    mode = env.env.get("WG_COLOR_MODE")
    if mode == "always":
        return True
    if mode == "never":
        return False
    try:
        return env.stdout.isatty()
    except (OSError, ValueError):
        return False


def _show_keys(env: Environment) -> bool:
    return env.env.get("WG_HIDE_KEYS") == "never"


# ----------------------------------------------------------------------------------------
# Formatting, as wireguard-tools' show.c and showconf.c


def _b64(key: bytes) -> str:
    return keys.key_to_base64(key)


def _maybe(key: bytes | None) -> str:
    return "(none)" if key is None else _b64(key)


def pretty_time(seconds: int, color: Callable[[str], str]) -> str:
    """``1 year, 2 days, 3 hours, 4 minutes, 5 seconds``, leaving out zero parts."""
    parts = []
    years, seconds = divmod(seconds, 365 * 24 * 60 * 60)
    days, seconds = divmod(seconds, 24 * 60 * 60)
    hours, seconds = divmod(seconds, 60 * 60)
    minutes, seconds = divmod(seconds, 60)
    for amount, unit in (
        (years, "year"),
        (days, "day"),
        (hours, "hour"),
        (minutes, "minute"),
        (seconds, "second"),
    ):
        if amount:
            parts.append(f"{amount} " + color(CYAN + unit + ("" if amount == 1 else "s") + RESET))
    return ", ".join(parts)


def ago(timestamp: int, now: int, color: Callable[[str], str]) -> str:
    if now == timestamp:
        return "Now"
    if now < timestamp:
        return color(
            "(" + RED + "System clock wound backward; connection problems may ensue." + RESET + ")"
        )
    return pretty_time(now - timestamp, color) + " ago"


def human_bytes(count: int, color: Callable[[str], str]) -> str:
    if count < 1024:
        return f"{count} " + color(CYAN + "B" + RESET)
    for power, unit in ((2, "KiB"), (3, "MiB"), (4, "GiB")):
        if count < 1024**power:
            return f"{count / 1024 ** (power - 1):.2f} " + color(CYAN + unit + RESET)
    return f"{count / (1024 * 1024 * 1024) / 1024:.2f} " + color(CYAN + "TiB" + RESET)


def sort_peers(peers: list[PeerState]) -> list[PeerState]:
    """Most recent handshake first, peers that never completed one last, otherwise as given."""

    def key(peer: PeerState) -> tuple[int, int, int]:
        never = not peer.last_handshake_time_sec and not peer.last_handshake_time_nsec
        return (never, -peer.last_handshake_time_sec, -peer.last_handshake_time_nsec)

    return sorted(peers, key=key)


def pretty(state: DeviceState, now: int, color: bool = False, show_keys: bool = False) -> str:
    """What ``wg show IFNAME`` prints."""

    def c(text: str) -> str:
        return text if color else _strip_colors(text)

    out = [c(RESET)]
    out.append(c(f"{GREEN}{BOLD}interface{RESET}: {GREEN}{state.name}{RESET}\n"))
    if state.public_key is not None:
        out.append(c(f"  {BOLD}public key{RESET}: {_b64(state.public_key)}\n"))
    if state.private_key is not None:
        hidden = _b64(state.private_key) if show_keys else "(hidden)"
        out.append(c(f"  {BOLD}private key{RESET}: {hidden}\n"))
    if state.listen_port:
        out.append(c(f"  {BOLD}listening port{RESET}: {state.listen_port}\n"))
    if state.fwmark:
        out.append(c(f"  {BOLD}fwmark{RESET}: 0x{state.fwmark:x}\n"))
    peers = sort_peers(state.peers)
    if peers:
        out.append("\n")
    for index, peer in enumerate(peers):
        out.append(c(f"{YELLOW}{BOLD}peer{RESET}: {YELLOW}{_b64(peer.public_key)}{RESET}\n"))
        if peer.preshared_key is not None:
            hidden = _b64(peer.preshared_key) if show_keys else "(hidden)"
            out.append(c(f"  {BOLD}preshared key{RESET}: {hidden}\n"))
        if peer.endpoint is not None:
            out.append(c(f"  {BOLD}endpoint{RESET}: {peer.endpoint}\n"))
        out.append(c(f"  {BOLD}allowed ips{RESET}: "))
        if peer.allowed_ips:
            texts = [
                format_network(n).replace("/", c(CYAN + "/" + RESET)) for n in peer.allowed_ips
            ]
            out.append(", ".join(texts) + "\n")
        else:
            out.append("(none)\n")
        if peer.last_handshake_time_sec:
            handshake = ago(peer.last_handshake_time_sec, now, c)
            out.append(c(f"  {BOLD}latest handshake{RESET}: ") + handshake + "\n")
        if peer.rx_bytes or peer.tx_bytes:
            out.append(c(f"  {BOLD}transfer{RESET}: "))
            out.append(f"{human_bytes(peer.rx_bytes, c)} received, ")
            out.append(f"{human_bytes(peer.tx_bytes, c)} sent\n")
        if peer.persistent_keepalive_interval:
            every = pretty_time(peer.persistent_keepalive_interval, c)
            out.append(c(f"  {BOLD}persistent keepalive{RESET}: ") + f"every {every}\n")
        if index + 1 < len(peers):
            out.append("\n")
    return "".join(out)


def _strip_colors(text: str) -> str:
    for code in (RESET, BOLD, RED, GREEN, YELLOW, CYAN):
        text = text.replace(code, "")
    return text


def _fwmark(fwmark: int) -> str:
    return f"0x{fwmark:x}" if fwmark else "off"


def _allowed(peer: PeerState, separator: str) -> str:
    return separator.join(map(format_network, peer.allowed_ips)) or "(none)"


def dump(state: DeviceState, with_interface: bool) -> str:
    """What ``wg show IFNAME dump`` prints: one tab-separated line per device and peer."""
    prefix = f"{state.name}\t" if with_interface else ""
    lines = [
        prefix
        + "\t".join(
            (
                _maybe(state.private_key),
                _maybe(state.public_key),
                str(state.listen_port),
                _fwmark(state.fwmark),
            )
        )
    ]
    for peer in state.peers:
        fields = (
            _b64(peer.public_key),
            _maybe(peer.preshared_key),
            peer.endpoint or "(none)",
            _allowed(peer, ","),
            str(peer.last_handshake_time_sec),
            str(peer.rx_bytes),
            str(peer.tx_bytes),
            str(peer.persistent_keepalive_interval or "off"),
        )
        lines.append(prefix + "\t".join(fields))
    return "".join(line + "\n" for line in lines)


def ugly(state: DeviceState, field: str, with_interface: bool) -> str:
    """What ``wg show IFNAME FIELD`` prints."""
    if field == "dump":
        return dump(state, with_interface)
    prefix = f"{state.name}\t" if with_interface else ""
    device_fields: Mapping[str, Callable[[], str]] = {
        "public-key": lambda: _maybe(state.public_key),
        "private-key": lambda: _maybe(state.private_key),
        "listen-port": lambda: str(state.listen_port),
        "fwmark": lambda: _fwmark(state.fwmark),
    }
    if field in device_fields:
        return f"{prefix}{device_fields[field]()}\n"
    peer_fields: Mapping[str, Callable[[PeerState], str]] = {
        "peers": lambda p: _b64(p.public_key),
        "preshared-keys": lambda p: f"{_b64(p.public_key)}\t{_maybe(p.preshared_key)}",
        "endpoints": lambda p: f"{_b64(p.public_key)}\t{p.endpoint or '(none)'}",
        "allowed-ips": lambda p: f"{_b64(p.public_key)}\t{_allowed(p, ' ')}",
        "latest-handshakes": lambda p: f"{_b64(p.public_key)}\t{p.last_handshake_time_sec}",
        "transfer": lambda p: f"{_b64(p.public_key)}\t{p.rx_bytes}\t{p.tx_bytes}",
        "persistent-keepalive": lambda p: (
            f"{_b64(p.public_key)}\t{p.persistent_keepalive_interval or 'off'}"
        ),
    }
    if field not in peer_fields:
        raise ValueError(f"unknown field {field!r}")
    return "".join(f"{prefix}{peer_fields[field](p)}\n" for p in state.peers)


def showconf(state: DeviceState) -> str:
    """What ``wg showconf IFNAME`` prints."""
    out = ["[Interface]\n"]
    if state.listen_port:
        out.append(f"ListenPort = {state.listen_port}\n")
    if state.fwmark:
        out.append(f"FwMark = 0x{state.fwmark:x}\n")
    if state.private_key is not None:
        out.append(f"PrivateKey = {_b64(state.private_key)}\n")
    out.append("\n")
    for index, peer in enumerate(state.peers):
        out.append(f"[Peer]\nPublicKey = {_b64(peer.public_key)}\n")
        if peer.preshared_key is not None:
            out.append(f"PresharedKey = {_b64(peer.preshared_key)}\n")
        if peer.allowed_ips:
            out.append(f"AllowedIPs = {_allowed(peer, ', ')}\n")
        if peer.endpoint is not None:
            out.append(f"Endpoint = {peer.endpoint}\n")
        if peer.persistent_keepalive_interval:
            out.append(f"PersistentKeepalive = {peer.persistent_keepalive_interval}\n")
        if index + 1 < len(state.peers):
            out.append("\n")
    return "".join(out)
