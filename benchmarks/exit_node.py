"""`make bench-exit`: TCP throughput through an exit node against node-to-node direct.

The namespaces of tests/interop/test_exit_node.py, with a real `wgpy server` (SQLite):

    hub: br0 10.99.0.1 (server :8080)
      +-- exit    10.99.0.11 (`wgpy up --advertise-exit-node`, approved) -- inet 10.1.0.2
      +-- laptop  10.99.0.12 (`wgpy up --exit-node exit`)

Each round runs iperf3 (one TCP stream, SECONDS long) twice, interleaved: laptop -> the exit
node's overlay address (direct: one tunnel hop, what two mesh nodes get) and laptop -> the
"internet" host behind the exit node (through the tunnel, forwarded and masqueraded by the
exit node). Prints each run and the medians of ROUNDS rounds and their ratio; writes
benchmarks/results/exit-<time>.{json,md}. Asserts nothing about speed. Needs root.

    .venv/bin/python benchmarks/exit_node.py [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tests.interop.mesh_lab import HUB4, Mesh, MeshNode  # noqa: E402
from tests.interop.netns import Lab, Namespace, iperf3_mbits, wait_for  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def build(lab: Lab) -> tuple[MeshNode, MeshNode, Namespace, str]:
    """The lab: the exit node approved, the laptop using it; the internet host's address."""
    mesh = Mesh(lab)
    key = mesh.auth_key("alice", "--reusable")
    exit_node = mesh.add_node("exit")
    internet = lab.namespace("inet")
    link = lab.veth(exit_node.ns, internet)
    exit_node.ns.ip("route", "add", "default", "via", link.b4)
    laptop = mesh.add_node("laptop")
    laptop.ns.ip("route", "add", "default", "via", HUB4)
    mesh.up(exit_node, auth_key=key, extra=["--advertise-exit-node"])
    mesh.admin("routes", "approve", str(exit_node.id), "0.0.0.0/0", "::/0")
    mesh.up(laptop, auth_key=key, extra=["--exit-node", "exit"])
    wait_for(lambda: laptop.ns.ping(link.b4, count=1, wait=1) == 1, timeout=20,
             what="the internet host through the exit node")  # fmt: skip
    mesh.wait_ping(laptop, exit_node)
    return laptop, exit_node, internet, link.b4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/exit_node.py needs root (network namespaces)", file=sys.stderr)
        return 2
    runs: dict[str, list[float]] = {"direct": [], "exit": []}
    with tempfile.TemporaryDirectory(prefix="wgpy-bench-exit-") as tmp, Lab(Path(tmp)) as lab:
        laptop, exit_node, internet, far = build(lab)
        for n in range(args.rounds):
            direct = iperf3_mbits(laptop.ns, exit_node.ns, exit_node.ipv4, args.seconds)
            through = iperf3_mbits(laptop.ns, internet, far, args.seconds)
            runs["direct"].append(direct)
            runs["exit"].append(through)
            print(f"round {n + 1}: direct {direct:.0f} Mbit/s, through the exit node "
                  f"{through:.0f} Mbit/s", flush=True)  # fmt: skip
            time.sleep(0.5)
    direct, through = statistics.median(runs["direct"]), statistics.median(runs["exit"])
    ratio = through / direct if direct else 0.0
    print(f"median of {args.rounds}: direct {direct:.0f} Mbit/s, through the exit node "
          f"{through:.0f} Mbit/s ({ratio:.2f}x)")  # fmt: skip
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {
        "rounds": args.rounds,
        "seconds": args.seconds,
        "runs_mbps": runs,
        "median_direct_mbps": direct,
        "median_exit_mbps": through,
        "ratio": ratio,
    }
    (RESULTS / f"exit-{stamp}.json").write_text(json.dumps(figures, indent=2) + "\n")
    (RESULTS / f"exit-{stamp}.md").write_text(
        "| path | median Mbit/s | runs |\n|---|---|---|\n"
        f"| node to node (direct) | {direct:.0f} | "
        f"{', '.join(f'{r:.0f}' for r in runs['direct'])} |\n"
        f"| through the exit node | {through:.0f} | "
        f"{', '.join(f'{r:.0f}' for r in runs['exit'])} |\n"
        f"\nratio {ratio:.2f}, one TCP stream, {args.seconds:g} s a run\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
