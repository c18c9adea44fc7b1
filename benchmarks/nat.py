"""`make bench-nat`: how fast two mesh nodes behind the NAT lab's routers reach each other.

The NAT lab of the tests (tests/interop/nat_lab.py: an internet bridge, home routers with
nftables) with the real components: coturn on the relay host (tests/interop/coturn.py),
`wgpy server` on the server host (STUN on two ports, `--turn` UDP/TCP/TLS with
`--turn-secret`), and `wgpy up` nodes in the routers' LANs. For every cell of the matrix
(benchmarks/nat_figures.py: easy/easy, easy/hard, hard/hard, firewall/firewall, open/hard,
udp_blocked/easy, and a direct path cut), N trials, each a fresh pair of nodes (new keys and
state directories, the routers' connection tracking flushed: a cold start):

  1. node b joins (`wgpy up`); node a starts `ping -D -i 0.02` at b's mesh address (until a
     is up the pings go nowhere), then joins (`wgpy up`; t0 = the moment it returned: both
     nodes are up, online in the server, and have each other in their maps);
  2. first packet: the first echo reply a receives (the pinger's own timestamps), minus t0;
     direct: when both nodes' logs say `path selected path=direct`, minus t0; the path it
     ends on: peers.json on both sides (what `wgpy status` shows), once it is direct or
     SETTLE seconds after the first packet;
  3. failover cell: once direct, the internet drops UDP between the two routers; the time
     until a reply comes back to a ping sent after the cut (over the relay), and until both
     nodes' logs say `path selected path=relay`;
  4. the first trial of each cell (all with --throughput) runs iperf3 a -> b through the
     tunnel on the path it ended on.

Prints a line per trial, then the table; writes benchmarks/results/nat-<time>.{json,md}
(nat-latest.* link to the newest). Asserts nothing about speed. Everything it starts goes
when it ends, also on Ctrl-C or SIGTERM. Needs root.

    .venv/bin/python benchmarks/nat.py [--trials 10] [--cells easy/easy,hard/hard]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nat_figures import CELLS, Cell, first_path, log_events, markdown, summarize_cell  # noqa: E402
from report import RESULTS, first_reply, header, ping_replies, say, stop_on_sigterm, write  # noqa: E402

from tests.interop.coturn import Coturn  # noqa: E402
from tests.interop.nat_lab import NatLab, Router  # noqa: E402
from tests.interop.netns import (  # noqa: E402
    CommandError,
    Lab,
    Namespace,
    Process,
    iperf3_mbits,
    unique_ifname,
    wait_for,
)
from wgpy.mesh.client.state import StateDir  # noqa: E402
from wgpy.protocol.crypto import public_key  # noqa: E402

WGPY = str(Path(sys.executable).parent / "wgpy")
HTTP_PORT = 8080
STUN_PORTS = (3478, 3479)
NODE_PORT = 41641
PING_INTERVAL = 0.02  # seconds between the pinger's requests: the first packet's resolution
CONNECT_TIMEOUT = 20.0  # seconds after t0 without a reply: the trial did not connect
SETTLE = 3.0  # seconds after the first packet for a path to become direct
FAILOVER_TIMEOUT = 12.0
POLL = 0.05
UP_ADDRESS = re.compile(r" is up as (\d+\.\d+\.\d+\.\d+)")


@dataclass(eq=False)
class MeshNode:
    name: str
    ns: Namespace
    state: Path
    ifname: str
    ipv4: str = ""
    short_key: str = ""  # how the other node's log names this one (peer=...)

    def log(self) -> str:
        try:
            return (self.state / "wgpy.log").read_text(errors="replace")
        except OSError:
            return ""

    def path_kind(self, other: MeshNode) -> str:
        """The kind of path this node saved for ``other`` (peers.json, what `wgpy status`
        shows; "none" without one)."""
        with contextlib.suppress(Exception):  # written while we read
            for peer in StateDir(self.state).read_peers():
                path = peer.get("path")
                if peer.get("hostname") == other.name and isinstance(path, dict):
                    return str(path.get("kind") or "none")
        return "none"

    def selected(self, other: MeshNode, kind: str | None, after: float) -> float | None:
        """When this node's log first says it selected a ``kind`` path (None: any) to
        ``other``."""
        events = log_events(self.log(), "path selected")
        return first_path(events, kind, after=after, peer=other.short_key)


@dataclass(eq=False)
class Place:
    """Where a cell's node sits: a router's LAN, or a public host (``router`` None)."""

    ns: Namespace
    router: Router | None


class Bench:
    """The lab, coturn and the server, built once; pairs of nodes made per trial."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.nat = NatLab(lab, ipv6=False)  # IPv4: the NATs are on the way, not around them
        self.relay: Coturn = self.nat.coturn()
        host = self.nat.server
        self.url = f"http://{host.ipv4}:{HTTP_PORT}"
        state = lab.workdir / "server"
        self.api_key = host.ns.run([WGPY, "server", "--state-dir", str(state), "apikey",
                                    "create"]).stdout.strip()  # fmt: skip
        secret = self.relay.write_secret(lab.workdir / "turn-secret")
        turn = [a for url in self.relay.urls() for a in ("--turn", url)]
        stun = [a for port in STUN_PORTS for a in ("--stun-listen", f"{host.ipv4}:{port}")]
        self.server: Process = host.ns.spawn(
            [WGPY, "server", "--listen", f"{host.ipv4}:{HTTP_PORT}", "--state-dir", str(state),
             *stun, *turn, "--turn-secret", str(secret)],
            log="server",
        )  # fmt: skip
        wait_for(
            lambda: "listening on" in self.server.output() or not self.server.alive,
            timeout=30,
            what="the server to listen",
        )
        if not self.server.alive:
            raise RuntimeError(f"the server exited:\n{self.server.output()[-3000:]}")
        self.admin("users", "create", "bench")
        key = self.admin("preauthkeys", "create", "--user", "bench", "--reusable", "--ephemeral")
        self.auth = str(key["key"])
        self.count = 0

    def admin(self, *args: str) -> Any:
        result = self.nat.server.ns.run(
            [WGPY, "admin", "--server", self.url, "--api-key", self.api_key, "--json", *args],
            timeout=30,
        )
        return json.loads(result.stdout) if result.stdout.strip() else None

    def place(self, kind: str, role: str) -> Place:
        if kind == "open":
            return Place(self.nat.host(role).ns, None)
        router = self.nat.router(kind)  # type: ignore[arg-type]
        return Place(self.nat.node(role, router).ns, router)

    # ------------------------------------------------------------------ nodes

    def up(self, ns: Namespace, started: list[MeshNode]) -> MeshNode:
        """`wgpy up` in ``ns``: a new node (appended to ``started`` first, so that it is taken
        down even when `wgpy up` fails)."""
        self.count += 1
        name = f"n{self.count}"
        node = MeshNode(name, ns, self.lab.workdir / f"node-{name}", unique_ifname("wb"))
        started.append(node)
        result = ns.run(
            ["env", "LOG_LEVEL=info", WGPY, "up", "--login-server", self.url, "--auth-key",
             self.auth, "--state-dir", str(node.state), "--interface", node.ifname,
             "--hostname", name, "--listen-port", str(NODE_PORT),
             "--ca-cert", str(self.relay.ca_file)],  # trusts the relay's TLS certificate
            check=False,
            timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"wgpy up on {name} failed: {result.stderr.strip()[-500:]}")
        m = UP_ADDRESS.search(result.stdout)
        if m is None:
            raise RuntimeError(f"wgpy up on {name} printed no address: {result.stdout!r}")
        node.ipv4 = m.group(1)
        key = StateDir(node.state).read_key()
        if key is not None:
            node.short_key = base64.b64encode(public_key(key)).decode()[:8]
        return node

    def down(self, *nodes: MeshNode) -> None:
        """`wgpy down` on each at once (an ephemeral node is forgotten by the server); a
        daemon that is still there afterwards is killed."""
        procs = [
            subprocess.Popen(
                n.ns.exec_args([WGPY, "down", "--state-dir", str(n.state)]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for n in nodes
        ]
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in nodes:
            pid = StateDir(node.state).daemon_pid()
            if pid is not None and pid in node.ns.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(FileNotFoundError):
                Path(f"/var/run/wireguard/{node.ifname}.sock").unlink()

    # ------------------------------------------------------------------ the cut

    def cut(self, a: Router, b: Router) -> None:
        """The internet drops UDP between the two routers (the relay still reaches both)."""
        rule = (
            "table bridge bench_cut {\n chain forward {\n  type filter hook forward priority 0;\n"
            f"  ip saddr {a.wan4} ip daddr {b.wan4} meta l4proto udp drop\n"
            f"  ip saddr {b.wan4} ip daddr {a.wan4} meta l4proto udp drop\n }}\n}}\n"
        )
        self.nat.internet.run(["nft", "-f", "-"], input=rule, timeout=15)

    def uncut(self) -> None:
        self.nat.internet.run(["nft", "delete", "table", "bridge", "bench_cut"], check=False,
                              timeout=15)  # fmt: skip

    # ------------------------------------------------------------------ a trial

    def trial(self, cell: Cell, a: Place, b: Place, throughput: float) -> dict[str, Any]:
        for place in (a, b):
            if place.router is not None:
                place.router.flush_conntrack()  # a cold start: no mapping left from before
        figures: dict[str, Any] = {}
        nodes: list[MeshNode] = []
        pinger: Process | None = None
        try:
            node_b = self.up(b.ns, nodes)
            # no -w: ping ends at the first error when it has a deadline (until a is up its
            # requests meet "net unreachable"); -c bounds it instead (120 s)
            pinger = a.ns.spawn(
                ["ping", "-n", "-D", "-i", f"{PING_INTERVAL:g}", "-W", "1", "-c",
                 str(int(120 / PING_INTERVAL)), node_b.ipv4],
                log="ping",
            )  # fmt: skip
            time.sleep(0.1)  # the pinger runs before a starts
            start = time.time()
            node_a = self.up(a.ns, nodes)
            t0 = time.time()
            figures["up_s"] = t0 - start
            self.wait_paths(cell, node_a, node_b, pinger, start, t0, figures)
            figures["path_a"], figures["path_b"] = (
                node_a.path_kind(node_b),
                node_b.path_kind(node_a),
            )
            allocated = log_events(node_a.log(), "relay allocated")
            if allocated:
                figures["relay_transport"] = allocated[-1].fields.get("transport")
            if cell.failover:
                self.failover(a, b, node_a, node_b, pinger, figures)
            if throughput and figures.get("first_packet_s") is not None:
                pinger.stop()
                figures["throughput_path"] = node_a.path_kind(node_b)
                figures["throughput_mbps"] = self.iperf3(node_a, node_b, throughput)
        except (RuntimeError, TimeoutError, subprocess.SubprocessError, OSError, CommandError) as e:
            figures["error"] = str(e).splitlines()[0][:300]
        finally:
            if pinger is not None:
                pinger.stop()
            if cell.failover:
                self.uncut()
            self.down(*nodes)
            for ns in (a.ns, b.ns):  # nothing of this trial may hold the port in the next
                for pid in ns.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        return figures

    def wait_paths(
        self,
        cell: Cell,
        node_a: MeshNode,
        node_b: MeshNode,
        pinger: Process,
        start: float,
        t0: float,
        figures: dict[str, Any],
    ) -> None:
        """Until the pair is direct both ways, or SETTLE seconds after the first packet."""
        deadline = t0 + CONNECT_TIMEOUT
        first = None
        while time.time() < deadline:
            time.sleep(POLL)
            if first is None and (reply := first_reply(ping_replies(pinger.output()))):
                first = reply.received
                figures["first_packet_s"] = first - t0
                figures["first_packet_from_start_s"] = first - start
                deadline = min(deadline, time.time() + SETTLE)
            if "path_s" not in figures:
                paths = [node_a.selected(node_b, None, start), node_b.selected(node_a, None, start)]
                if all(p is not None for p in paths):
                    figures["path_s"] = max(p for p in paths if p is not None) - t0
            direct = [node_a.selected(node_b, "direct", start),
                      node_b.selected(node_a, "direct", start)]  # fmt: skip
            if first is not None and all(d is not None for d in direct):
                figures["direct_s"] = max(d for d in direct if d is not None) - t0
                break
        if first is None:
            raise TimeoutError(f"no reply within {CONNECT_TIMEOUT:g} s of both nodes being up")
        time.sleep(0.6)  # peers.json is saved at most every 0.5 s

    def failover(
        self,
        a: Place,
        b: Place,
        node_a: MeshNode,
        node_b: MeshNode,
        pinger: Process,
        figures: dict[str, Any],
    ) -> None:
        if figures.get("direct_s") is None or a.router is None or b.router is None:
            raise RuntimeError("the pair was not direct both ways, so there is nothing to cut")
        time.sleep(0.5)  # traffic flows on the direct path
        cut = time.time()
        self.cut(a.router, b.router)
        deadline = cut + FAILOVER_TIMEOUT
        while time.time() < deadline:
            time.sleep(POLL)
            back = first_reply(ping_replies(pinger.output()), sent_after=cut)
            relay = [node_a.selected(node_b, "relay", cut), node_b.selected(node_a, "relay", cut)]
            if back is not None and "failover_s" not in figures:
                figures["failover_s"] = back.received - cut
            if all(r is not None for r in relay) and "relay_switch_s" not in figures:
                figures["relay_switch_s"] = max(r for r in relay if r is not None) - cut
            if "failover_s" in figures and "relay_switch_s" in figures:
                break
        time.sleep(0.6)
        figures["path_a"], figures["path_b"] = node_a.path_kind(node_b), node_b.path_kind(node_a)
        if "failover_s" not in figures:
            raise TimeoutError(f"no reply over the relay within {FAILOVER_TIMEOUT:g} s of the cut")

    def iperf3(self, node_a: MeshNode, node_b: MeshNode, seconds: float) -> float:
        """TCP a -> b through the tunnel (Mbit/s received)."""
        return iperf3_mbits(node_a.ns, node_b.ns, node_b.ipv4, seconds)


def describe(name: str, figures: dict[str, Any]) -> str:
    if figures.get("error"):
        return f"failed: {figures['error']}"
    parts = []
    for key, label in (("path_s", "paths"), ("first_packet_s", "first packet"),
                       ("direct_s", "direct"),
                       ("failover_s", "packets again after the cut"),
                       ("relay_switch_s", "both on the relay")):  # fmt: skip
        if figures.get(key) is not None:
            parts.append(f"{label} {figures[key]:.2f} s")
    parts.append(f"ends {figures.get('path_a')}/{figures.get('path_b')}")
    if figures.get("relay_transport"):
        parts.append(f"relay over {figures['relay_transport']}")
    if figures.get("throughput_mbps") is not None:
        parts.append(f"{figures['throughput_mbps']:.0f} Mbit/s ({figures['throughput_path']})")
    parts.append(f"(up {figures.get('up_s', 0):.2f} s)")
    return ", ".join(parts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="per cell (default 10)")
    parser.add_argument("--cells", default=",".join(CELLS),
                        help=f"comma-separated, of: {', '.join(CELLS)}")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=3.0, help="per iperf3 run")
    parser.add_argument("--throughput", action="store_true",
                        help="iperf3 in every trial (default: the first of each cell)")  # fmt: skip
    parser.add_argument("--no-throughput", action="store_true", help="no iperf3 at all")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cells = [c for c in args.cells.split(",") if c]
    if unknown := [c for c in cells if c not in CELLS]:
        parser.error(f"unknown cells {unknown}; choose from {', '.join(CELLS)}")
    if args.trials < 1 or args.seconds <= 0:
        parser.error("--trials must be >= 1 and --seconds > 0")
    if os.geteuid() != 0:
        print("bench-nat: this creates network namespaces; run it as root", file=sys.stderr)
        return 1
    stop_on_sigterm()
    command = "make bench-nat" if not argv else "benchmarks/nat.py " + " ".join(argv)
    started = datetime.datetime.now(datetime.UTC)
    trials: dict[str, list[dict[str, Any]]] = {}
    total, done = len(cells) * args.trials, 0
    with tempfile.TemporaryDirectory(prefix="wgpy-bench-nat-") as tmp:
        try:
            with Lab(Path(tmp)) as lab:
                say("building the lab: internet, coturn, wgpy server (STUN on 2 ports, TURN)")
                bench = Bench(lab)
                for name in cells:
                    cell = CELLS[name]
                    a = bench.place(cell.a, f"{cell.a[:4]}a")
                    b = bench.place(cell.b, f"{cell.b[:4]}b")
                    trials[name] = []
                    for i in range(args.trials):
                        done += 1
                        tput = 0.0
                        if not args.no_throughput and (args.throughput or i == 0):
                            tput = args.seconds
                        figures = {"trial": i + 1, **bench.trial(cell, a, b, tput)}
                        trials[name].append(figures)
                        say(f"[{done}/{total}] {name} trial {i + 1}: {describe(name, figures)}")
        except KeyboardInterrupt:
            say("interrupted: cleaned up, nothing written")
            return 130
    result: dict[str, Any] = {
        **header(started, command, args.trials),
        "settings": {
            "ping_interval_s": PING_INTERVAL,
            "settle_s": SETTLE,
            "iperf3_seconds": args.seconds,
        },
        "cells": {name: summarize_cell(name, t) for name, t in trials.items()},
        "per_trial": trials,
    }
    write(args.out, "nat", started, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
