"""The mesh node as a process: the real interface, its control socket, signals, PID file.

:func:`serve` runs in the daemon (or in the foreground) after ``wgpy up --login-server``
has prepared the state directory. It reports once, through ``report``: ``(None, summary)``
when the interface is up and the first map applied, or ``(sentence, "")`` if the node
could not start. It stops on SIGTERM or SIGINT, when the control socket
``/var/run/wireguard/IFNAME.sock`` is removed, or when the interface is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...device.interface import Interface
from ...log import get_logger
from ...uapi.paths import SOCKET_DIR
from ...uapi.server import UapiServer, serve_uapi
from .api import MeshClientError, NodeClient
from .node import MeshError, MeshInterface, MeshNode, NodeConfig
from .state import (
    Settings,
    StateDir,
    StateError,
    register_interface,
    unregister_interface,
)
from .system import HostNetwork, IpCommand

__all__ = ["DaemonOptions", "serve"]

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
            "node": {
                "interface": node.interface,
                "listen_port": node.listen_port,
                "hostname": node.hostname,
                "auth_key": node.auth_key,
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
                ),
                ca_cert=None if ca_cert is None else str(ca_cert),
                run_dir=None if run_dir is None else Path(str(run_dir)),
                socket_directory=str(data["socket_directory"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"the daemon's options are incomplete: {e}") from None


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

    interrupted = False

    def stop() -> None:
        if node is not None:
            node.stop()

    def stop_by_signal(signum: int) -> None:
        nonlocal interrupted
        interrupted = interrupted or signum == signal.SIGINT
        stop()

    async def interface_factory(name: str, key: bytes, port: int) -> MeshInterface:
        iface = Interface(name, listen_port=port, private_key=key)
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
                )
            )
        except StateError as e:
            log.warning("cannot save the settings", error=e.message)
        with contextlib.suppress(OSError):
            register_interface(options.node.interface, state.path, options.run_dir)
        reported = True
        report(None, summary(ready))

    try:
        state.write_pid(pid)
    except OSError as e:
        report(f"cannot write the PID file in {state.path}: {e.strerror or e}", "")
        return 1
    status = 0
    try:
        async with NodeClient(options.server_url, token=token, ca_cert=options.ca_cert) as client:
            node = MeshNode(
                options.node,
                client,
                state,
                private_key,
                interface_factory=interface_factory,
                host=host or IpCommand(),
            )
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
        unregister_interface(options.node.interface, state.path, options.run_dir)
        state.remove_pid(pid)
    if not reported:
        report("the mesh node was stopped before it was up", "")
        return INTERRUPTED if interrupted else 1
    log.info("mesh node stopped")
    return status
