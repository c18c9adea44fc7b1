"""The mesh commands: ``up --login-server``, ``down --state-dir``, ``logout`` and ``admin``.

``wgpy up --login-server URL [--auth-key KEY]``
    Make the node key in the state directory if there is none (it never leaves this
    machine), then start the mesh daemon (:mod:`wgpy.cli.mesh_daemon`, a program of its own
    whose command line and environment hold no secret: the key reaches it through a pipe):
    it creates the interface, then registers with the pre-auth key (or logs in again with
    the stored node token), and follows the server's map. The command returns once the
    interface is up and the first map applied, or says in one sentence why not; while it
    waits it says so every few seconds, and Ctrl-C stops the daemon (nothing is left
    registering in the background). ``--foreground`` keeps the node attached, logging to
    stderr; otherwise the daemon logs to ``STATE_DIR/wgpy.log`` (``LOG_LEVEL``, default
    info). A plain ``http://`` server that is not on this host is warned about.

``wgpy down --state-dir DIR`` (or ``wgpy down IFNAME`` of a mesh interface)
    Stop the daemon, as ``tailscale down`` does: the node stays logged in (its key, token and
    settings are kept, nothing is sent to the server), so the next ``wgpy up`` without a key
    brings it back with the same name and addresses.

``wgpy logout [--state-dir DIR]``
    Stop the daemon if it runs, log out at the server if it answers, and delete the node
    key, token and settings.

``wgpy admin --server URL --api-key KEY ...``
    Users, pre-auth keys, nodes, the policy and admin API keys, through the admin API
    (:mod:`wgpy.cli.mesh_admin`).

``up`` and ``down`` are wg-quick's commands too (``wgpy.cli.quick``): its parsers take
:func:`add_up_arguments` and :func:`add_down_arguments`, and its handlers first ask
:func:`maybe_mesh_up` and :func:`maybe_mesh_down`, which run the mesh commands when
``--login-server``, ``--state-dir`` or a mesh interface's name is given. ``python -m
wgpy.cli.mesh`` runs these commands on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from wgpy import config as wgconfig
from wgpy.mesh.client import daemon
from wgpy.mesh.client.api import MeshClientError, NodeClient, check_server_url
from wgpy.mesh.client.node import NodeConfig
from wgpy.mesh.client.state import (
    DEFAULT_STATE_DIR,
    LOG_FILE,
    Settings,
    StateDir,
    StateError,
    interface_state_dir,
    process_start_time,
)
from wgpy.uapi import client as uapi_client

from . import mesh_admin, mesh_daemon
from .environment import PROG, CommandError, Environment, ExitStatus

DEFAULT_INTERFACE = "wgpy0"
DEFAULT_LISTEN_PORT = 41641
READY_TIMEOUT = 120.0  # seconds for the daemon to say it is up (it gives up sooner itself)
PROGRESS_INTERVAL = 5.0  # seconds between words while `up` waits for the daemon
STOP_TIMEOUT = 5.0  # seconds for the daemon to go after SIGTERM
LOGOUT_TIMEOUT = 5.0  # seconds for the server to answer a logout
MAX_LOG_BYTES = 10 * 1024 * 1024  # the daemon's log is rotated (to .1) past this at start
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
        "by an earlier up (kept by `wgpy down`, deleted by `wgpy logout`)",
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
        "--ca-cert", metavar="FILE", help="trust only this CA for the server (default: system)"
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
    """Add ``logout`` and ``admin`` to the ``wgpy`` parser."""
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
    mesh_admin.register(commands)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 1 to 65535")
    return int(text)


# ========================================================================================
# Hooks for wgpy.cli.quick, whose `up` and `down` these extend

_MESH_UP_OPTIONS = ("auth_key", "hostname", "state_dir", "interface", "listen_port", "ca_cert")


def maybe_mesh_up(args: argparse.Namespace, env: Environment) -> ExitStatus | None:
    """Run ``wgpy up`` as a mesh node if ``--login-server`` is given; None if this is
    wg-quick's ``up CONFIG`` (the caller goes on)."""
    if getattr(args, "login_server", None) is None:
        given = [f"--{o.replace('_', '-')}" for o in _MESH_UP_OPTIONS if getattr(args, o, None)]
        if getattr(args, "foreground", False):
            given.append("--foreground")
        if given:
            raise CommandError(f"{given[0]} is for joining a mesh: give --login-server too")
        if getattr(args, "config", None) is None:
            raise CommandError(
                "give a configuration file, or --login-server URL to join a mesh",
                ExitStatus.USAGE,
            )
        return None
    if getattr(args, "config", None) is not None:
        raise CommandError("give either a configuration file or --login-server, not both")
    return mesh_up(args, env)


def maybe_mesh_down(args: argparse.Namespace, env: Environment) -> ExitStatus | None:
    """Run ``wgpy down`` for a mesh node if that is what it names; None otherwise."""
    if wants_mesh_down(args):
        return mesh_down(args, env)
    if getattr(args, "config", None) is None:
        raise CommandError(
            "give a configuration file or interface name, or --state-dir of a mesh node",
            ExitStatus.USAGE,
        )
    return None


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
        if auth_key is None:
            if token is None:
                raise CommandError(
                    f"this node is not registered yet ({state.path} holds no node token); "
                    "give a pre-auth key with --auth-key"
                )
            if previous is not None and previous.server_url != server_url:
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
    node = NodeConfig(
        interface=name,
        listen_port=args.listen_port or (previous.listen_port if previous else DEFAULT_LISTEN_PORT),
        hostname=args.hostname or (previous.hostname if previous else default_hostname()),
        auth_key=auth_key,
    )
    options = daemon.DaemonOptions(
        state_dir=state.path.resolve(), server_url=server_url, node=node, ca_cert=ca_cert
    )
    return options, state


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
        options_fd = mesh_daemon.options_pipe(options, level)
        os.set_inheritable(options_fd, True)
        argv = mesh_daemon.command(options_fd)
        try:
            os.chdir("/")  # as the daemon: its paths are absolute (prepare_up)
            os.execve(argv[0], argv, mesh_daemon.clean_environment())
        finally:  # only if it could not exec
            os.close(options_fd)
    status = mesh_daemon.foreground(options, level, env.stdout, env.stderr)
    return ExitStatus(status)


def _up_daemon(options: daemon.DaemonOptions, state: StateDir, env: Environment) -> ExitStatus:
    """Start the daemon as a program of its own (``python -m wgpy.cli.mesh_daemon``: a
    command line and environment without secrets, its options through a pipe), then wait
    for its first report. Ctrl-C stops it: a node that is not up yet is not left behind."""
    level = env.env.get("LOG_LEVEL", "info")
    env.stdout.flush()
    env.stderr.flush()
    process: subprocess.Popen[bytes] | None = None
    read_fd = write_fd = options_fd = -1
    logfile = _open_log(state.file(LOG_FILE))
    try:
        options_fd = mesh_daemon.options_pipe(options, level)
        read_fd, write_fd = os.pipe()
        process = subprocess.Popen(
            mesh_daemon.command(options_fd, report_fd=write_fd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=logfile,
            pass_fds=(options_fd, write_fd),
            cwd="/",
            env=mesh_daemon.clean_environment(),
            start_new_session=True,  # Ctrl-C on the terminal reaches `up`, which decides
        )
        for fd in (options_fd, write_fd):  # the daemon's now: its report ends at its exit
            os.close(fd)
        options_fd = write_fd = -1
        message = _await_report(read_fd, process, options.server_url, env)
        if message.startswith("ok\n"):
            env.stdout.write(message[3:].rstrip("\n") + "\n")
            return ExitStatus.SUCCESS
        # it said why it stops: reap it, or stop it if it takes too long
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _stop_child(process, env, "it did not exit after its error")
        raise CommandError(
            message or f"the mesh daemon exited before it was up; see {state.file(LOG_FILE)}"
        )
    except KeyboardInterrupt:  # at any point once it was started: a node not up is stopped
        if process is not None:
            _stop_child(process, env, "interrupted")
        raise
    finally:
        logfile.close()
        for fd in (options_fd, read_fd, write_fd):
            if fd >= 0:
                os.close(fd)


def _await_report(
    fd: int, process: subprocess.Popen[bytes], server_url: str, env: Environment
) -> str:
    """The daemon's report; meanwhile a word every PROGRESS_INTERVAL seconds. After the
    READY_TIMEOUT the daemon is stopped before this returns (on Ctrl-C, the caller stops it)."""
    chunks: list[bytes] = []
    start = time.monotonic()
    next_word = start + PROGRESS_INTERVAL
    while True:
        now = time.monotonic()
        if now - start >= READY_TIMEOUT:
            _stop_child(process, env, "it did not come up in time")
            return f"the mesh daemon did not come up within {READY_TIMEOUT:g} seconds"
        wait = min(start + READY_TIMEOUT, next_word) - now
        readable, _, _ = select.select([fd], [], [], max(0.0, wait))
        if not readable:
            if time.monotonic() >= next_word:
                waited = round(time.monotonic() - start)
                _echo(env, f"waiting for the login server at {server_url} ({waited} s)...")
                next_word += PROGRESS_INTERVAL
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _stop_child(process: subprocess.Popen[bytes], env: Environment, why: str) -> None:
    """Stop the daemon that is not up yet (SIGTERM: it abandons the login; then SIGKILL),
    and wait for it; a second Ctrl-C meanwhile does not leave it running."""
    if process.poll() is not None:
        return
    _echo(env, f"{why}: stop the mesh daemon (kill -TERM {process.pid})")
    with _sigint_ignored():
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _echo(env, f"the mesh daemon did not stop in time: kill -KILL {process.pid}")
            process.kill()
            process.wait()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _open_log(path: Path) -> Any:
    with contextlib.suppress(OSError):
        if path.stat().st_size > MAX_LOG_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace")


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
    if not _stop_daemon(state, settings, env):
        raise CommandError(f"no mesh node is up on {state.path}")
    return ExitStatus.SUCCESS


def logout_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    state = StateDir(args.state_dir or DEFAULT_STATE_DIR)
    try:
        settings = state.read_settings()
        token = state.read_token()
        _stop_daemon(state, settings, env)
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


def _stop_daemon(state: StateDir, settings: Settings | None, env: Environment) -> bool:
    """Stop the daemon of ``state`` if it runs (SIGTERM, then SIGKILL); whether it ran."""
    pid = state.daemon_pid()
    if pid is None:
        return False
    start = process_start_time(pid)
    name = settings.interface if settings else "the mesh interface"
    _echo(env, f"stop the mesh daemon of {name} (kill -TERM {pid})")
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while process_start_time(pid) == start and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)
        if process_start_time(pid) != start:
            break
        _echo(env, f"the mesh daemon did not stop in time: kill -KILL {pid}")
    if settings is not None:
        uapi_client.has_interface(settings.interface)  # removes a socket left behind
    return True


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


# ========================================================================================
# On its own: python -m wgpy.cli.mesh


def build_parser() -> argparse.ArgumentParser:
    """``up``, ``down``, ``logout`` and ``admin`` without the rest of ``wgpy``."""
    parser = argparse.ArgumentParser(prog=PROG, description="The wgpy mesh commands.")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    up = commands.add_parser("up", help="join a mesh")
    add_up_arguments(up)
    up.set_defaults(handler=_standalone_up)
    down = commands.add_parser("down", help="stop the mesh node (it stays logged in)")
    down.add_argument("config", metavar="IFNAME", nargs="?")
    add_down_arguments(down)
    down.set_defaults(handler=mesh_down)
    register(commands)
    return parser


def _standalone_up(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if not args.login_server:
        raise CommandError("give the coordination server with --login-server")
    return mesh_up(args, env)


def main(argv: Sequence[str], env: Environment | None = None) -> ExitStatus:
    from .commands import _error

    env = env or Environment.from_process()
    try:
        with contextlib.redirect_stdout(env.stdout), contextlib.redirect_stderr(env.stderr):
            args = build_parser().parse_args(argv)
    except SystemExit as e:
        return ExitStatus.SUCCESS if e.code in (0, None) else ExitStatus.USAGE
    try:
        status: ExitStatus = args.handler(args, env)
        env.stdout.flush()
        return status
    except CommandError as e:
        _error(env, args.command, e.message)
        return e.status
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except OSError as e:
        _error(env, args.command, f"{e.strerror or e}")
        return ExitStatus.ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
