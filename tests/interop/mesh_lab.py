"""A mesh in network namespaces: `wgpy server` replicas in a hub namespace, nodes joined with
`wgpy up --login-server` in namespaces of their own, all on one flat underlay (a bridge).

    hub: br0 10.99.0.1/24 (servers on :8080, :8081, ...)
      +-- node a: eth 10.99.0.11/24, mesh interface from `wgpy up --login-server`
      +-- node b: eth 10.99.0.12/24
      ...

Everything belongs to a `Lab`: the namespaces (and whatever runs in them), the servers, and
the nodes, which are taken down with `wgpy down` before their namespaces go.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgpy.mesh.client.state import StateDir

from .netns import (
    SOCKET_DIR,
    STACKS_WAIT,
    CommandError,
    Lab,
    Namespace,
    Process,
    parse_dump,
    run,
    unique_ifname,
    wait_for,
)

WGPY = str(Path(sys.executable).parent / "wgpy")
HUB4 = "10.99.0.1"
FIRST_NODE = 11  # node i gets 10.99.0.(11 + i)
SERVER_PORT = 8080  # replica i serves on 8080 + i
NODE_ENV = {"LOG_LEVEL": "info"}


@dataclass(eq=False)  # nodes are compared (and hashed) by identity
class MeshNode:
    name: str
    ns: Namespace
    underlay: str
    state_dir: Path
    ifname: str
    ipv4: str = ""
    ipv6: str = ""
    public_key: str = ""
    id: int = 0
    joined: bool = False

    def __repr__(self) -> str:
        return f"MeshNode({self.name})"

    def peers(self) -> set[str]:
        """The public keys of the node's WireGuard peers, as `wg show dump` lists them."""
        result = self.ns.run(["wg", "show", self.ifname, "dump"], check=False, timeout=10)
        if result.returncode != 0:
            return set()
        return set(parse_dump(result.stdout).peers)

    def routes(self) -> str:
        return self.ns.ip("route", "show", "dev", self.ifname, check=False).stdout

    def ping(self, other: MeshNode, *, count: int = 1, wait: float = 1, ipv6: bool = False) -> int:
        """Replies to `count` pings of the other node's overlay address (0 without a route)."""
        try:
            return self.ns.ping(other.ipv6 if ipv6 else other.ipv4, count=count, wait=wait)
        except CommandError as e:
            if "Network is unreachable" in str(e):
                return 0
            raise

    def daemon_pid(self) -> int | None:
        return StateDir(self.state_dir).daemon_pid()

    def log(self, lines: int = 40) -> str:
        path = self.state_dir / "wgpy.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Mesh:
    lab: Lab
    database_url: str | None = None
    replicas: int = 1
    server_args: tuple[str, ...] = ()  # more options for `wgpy server`
    hub: Namespace = field(init=False)
    servers: dict[int, Process] = field(init=False, default_factory=dict)
    nodes: dict[str, MeshNode] = field(init=False, default_factory=dict)
    api_key: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.workdir = self.lab.workdir
        self.server_state = self.workdir / "server"
        self.hub = self.lab.namespace("hub")
        # the bridge keeps one MAC address as nodes are added, and its frames skip the
        # hub's netfilter where br_netfilter is loaded (as in nat_lab.py; netns.py says why)
        self.hub.bridges_skip_netfilter()
        self.hub.add_bridge("br0")
        self.hub.ip("addr", "add", f"{HUB4}/24", "dev", "br0")
        self.hub.ip("link", "set", "br0", "up")
        created = run([WGPY, "server", *self._database_args(), "apikey", "create"], timeout=60)
        self.api_key = created.stdout.strip()
        for replica in range(self.replicas):
            self.start_server(replica)

    # ------------------------------------------------------------------ servers

    def url(self, replica: int = 0) -> str:
        return f"http://{HUB4}:{SERVER_PORT + replica}"

    def _database_args(self) -> list[str]:
        if self.database_url:
            return ["--database-url", self.database_url]
        return ["--state-dir", str(self.server_state)]

    def start_server(self, replica: int = 0) -> Process:
        listen = f"{HUB4}:{SERVER_PORT + replica}"
        process = self.hub.spawn(
            [WGPY, "server", "--listen", listen, *self._database_args(), *self.server_args],
            log=f"server{replica}",
        )
        self.servers[replica] = process
        wait_for(
            lambda: "listening on" in process.output() or not process.alive,
            timeout=30,
            what=f"server replica {replica} to listen",
        )
        if not process.alive:
            raise AssertionError(f"the server did not start:\n{process.output()[-3000:]}")
        return process

    def stop_server(self, replica: int = 0) -> None:
        status = self.servers.pop(replica).stop(timeout=10)
        assert status == 0, f"the server exited with status {status} on SIGTERM"

    def admin(self, *args: str, replica: int = 0) -> Any:
        """`wgpy admin --json ...` from the hub namespace; its parsed output."""
        result = self.hub.run(
            [WGPY, "admin", "--server", self.url(replica), "--api-key", self.api_key, "--json",
             *args],
            timeout=30,
        )  # fmt: skip
        return json.loads(result.stdout) if result.stdout.strip() else None

    def auth_key(self, user: str = "alice", *options: str) -> str:
        if user not in {u["name"] for u in self.admin("users", "list")}:
            self.admin("users", "create", user)
        key: str = self.admin("preauthkeys", "create", "--user", user, *options)["key"]
        return key

    def server_nodes(self, replica: int = 0) -> dict[str, dict[str, Any]]:
        return {n["hostname"]: n for n in self.admin("nodes", "list", replica=replica)}

    # ------------------------------------------------------------------ nodes

    def add_node(self, name: str) -> MeshNode:
        ns = self.lab.namespace(name)
        i = len(self.nodes)
        address = f"10.99.0.{FIRST_NODE + i}"
        hub_dev, node_dev = f"h{i}{name[:8]}", f"eth{i}"
        run(["ip", "link", "add", hub_dev, "netns", self.hub.name, "type", "veth",
             "peer", "name", node_dev, "netns", ns.name])  # fmt: skip
        self.hub.ip("link", "set", hub_dev, "master", "br0", "up")
        ns.ip("addr", "add", f"{address}/24", "dev", node_dev)
        ns.ip("link", "set", node_dev, "up")
        node = MeshNode(name, ns, address, self.workdir / f"node-{name}", unique_ifname("wm"))
        self.nodes[name] = node
        self.lab.callback(self._stop_daemon, node)  # before its namespace goes (LIFO)
        return node

    def up(
        self,
        node: MeshNode,
        *,
        auth_key: str | None = None,
        replica: int = 0,
        check: bool = True,
        extra: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        args = [WGPY, "up", "--login-server", self.url(replica)]
        args += ["--state-dir", str(node.state_dir), "--interface", node.ifname]
        args += ["--hostname", node.name, *extra]
        if auth_key:
            args += ["--auth-key", auth_key]
        env_args = ["env", *(f"{k}={v}" for k, v in NODE_ENV.items())]
        result = node.ns.run([*env_args, *args], check=False, timeout=90)
        if check and result.returncode != 0:
            raise AssertionError(
                f"wgpy up on {node.name} failed ({result.returncode}): {result.stderr}\n"
                f"{node.log()}"
            )
        if result.returncode == 0:
            node.joined = True
            m = re.search(r" is up as ([\d.]+), ([0-9a-f:]+)", result.stdout)
            assert m, result.stdout
            node.ipv4, node.ipv6 = m.group(1), m.group(2)
            me = self.server_nodes(replica)[node.name]
            node.public_key, node.id = me["public_key"], me["id"]
        return result

    def join(self, *names: str, auth_key: str, replica: int = 0) -> list[MeshNode]:
        nodes = [self.add_node(name) for name in names]
        for node in nodes:
            self.up(node, auth_key=auth_key, replica=replica)
        return nodes

    def down(self, node: MeshNode) -> None:
        result = node.ns.run(
            [WGPY, "down", "--state-dir", str(node.state_dir)], check=False, timeout=60
        )
        assert result.returncode == 0, f"wgpy down on {node.name}: {result.stderr}"
        node.joined = False

    def _stop_daemon(self, node: MeshNode) -> None:
        """SIGTERM to the node's daemon (only if it runs in the node's namespace, so ours):
        it removes its interface and control socket on the way out."""
        pid = node.daemon_pid()
        if pid is None or pid not in node.ns.pids():
            # killed by the test: its control socket (our unique name) outlived it
            with contextlib.suppress(FileNotFoundError):
                (SOCKET_DIR / f"{node.ifname}.sock").unlink()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            wait_for(
                lambda: pid not in node.ns.pids(),
                timeout=10,
                what=f"{node.name}'s daemon to exit",
            )
        except TimeoutError:  # where it hangs (wgpy/cli/stacks.py), into its log
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
            time.sleep(STACKS_WAIT)
            print(f"\n===== {node.name}'s daemon did not stop after SIGTERM\n{node.log(200)}")

    # ------------------------------------------------------------------ assertions

    def wait_peers(self, node: MeshNode, expected: set[MeshNode], timeout: float) -> None:
        keys = {n.public_key for n in expected}
        wait_for(
            lambda: node.peers() == keys,
            timeout=timeout,
            interval=0.05,
            what=f"{node.name}'s peers to be {sorted(n.name for n in expected)} "
            f"(now {self._names(node.peers())})",
        )

    def wait_ping(self, src: MeshNode, dst: MeshNode, *, timeout: float = 20) -> None:
        wait_for(
            lambda: src.ping(dst) == 1,
            timeout=timeout,
            interval=0.2,
            what=f"{src.name} to ping {dst.name} ({dst.ipv4}) over the mesh",
        )

    def _names(self, keys: set[str]) -> list[str]:
        by_key = {n.public_key: n.name for n in self.nodes.values()}
        return sorted(by_key.get(k, k[:8]) for k in keys)

    def logs(self) -> str:
        return "\n".join(f"----- node {n.name}\n{n.log()}" for n in self.nodes.values())
