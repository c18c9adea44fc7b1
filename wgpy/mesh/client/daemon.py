"""The mesh node as a process: the real interface, its control socket, signals, PID file;
and how ``wgpy up`` starts that process, waits for its report, and ``wgpy down`` stops it.

:func:`serve` runs in the daemon (or in the foreground) after ``wgpy up --login-server``
has prepared the state directory. It reports once, through ``report``: ``(None, summary)``
when the interface is up and the first map applied, or ``(sentence, "")`` if the node
could not start. It stops on SIGTERM or SIGINT, when the control socket
``/var/run/wireguard/IFNAME.sock`` is removed, or when the interface is deleted.

The daemon is a program of its own (:data:`PROGRAM`, whose command line is parsed in
:mod:`wgpy.cli.mesh_daemon`), never a fork of ``wgpy up``: a fork would keep ``wgpy up``'s
command line, and with it the pre-auth key of ``--auth-key``, in ``/proc/PID/cmdline``, which
every local user may read. Its options (the key among them) come through a pipe
(:func:`options_pipe`, :func:`read_options`) as one JSON object ``{"options", "log_level"}``,
and the variables that may hold a secret are not in its environment
(:func:`clean_environment`). In the background it reports once through a second pipe
(:func:`background`): ``ok\\n`` and the node's one-line summary, or the sentence that says why
not; :func:`start` is ``wgpy up``'s side of that. Nothing here writes to the terminal: what
the user is to read goes through a ``say`` function of the command line's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

from aiohttp import web

from ... import metrics
from ...device.interface import Interface, poll_us_from_environment
from ...log import configure as configure_logging
from ...log import get_logger
from ...uapi import client as uapi_client
from ...uapi.paths import SOCKET_DIR
from ...uapi.server import UapiServer, serve_uapi
from .api import MeshClientError, NodeClient
from .hostdns import HostDNS
from .metrics import NodeMetrics
from .nameservice import NameService
from .node import MeshError, MeshInterface, MeshNode, NodeConfig
from .state import (
    LOG_FILE,
    Settings,
    StateDir,
    StateError,
    process_start_time,
    register_interface,
    unregister_interface,
)
from .system import HostNetwork, IpCommand

__all__ = [
    "PROGRAM",
    "DaemonOptions",
    "background",
    "become",
    "command",
    "read_options",
    "serve",
    "start",
    "stop",
]

Report = Callable[[str | None, str], None]
INTERRUPTED = 130  # serve's status after Ctrl-C (SIGINT) before the node was up, as a shell's


@dataclass(frozen=True)
class DaemonOptions:
    state_dir: Path
    server_url: str
    node: NodeConfig
    ca_cert: str | None = None
    run_dir: Path | None = None  # default: RUN_DIR
    socket_directory: str = str(SOCKET_DIR)
    metrics_listen: tuple[str, int] | None = None  # where Prometheus scrapes; None: nowhere

    def to_json(self) -> dict[str, Any]:
        """What ``wgpy up`` hands the daemon process through a pipe (never its command line
        or environment: the pre-auth key is in it)."""
        node = self.node
        return {
            "state_dir": str(self.state_dir),
            "server_url": self.server_url,
            "ca_cert": self.ca_cert,
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "socket_directory": self.socket_directory,
            "metrics_listen": None if self.metrics_listen is None else list(self.metrics_listen),
            "node": {
                "interface": node.interface,
                "listen_port": node.listen_port,
                "hostname": node.hostname,
                "auth_key": node.auth_key,
                "nat_keepalive": node.nat_keepalive,
                "measure_lifetime": node.measure_lifetime,
                "machine_cert": node.machine_cert,
                "machine_key": node.machine_key,
                "accept_dns": node.accept_dns,
                "advertise_routes": list(node.advertise_routes),
                "snat_subnet_routes": node.snat_subnet_routes,
                "accept_routes": node.accept_routes,
                "advertise_exit_node": node.advertise_exit_node,
                "exit_node": node.exit_node,
                "exit_node_allow_lan_access": node.exit_node_allow_lan_access,
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> DaemonOptions:
        """ValueError if ``data`` is not what :meth:`to_json` makes."""
        try:
            node = data["node"]
            auth_key = node["auth_key"]
            ca_cert, run_dir = data["ca_cert"], data["run_dir"]
            return cls(
                state_dir=Path(str(data["state_dir"])),
                server_url=str(data["server_url"]),
                node=NodeConfig(
                    interface=str(node["interface"]),
                    listen_port=int(node["listen_port"]),
                    hostname=str(node["hostname"]),
                    auth_key=None if auth_key is None else str(auth_key),
                    nat_keepalive=float(node["nat_keepalive"]),
                    measure_lifetime=bool(node.get("measure_lifetime", True)),
                    machine_cert=_optional(node.get("machine_cert")),
                    machine_key=_optional(node.get("machine_key")),
                    accept_dns=bool(node.get("accept_dns", False)),
                    advertise_routes=tuple(str(r) for r in node.get("advertise_routes") or ()),
                    snat_subnet_routes=bool(node.get("snat_subnet_routes", True)),
                    accept_routes=bool(node.get("accept_routes", True)),
                    advertise_exit_node=node.get("advertise_exit_node") is True,
                    exit_node=str(node.get("exit_node") or ""),
                    exit_node_allow_lan_access=node.get("exit_node_allow_lan_access") is True,
                ),
                ca_cert=None if ca_cert is None else str(ca_cert),
                run_dir=None if run_dir is None else Path(str(run_dir)),
                socket_directory=str(data["socket_directory"]),
                metrics_listen=_address(data.get("metrics_listen")),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"the daemon's options are incomplete: {e}") from None


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


def _address(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    host, port = value
    return str(host), int(port)


def summary(node: MeshNode) -> str:
    """One line for the user once the node is up."""
    name = node.iface.name if node.iface is not None else node.config.interface
    addresses = ", ".join(str(a.ip) for a in node.self_node.addresses) if node.self_node else ""
    count = len(node.peers)
    peers = "1 peer" if count == 1 else f"{count} peers"
    return f"{name} is up as {addresses or 'no address'} with {peers}"


async def serve(options: DaemonOptions, report: Report, *, host: HostNetwork | None = None) -> int:
    """Run the node until it is stopped; the exit status (0: stopped, 1: failed, 130:
    Ctrl-C before it was up)."""
    log = get_logger(component="mesh", interface=options.node.interface)
    state = StateDir(options.state_dir)
    try:
        private_key = state.read_key()
        token = state.read_token()
    except StateError as e:
        report(e.message, "")
        return 1
    if private_key is None:
        report(f"there is no node key in {state.path}", "")
        return 1
    if options.node.auth_key is None and token is None:
        report(f"there is no node token in {state.path}: give --auth-key to register", "")
        return 1
    pid = os.getpid()
    loop = asyncio.get_running_loop()
    servers: list[UapiServer] = []
    reported = False
    node: MeshNode | None = None
    scraped: web.AppRunner | None = None  # the metrics listener

    interrupted = False

    def stop() -> None:
        if node is not None:
            node.stop()

    def stop_by_signal(signum: int) -> None:
        nonlocal interrupted
        interrupted = interrupted or signum == signal.SIGINT
        stop()

    async def interface_factory(name: str, key: bytes, port: int) -> MeshInterface:
        iface = Interface(name, listen_port=port, private_key=key, poll_us=poll_us)
        try:
            server = await serve_uapi(
                iface.name, iface, directory=options.socket_directory, on_socket_removed=stop
            )
        except BaseException:
            iface.close("no control socket")
            raise
        servers.append(server)
        return iface

    def on_ready(ready: MeshNode) -> None:
        nonlocal reported
        try:
            state.write_settings(
                Settings(
                    server_url=options.server_url,
                    interface=ready.iface.name if ready.iface else options.node.interface,
                    listen_port=options.node.listen_port,
                    hostname=options.node.hostname,
                    ca_cert=options.ca_cert,
                    machine_cert=options.node.machine_cert,
                    machine_key=options.node.machine_key,
                    accept_dns=options.node.accept_dns,
                    advertise_routes=options.node.advertise_routes,
                    snat_subnet_routes=options.node.snat_subnet_routes,
                    accept_routes=options.node.accept_routes,
                    advertise_exit_node=options.node.advertise_exit_node,
                    exit_node=options.node.exit_node,
                    exit_node_allow_lan_access=options.node.exit_node_allow_lan_access,
                    metrics_listen=_listen_text(options.metrics_listen),
                )
            )
        except StateError as e:
            log.warning("cannot save the settings", error=e.message)
        with contextlib.suppress(OSError):
            register_interface(options.node.interface, state.path, options.run_dir)
        reported = True
        report(None, summary(ready))

    try:
        poll_us = poll_us_from_environment()
    except ValueError as e:
        report(str(e), "")
        return 1
    try:
        state.write_pid(pid)
    except OSError as e:
        report(f"cannot write the PID file in {state.path}: {e.strerror or e}", "")
        return 1
    status = 0
    try:
        # a crashed run's resolv.conf put back first: the server's name may need the host's
        # own resolvers again
        host_dns = HostDNS(options.node.interface, state, log)
        await host_dns.recover()
        async with NodeClient(options.server_url, token=token, ca_cert=options.ca_cert) as client:
            host = host or IpCommand()
            name = options.node.interface
            node = MeshNode(
                options.node,
                client,
                state,
                private_key,
                interface_factory=interface_factory,
                host=host,
                names=NameService(
                    name,
                    host,
                    log,
                    host_dns=host_dns if options.node.accept_dns else None,
                    fetch=client.dns_config,
                    state=state,
                ),
            )
            if options.metrics_listen is not None:  # before the server hears of the node
                where, port = options.metrics_listen
                try:
                    scraped = await metrics.serve(NodeMetrics(node).registry, where, port)
                except metrics.ListenError as e:
                    report(str(e), "")
                    return 1
                log.info("serving metrics", url=metrics.url_of(scraped))
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop_by_signal, sig)
            try:
                await node.run(on_ready)
            except MeshError as e:
                log.error("mesh node failed", error=e.message)
                if not reported:
                    report(e.message, "")
                    reported = True
                status = 1
    except MeshClientError as e:  # the CA file cannot be loaded
        report(e.message, "")
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for server in servers:
            server.close()
            await server.wait_closed()
        if scraped is not None:
            await scraped.cleanup()
        unregister_interface(options.node.interface, state.path, options.run_dir)
        state.remove_pid(pid)
    if not reported:
        report("the mesh node was stopped before it was up", "")
        return INTERRUPTED if interrupted else 1
    log.info("mesh node stopped")
    return status


# ========================================================================================
# The daemon's program: its command line, environment and options pipe

PROGRAM = "wgpy.cli.mesh_daemon"  # the module the daemon runs as (`python -P -m PROGRAM`)
MAX_OPTIONS = 1024 * 1024  # bytes: the options are a few hundred
# variables that may hold a secret: never handed on to the daemon
SECRET_VARIABLES = ("WGPY_AUTH_KEY", "WGPY_API_KEY")


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(main)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(main)


def clean_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the daemon: ``environ`` without the secrets."""
    return {k: v for k, v in environ.items() if k not in SECRET_VARIABLES}


def options_pipe(options: DaemonOptions, log_level: str) -> int:
    """The read end of a pipe that holds the options, whole (they fit in a pipe's buffer,
    so this never blocks), for the daemon to inherit."""
    data = json.dumps({"options": options.to_json(), "log_level": log_level}).encode()
    if len(data) > 60 * 1024:  # a pipe holds 64 KiB
        raise ValueError("the mesh daemon's options are too large for its pipe")
    read_fd, write_fd = os.pipe()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return read_fd


def command(options_fd: int, *, report_fd: int | None = None) -> list[str]:
    """The daemon's command line: nothing secret in it. ``-P``: the working directory is
    not put first on the module path, so a ``json.py`` or ``wgpy/`` where root ran ``wgpy
    up`` is never imported (``-I`` would also drop PYTHONPATH, which a test's code needs)."""
    argv = [sys.executable, "-P", "-m", PROGRAM, "--options-fd", str(options_fd)]
    return [*argv, "--report-fd", str(report_fd)] if report_fd is not None else argv


def read_options(fd: int) -> tuple[DaemonOptions, str]:
    """ValueError if the pipe does not hold the options."""
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read(MAX_OPTIONS + 1)
    if len(data) > MAX_OPTIONS:
        raise ValueError("the mesh daemon's options are too large")
    try:
        decoded = json.loads(data)
    except ValueError:
        raise ValueError("the mesh daemon's options are not JSON") from None
    if not isinstance(decoded, dict):
        raise ValueError("the mesh daemon's options are not a JSON object")
    return DaemonOptions.from_json(decoded.get("options")), str(decoded.get("log_level") or "info")


def background(options: DaemonOptions, log_level: str, report_fd: int) -> int:
    """Run the node in the daemon's process, reporting once through ``report_fd``; the
    exit status. Its stderr is the log file."""
    reported = False

    def report(error: str | None, summary: str) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        message = b"ok\n" + summary.encode() if error is None else error.encode()
        with contextlib.suppress(OSError):
            os.write(report_fd, message)
        with contextlib.suppress(OSError):
            os.close(report_fd)

    try:
        configure_logging(log_level, stream=sys.stderr)  # the log file
        status = run_loop(serve(options, report))
        if not reported:
            report("the mesh daemon stopped before it was up", "")
        return status
    except BaseException as e:
        traceback.print_exc()  # into the log
        report(f"the mesh daemon failed: {e}", "")
        return 1


def become(options: DaemonOptions, log_level: str, environ: Mapping[str, str]) -> NoReturn:
    """Replace this process with the daemon's program, attached to the terminal (its
    command line holds no key, as this one may); OSError if it cannot be started."""
    options_fd = options_pipe(options, log_level)
    os.set_inheritable(options_fd, True)
    argv = command(options_fd)
    try:
        os.chdir("/")  # as the daemon: its paths are absolute
        os.execve(argv[0], argv, clean_environment(environ))
    finally:  # only if it could not exec
        os.close(options_fd)


# ========================================================================================
# wgpy up's side: start the daemon and wait for its report; wgpy down's: stop it

READY_TIMEOUT = 120.0  # seconds for the daemon to say it is up (it gives up sooner itself)
PROGRESS_INTERVAL = 5.0  # seconds between words while `up` waits for the daemon
STOP_TIMEOUT = 5.0  # seconds for the daemon to go after SIGTERM
STACKS_WAIT = 0.5  # seconds for a daemon that did not stop to write its stacks, then SIGKILL
MAX_LOG_BYTES = 10 * 1024 * 1024  # the daemon's log is rotated (to .1) past this at start

Say = Callable[[str], None]  # one line for the user, from the command line's own output


def start(
    options: DaemonOptions, log_level: str, log_path: Path, environ: Mapping[str, str], say: Say
) -> str:
    """Start the daemon as a program of its own (a command line and environment without
    secrets, its options through a pipe, its stderr appended to ``log_path``), then wait for
    its first report and return it: ``ok\\n`` and the summary, the sentence that says why it
    stopped (it is then gone), or "" if it exited without a word. Ctrl-C (KeyboardInterrupt)
    stops it: a node that is not up yet is not left behind."""
    process: subprocess.Popen[bytes] | None = None
    read_fd = write_fd = options_fd = -1
    logfile = open_log(log_path)
    try:
        options_fd = options_pipe(options, log_level)
        read_fd, write_fd = os.pipe()
        process = subprocess.Popen(
            command(options_fd, report_fd=write_fd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=logfile,
            pass_fds=(options_fd, write_fd),
            cwd="/",
            env=clean_environment(environ),
            start_new_session=True,  # Ctrl-C on the terminal reaches `up`, which decides
        )
        for fd in (options_fd, write_fd):  # the daemon's now: its report ends at its exit
            os.close(fd)
        options_fd = write_fd = -1
        message = await_report(read_fd, process, options.server_url, say)
        if not message.startswith("ok\n"):
            # it said why it stops: reap it, or stop it if it takes too long
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                stop_child(process, say, "it did not exit after its error")
        return message
    except KeyboardInterrupt:  # at any point once it was started: a node not up is stopped
        if process is not None:
            stop_child(process, say, "interrupted")
        raise
    finally:
        logfile.close()
        for fd in (options_fd, read_fd, write_fd):
            if fd >= 0:
                os.close(fd)


def await_report(fd: int, process: subprocess.Popen[bytes], server_url: str, say: Say) -> str:
    """The daemon's report; meanwhile a word every PROGRESS_INTERVAL seconds. After the
    READY_TIMEOUT the daemon is stopped before this returns (on Ctrl-C, the caller stops it)."""
    chunks: list[bytes] = []
    start = time.monotonic()
    next_word = start + PROGRESS_INTERVAL
    while True:
        now = time.monotonic()
        if now - start >= READY_TIMEOUT:
            stop_child(process, say, "it did not come up in time")
            return f"the mesh daemon did not come up within {READY_TIMEOUT:g} seconds"
        wait = min(start + READY_TIMEOUT, next_word) - now
        readable, _, _ = select.select([fd], [], [], max(0.0, wait))
        if not readable:
            if time.monotonic() >= next_word:
                waited = round(time.monotonic() - start)
                say(f"waiting for the login server at {server_url} ({waited} s)...")
                next_word += PROGRESS_INTERVAL
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def stop_child(process: subprocess.Popen[bytes], say: Say, why: str) -> None:
    """Stop the daemon that is not up yet (SIGTERM: it abandons the login; then SIGKILL),
    and wait for it; a second Ctrl-C meanwhile does not leave it running."""
    if process.poll() is not None:
        return
    say(f"{why}: stop the mesh daemon (kill -TERM {process.pid})")
    with _sigint_ignored():
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"the mesh daemon did not stop in time: kill -KILL {process.pid}")
            _ask_where(process.pid)
            process.kill()
            process.wait()


def _ask_where(pid: int) -> None:
    """Ask a daemon that does not stop for where it hangs before it is killed: SIGUSR1 makes
    it write every thread's and task's stack to its log (wgpy/cli/stacks.py)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)
        time.sleep(STACKS_WAIT)


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


def open_log(path: Path) -> TextIO:
    """The daemon's log file, for appending (0600, no link followed), rotated to ``.1``
    first when it has grown past MAX_LOG_BYTES."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > MAX_LOG_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace")


def stop(state: StateDir, settings: Settings | None, say: Say) -> bool:
    """Stop the daemon of ``state`` if it runs (SIGTERM, then SIGKILL); whether it ran."""
    pid = state.daemon_pid()
    if pid is None:
        return False
    start = process_start_time(pid)
    name = settings.interface if settings else "the mesh interface"
    say(f"stop the mesh daemon of {name} (kill -TERM {pid})")
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
        if sig != signal.SIGTERM:
            say(f"the mesh daemon did not stop in time: kill -KILL {pid}")
            continue
        say(
            f"the mesh daemon did not stop in time: kill -KILL {pid} (where it was is in "
            f"{state.file(LOG_FILE)})"
        )
        _ask_where(pid)
    if settings is not None:
        uapi_client.has_interface(settings.interface)  # removes a socket left behind
    return True


def _listen_text(address: tuple[str, int] | None) -> str:
    """HOST:PORT as `wgpy up --metrics-listen` takes it ("" for none)."""
    if address is None:
        return ""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
