"""The mesh node's commands: ``up --login-server``, ``down --state-dir`` and ``logout``.

``wgpy up --login-server URL [--auth-key KEY]``
    Make the node key in the state directory if there is none (it never leaves this
    machine). Without an auth key and without a stored token (or with one the server
    refuses as expired), log in interactively first (:mod:`wgpy.cli.mesh_login`: a URL to
    open in a browser, a countdown, Ctrl-C withdraws it). Then start the mesh daemon
    (:mod:`wgpy.mesh.client.daemon`, a program of its own whose command line and
    environment hold no secret: the key reaches it through a pipe): it creates the
    interface, then registers with the pre-auth key (or logs in again with the stored node
    token), and follows the server's map. The command returns once the interface is up and
    the first map applied, or says in one sentence why not; while it waits it says so every
    few seconds, and Ctrl-C stops the daemon (nothing is left registering in the
    background). ``--foreground`` keeps the node attached, logging to stderr; otherwise the
    daemon logs to ``STATE_DIR/wgpy.log`` (``LOG_LEVEL``, default info).
    ``--metrics-listen HOST:PORT`` serves the node's Prometheus metrics there.
    ``--accept-dns[=BOOL]`` (default true, kept for the next up) points the host's resolver
    at the node's, which answers mesh names (:mod:`wgpy.mesh.client.nameservice`).
    ``--advertise-routes``, ``--snat-subnet-routes`` and ``--accept-routes`` make the node a
    subnet router or keep peers' routes out (:mod:`wgpy.cli.route_options`).
    ``--advertise-exit-node`` offers the node as an exit node; ``--exit-node NAME|IP``
    sends all traffic through one (``--exit-node-allow-lan-access``: not the LAN's), see
    *Exit nodes* in docs/mesh-api.md; these are kept for the next up. A plain ``http://``
    server that is not on this host is warned about.

``wgpy down --state-dir DIR`` (or ``wgpy down IFNAME`` of a mesh interface)
    Stop the daemon, as ``tailscale down`` does: the node stays logged in (its key, token and
    settings are kept, nothing is sent to the server), so the next ``wgpy up`` without a key
    brings it back with the same name and addresses. The host's DNS settings are put back by
    the daemon as it stops; those of a daemon that did not stop cleanly (its copy of
    /etc/resolv.conf in the state directory), by ``down``.

``wgpy logout [--state-dir DIR]``
    Stop the daemon if it runs, log out at the server if it answers, and delete the node
    key, token and settings.

``up`` and ``down`` are wg-quick's commands too: :mod:`wgpy.cli.up` owns their parsers (with
:func:`add_up_arguments` and :func:`add_down_arguments`) and hands a mesh run to
:func:`mesh_up` or :func:`mesh_down`.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from wgpy import config as wgconfig
from wgpy.machinecert import MachineCertError
from wgpy.mesh.client import daemon, hostdns
from wgpy.mesh.client.api import MeshClientError, NodeClient, check_server_url
from wgpy.mesh.client.exitnode import check_exit_node
from wgpy.mesh.client.exitroute import EXIT_ROUTING_FILE, put_back
from wgpy.mesh.client.machine import MachineIdentity
from wgpy.mesh.client.node import NodeConfig
from wgpy.mesh.client.state import (
    DEFAULT_STATE_DIR,
    LOG_FILE,
    Settings,
    StateDir,
    StateError,
    interface_state_dir,
)
from wgpy.nat.paths import KEEPALIVE_INTERVAL
from wgpy.uapi import client as uapi_client

from . import mesh_daemon, mesh_login
from .environment import PROG, CommandError, Environment, ExitStatus
from .listen import listen_address
from .route_options import add_route_arguments, boolean, route_settings

DEFAULT_INTERFACE = "wgpy0"
DEFAULT_LISTEN_PORT = 41641
LOGOUT_TIMEOUT = 5.0  # seconds for the server to answer a logout
_IFNAME = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}$")

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


# ========================================================================================
# Arguments


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    """The mesh options of ``wgpy up``."""
    group = parser.add_argument_group(
        "mesh", "join a mesh instead of reading a configuration file (no CONFIG)"
    )
    group.add_argument("--login-server", metavar="URL", help="the coordination server")
    group.add_argument(
        "--auth-key",
        metavar="KEY",
        help="a pre-auth key to register with (file:PATH reads it from a file; "
        "default: $WGPY_AUTH_KEY); without one, log in again with the node token stored "
        "by an earlier up (kept by `wgpy down`, deleted by `wgpy logout`), or, with no "
        "token or an expired node, log in interactively: open the URL printed in a browser",
    )
    group.add_argument("--hostname", metavar="NAME", help="this node's name in the mesh")
    group.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help=f"where the node key and token are kept (default {DEFAULT_STATE_DIR})",
    )
    group.add_argument(
        "--interface", metavar="IFNAME", help=f"the interface (default {DEFAULT_INTERFACE})"
    )
    group.add_argument(
        "--listen-port",
        metavar="PORT",
        type=_port,
        help=f"the UDP port (default {DEFAULT_LISTEN_PORT})",
    )
    group.add_argument(
        "--nat-keepalive",
        metavar="SECONDS",
        type=_keepalive,
        help="keep each peer's idle path alive this often, to keep NAT mappings open (default: "
        f"{KEEPALIVE_INTERVAL:g}, or less when the node measures that its NAT forgets a mapping "
        "sooner; given, it is used as it is and nothing is measured)",
    )
    group.add_argument(
        "--ca-cert", metavar="FILE", help="trust only this CA for the server (default: system)"
    )
    group.add_argument(
        "--machine-cert",
        metavar="FILE",
        help="this device's machine certificate (`wgpy admin machines issue`): the node proves "
        "it holds its key when it registers or logs in; kept for the next up",
    )
    group.add_argument(
        "--machine-key",
        metavar="FILE",
        help="the machine certificate's private key (mode 0600; it never leaves this machine)",
    )
    group.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve the node's Prometheus metrics at http://HOST:PORT/metrics (default: off; "
        "kept for the next up; --metrics-listen= stops)",
    )
    add_route_arguments(group)
    group.add_argument(
        "--accept-dns",
        metavar="BOOL",
        nargs="?",
        const=True,
        type=boolean,
        help="point this host's resolver at the node's (at 100.100.100.100) so that mesh names "
        "resolve: systemd-resolved's split DNS, else resolvconf, else /etc/resolv.conf, all "
        "put back at down (default true; =false leaves the host's DNS alone); kept for the "
        "next up",
    )
    group.add_argument(
        "--advertise-exit-node",
        metavar="BOOL",
        nargs="?",
        const=True,
        type=boolean,
        help="offer this node as an exit node: it advertises the default routes (an admin "
        "approves them as any route) and forwards and masquerades what peers send through it "
        "(kept for the next up; =false stops)",
    )
    group.add_argument(
        "--exit-node",
        metavar="NAME|IP",
        type=_exit_node,
        help="send all traffic through this peer (its mesh name, host name or overlay address; "
        "it must be an exit node for this node), but for the coordination server, the relays "
        "and, with --exit-node-allow-lan-access, the local networks (kept for the next up; "
        "--exit-node= stops)",
    )
    group.add_argument(
        "--exit-node-allow-lan-access",
        metavar="BOOL",
        nargs="?",
        const=True,
        type=boolean,
        help="while an exit node is used, reach the networks this host is directly connected "
        "to without it (default: false, as Tailscale)",
    )
    group.add_argument(
        "--foreground", action="store_true", help="run the node in this process, logging to stderr"
    )


def add_down_arguments(parser: argparse.ArgumentParser) -> None:
    """The mesh option of ``wgpy down``."""
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="stop the mesh node of this state directory; it stays logged in, and the next "
        f"`{PROG} up --login-server URL` brings it back without a key (`{PROG} logout` leaves "
        "the mesh)",
    )


def register(commands: Subparsers) -> None:
    """Add ``logout`` to the ``wgpy`` parser."""
    logout = commands.add_parser(
        "logout",
        help="leave the mesh for good: log out and forget the node key and token",
        description="Stop the mesh node if it runs, log it out at the server if the server "
        "answers, and delete its key, token and settings from the state directory.",
    )
    logout.add_argument(
        "--state-dir", metavar="DIR", type=Path, help=f"default {DEFAULT_STATE_DIR}"
    )
    logout.set_defaults(handler=logout_command)


def _keepalive(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 1 to 3600")
    return seconds


def _exit_node(text: str) -> str:
    try:
        return check_exit_node(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 1 to 65535")
    return int(text)


# ========================================================================================
# up


def mesh_up(args: argparse.Namespace, env: Environment) -> ExitStatus:
    """``wgpy up --login-server URL ...``."""
    if os.geteuid() != 0:
        raise CommandError(f"`{PROG} up' must be run as root; try it with sudo")
    if not Path("/dev/net/tun").exists():
        raise CommandError(
            "/dev/net/tun does not exist, so no TUN interface can be created; "
            "load the tun kernel module (modprobe tun) or give the container the device"
        )
    options, state = prepare_up(args, env)
    if options.node.auth_key is None:
        mesh_login.log_in_if_needed(options, state, env)
    if getattr(args, "foreground", False):
        key_in_argv = args.auth_key is not None and not args.auth_key.startswith("file:")
        return _up_foreground(options, env, key_in_argv=key_in_argv)
    return _up_daemon(options, state, env)


def prepare_up(args: argparse.Namespace, env: Environment) -> tuple[daemon.DaemonOptions, StateDir]:
    """Check the arguments and the state directory, make the node key if there is none,
    and say what the daemon is to do."""
    try:
        server_url = check_server_url(args.login_server)
    except ValueError as e:
        raise CommandError(f"--login-server: {e}") from None
    if not _private_transport(server_url):
        env.stderr.write(
            f"{PROG} up: warning: {server_url} is plain http:// on an address that is not "
            "loopback: the pre-auth key and the node token cross the network in clear text; "
            "use https://\n"
        )
    auth_key = _auth_key(args.auth_key, env)
    state = StateDir(args.state_dir or DEFAULT_STATE_DIR)
    try:
        for sentence in state.ensure():
            env.stderr.write(f"{PROG} up: warning: {sentence}\n")
        previous = state.read_settings()
        token = state.read_token()
        running = state.daemon_pid()
        if running is not None:
            name = previous.interface if previous else "its interface"
            raise CommandError(
                f"a mesh node already runs on {state.path} (pid {running}, {name}); "
                f"take it down first with `{PROG} down --state-dir {state.path}'"
            )
        if (
            auth_key is None
            and token is not None
            and previous is not None
            and previous.server_url != server_url
        ):
            raise CommandError(
                f"the node token in {state.path} is for {previous.server_url}; "
                f"register with --auth-key, or use another --state-dir"
            )
        state.load_or_create_key(env.rng)
    except StateError as e:
        raise CommandError(e.message) from None
    name = args.interface or (previous.interface if previous else DEFAULT_INTERFACE)
    if not _IFNAME.match(name):
        raise CommandError(f"{name!r} is not a valid interface name")
    _check_interface_free(name)
    ca_cert = args.ca_cert or (previous.ca_cert if previous else None)
    if ca_cert is not None:
        ca_cert = os.path.abspath(ca_cert)  # the daemon runs from /
        if not os.path.isfile(ca_cert):
            raise CommandError(f"the CA certificate {ca_cert} does not exist")
    machine_cert, machine_key = _machine_identity(args, previous)
    advertise_routes, snat_subnet_routes, accept_routes = route_settings(args, previous)
    node = NodeConfig(
        interface=name,
        listen_port=args.listen_port or (previous.listen_port if previous else DEFAULT_LISTEN_PORT),
        hostname=args.hostname or (previous.hostname if previous else default_hostname()),
        auth_key=auth_key,
        nat_keepalive=args.nat_keepalive or KEEPALIVE_INTERVAL,
        measure_lifetime=args.nat_keepalive is None,  # the user's interval wins
        machine_cert=machine_cert,
        machine_key=machine_key,
        accept_dns=_accept_dns(args, previous),
        advertise_routes=advertise_routes,
        snat_subnet_routes=snat_subnet_routes,
        accept_routes=accept_routes,
        **_exit_options(args, previous),
    )
    metrics_listen = getattr(args, "metrics_listen", None)
    if metrics_listen is None and previous is not None:
        metrics_listen = previous.metrics_listen  # as the last up had it
    if metrics_listen in ("", "off"):
        metrics_listen = None
    options = daemon.DaemonOptions(
        state_dir=state.path.resolve(),
        server_url=server_url,
        node=node,
        ca_cert=ca_cert,
        metrics_listen=None
        if metrics_listen is None
        else listen_address(metrics_listen, "--metrics-listen", 9091),
    )
    return options, state


def _accept_dns(args: argparse.Namespace, previous: Settings | None) -> bool:
    """--accept-dns as given, else as the last up had it, else on (as Tailscale's)."""
    given = getattr(args, "accept_dns", None)
    if given is not None:
        return bool(given)
    return previous.accept_dns if previous is not None else True


def _exit_options(args: argparse.Namespace, previous: Settings | None) -> dict[str, Any]:
    """The exit node options: those given, else the last up's; a node cannot offer to be an
    exit node and use one (as Tailscale)."""
    out: dict[str, Any] = {}
    for name, default in (
        ("advertise_exit_node", False),
        ("exit_node", ""),
        ("exit_node_allow_lan_access", False),
    ):
        given = getattr(args, name, None)
        out[name] = given if given is not None else getattr(previous, name, default)
    if out["advertise_exit_node"] and out["exit_node"]:
        raise CommandError(
            "a node cannot offer to be an exit node and use one at the same time; give "
            "--advertise-exit-node=false or --exit-node="
        )
    return out


def _machine_identity(
    args: argparse.Namespace, previous: Settings | None
) -> tuple[str | None, str | None]:
    """The machine certificate and key (absolute paths: the daemon runs from /), given or
    kept from the last up, checked now so that a bad pair is said before anything starts."""
    cert, key = getattr(args, "machine_cert", None), getattr(args, "machine_key", None)
    if (cert is None) != (key is None):
        raise CommandError("give --machine-cert and --machine-key together")
    if cert is None and previous is not None:
        cert, key = previous.machine_cert, previous.machine_key
    if cert is None or key is None:
        return None, None
    cert, key = os.path.abspath(cert), os.path.abspath(key)
    try:
        MachineIdentity.load(Path(key), Path(cert))
    except MachineCertError as e:
        raise CommandError(str(e)) from None
    return cert, key


def _private_transport(url: str) -> bool:
    """Whether credentials sent to ``url`` stay private: https://, or http:// to this host."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_interface_free(name: str) -> None:
    """Refuse an interface name that is taken here, before anything is registered."""
    if uapi_client.has_interface(name):
        raise CommandError(
            f"the interface `{name}' already exists: another process serves its control "
            f"socket {uapi_client.socket_path(name)}; take it down first ({PROG} down {name}) "
            "or choose another --interface"
        )
    try:
        socket.if_nametoindex(name)
    except OSError:
        return  # no such link: free
    raise CommandError(
        f"the interface `{name}' already exists on this host; choose another --interface"
    )


def default_hostname() -> str:
    """This machine's name as a DNS label, as the server wants it: the first label of the
    host name, lowercase, other characters as ``-``."""
    label = socket.gethostname().split(".")[0].lower()
    label = re.sub(r"[^a-z0-9-]", "-", label).strip("-")[:63].strip("-")
    return label or "node"


def _auth_key(value: str | None, env: Environment) -> str | None:
    if value is None:
        value = env.env.get("WGPY_AUTH_KEY") or None
    if value is not None and value.startswith("file:"):
        path = value[len("file:") :]
        try:
            value = Path(path).read_text().strip()
        except OSError as e:
            raise CommandError(f"cannot read the pre-auth key from {path}: {e.strerror}") from None
    if value is not None and not value.strip():
        raise CommandError("the pre-auth key is empty")
    return None if value is None else value.strip()


def _up_foreground(
    options: daemon.DaemonOptions, env: Environment, *, key_in_argv: bool
) -> ExitStatus:
    level = env.env.get("LOG_LEVEL", "info")
    if key_in_argv:
        # this process's command line shows the key to every local user: become the node's
        # own program, whose command line holds none
        env.stdout.flush()
        env.stderr.flush()
        daemon.become(options, level, env.env)
    status = mesh_daemon.foreground(options, level, env.stdout, env.stderr)
    return ExitStatus(status)


def _up_daemon(options: daemon.DaemonOptions, state: StateDir, env: Environment) -> ExitStatus:
    """Start the daemon (:func:`wgpy.mesh.client.daemon.start`) and say what it reported."""
    level = env.env.get("LOG_LEVEL", "info")
    env.stdout.flush()
    env.stderr.flush()
    log_path = state.file(LOG_FILE)
    message = daemon.start(options, level, log_path, env.env, lambda text: _echo(env, text))
    if message.startswith("ok\n"):
        env.stdout.write(message[3:].rstrip("\n") + "\n")
        return ExitStatus.SUCCESS
    raise CommandError(message or f"the mesh daemon exited before it was up; see {log_path}")


# ========================================================================================
# down and logout


def wants_mesh_down(args: argparse.Namespace) -> bool:
    """Whether ``wgpy down`` means the mesh: ``--state-dir`` was given, or CONFIG is the
    name of a running mesh interface that has no wg-quick file."""
    if getattr(args, "state_dir", None) is not None:
        return True
    name = getattr(args, "config", None)
    return (
        isinstance(name, str)
        and wgconfig.valid_interface_name(name)
        and not (wgconfig.CONFIG_DIR / f"{name}.conf").exists()
        and interface_state_dir(name) is not None
    )


def mesh_down(args: argparse.Namespace, env: Environment) -> ExitStatus:
    """``wgpy down --state-dir DIR`` or ``wgpy down IFNAME``: stop the node, as ``tailscale
    down`` does. It stays logged in: the next ``wgpy up`` logs in again with the stored
    token, with the same name and addresses; ``wgpy logout`` is the command that leaves."""
    if os.geteuid() != 0:
        raise CommandError(f"`{PROG} down' must be run as root; try it with sudo")
    state_dir = args.state_dir
    if state_dir is None and getattr(args, "config", None):
        state_dir = interface_state_dir(args.config)
    state = StateDir(state_dir or DEFAULT_STATE_DIR)
    try:
        settings = state.read_settings()
    except StateError as e:
        raise CommandError(e.message) from None
    if not daemon.stop(state, settings, lambda text: _echo(env, text)):
        # a node that did not stop cleanly: what it changed on the host, put back
        marked = _put_back_src_valid_mark(state, env)
        if _put_back_dns(state, settings, env) or marked:
            return ExitStatus.SUCCESS
        raise CommandError(f"no mesh node is up on {state.path}")
    return ExitStatus.SUCCESS


def _put_back_src_valid_mark(state: StateDir, env: Environment) -> bool:
    """Put back the src_valid_mark a node that used an exit node and did not stop cleanly
    turned on; whether it had."""
    try:
        value = put_back(state.path / EXIT_ROUTING_FILE)
    except OSError as e:
        raise CommandError(
            f"cannot put back net.ipv4.conf.all.src_valid_mark as it was before the node: "
            f"{e.strerror or e}"
        ) from None
    if value is not None:
        _echo(env, f"put back net.ipv4.conf.all.src_valid_mark={value} as it was before the node")
    return value is not None


def _put_back_dns(state: StateDir, settings: Settings | None, env: Environment) -> bool:
    """Write back the resolv.conf a node that did not stop cleanly kept; whether it had."""
    if settings is None:
        return False
    try:
        done = hostdns.put_back(state, settings.interface, hostdns.RESOLV_CONF)
    except (OSError, StateError) as e:
        raise CommandError(
            f"cannot put back {hostdns.RESOLV_CONF} as it was before the node: "
            f"{getattr(e, 'message', None) or e}"
        ) from None
    if done:
        _echo(env, f"put back {hostdns.RESOLV_CONF} as it was before the node")
    return done


def logout_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    state = StateDir(args.state_dir or DEFAULT_STATE_DIR)
    try:
        settings = state.read_settings()
        token = state.read_token()
        if not daemon.stop(state, settings, lambda text: _echo(env, text)):
            _put_back_src_valid_mark(state, env)
            _put_back_dns(state, settings, env)
        if token is not None and settings is not None:
            _logout(settings, token, env, "logout")
        removed = state.forget()
    except StateError as e:
        raise CommandError(e.message) from None
    if not removed:
        raise CommandError(f"there is no mesh node in {state.path} to forget")
    env.stderr.write(f"[#] deleted {', '.join(p.name for p in removed)} from {state.path}\n")
    return ExitStatus.SUCCESS


def _echo(env: Environment, text: str) -> None:
    env.stdout.flush()
    env.stderr.write(f"[#] {text}\n")
    env.stderr.flush()


def _logout(settings: Settings, token: str, env: Environment, command: str) -> bool:
    """Log the node out at the server; a warning (not an error) if that fails."""
    _echo(env, f"log out at {settings.server_url}")

    async def go() -> None:
        async with NodeClient(
            settings.server_url, token=token, ca_cert=settings.ca_cert, timeout=LOGOUT_TIMEOUT
        ) as client:
            await client.logout()

    try:
        asyncio.run(go())
    except MeshClientError as e:
        env.stderr.write(
            f"{PROG} {command}: warning: the node was not logged out at the server: {e.message}\n"
        )
        return False
    return True
