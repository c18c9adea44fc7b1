"""A/B: this working tree's wgpy against another revision, through real tunnels, interleaved.

`make bench` compares wgpy with wireguard-go; this compares wgpy with itself, to decide
whether a change to the data path gains anything on a machine whose speed swings by a factor
of two from one minute to the next. Three pairs run side by side for the whole measurement:
wgpy/wgpy at BASE (a git revision, checked out into a temporary worktree), wgpy/wgpy from the
working tree, and wireguard-go/wireguard-go as a reference. Each round measures every pair
once, in turn, so slow and fast minutes fall on all of them alike; the figures are medians
over rounds (latency: the p50 of all pings of all rounds).

    .venv/bin/python benchmarks/ab.py --base HEAD [--rounds 8] [--tests latency,tcp1,udp]

Prints, per test, base, new, reference and new/base. Needs root (namespaces, TUN).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tunnel import measure_tcp, measure_udp, percentile, ping_times, say  # noqa: E402

from tests.interop.netns import TUN4, Lab, Pair, make_pair, wait_for  # noqa: E402

TESTS = ("latency", "tcp1", "tcp4", "udp")


def start_pair(lab: Lab, impl: str, pythonpath: str | None) -> Pair:
    lab.log_level = "error"
    lab.pythonpath = pythonpath
    pair = make_pair(lab, impl, impl)
    wait_for(
        lambda: pair.a.ns.ping(TUN4[1], count=1, wait=2) == 1,
        timeout=20,
        what="the tunnel to carry a ping",
    )
    return pair


def measure(pair: Pair, test: str, seconds: float, pings: int) -> list[float]:
    if test == "latency":  # what the tunnel adds to each ping: minus the bare veth's p50
        bare = percentile(ping_times(pair, pair.link.b4, 20), 0.5)
        return [t - bare for t in ping_times(pair, TUN4[1], pings)]
    if test == "udp":
        return [measure_udp(pair, seconds)[0]]
    return [measure_tcp(pair, seconds, 4 if test == "tcp4" else 1)[0]]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tests", default="latency,tcp1")
    parser.add_argument("--seconds", type=float, default=5, help="per iperf3 run")
    parser.add_argument("--pings", type=int, default=100, help="per pair and round")
    args = parser.parse_args(argv)
    tests = args.tests.split(",")
    if unknown := set(tests) - set(TESTS):
        parser.error(f"unknown tests {sorted(unknown)}; choose from {', '.join(TESTS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wgpy-ab-")))
        base_tree = tmp / "base"
        checkout = subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
            capture_output=True,
            text=True,
        )
        if checkout.returncode != 0:
            reason = checkout.stderr.strip().splitlines()[-1] if checkout.stderr else "?"
            say(f"cannot check out --base {args.base} ({reason}); give a commit, tag or branch")
            return 2
        stack.callback(
            subprocess.run,
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
            check=False,
            capture_output=True,
        )
        pairs = {}
        for label, impl, path in (
            ("base", "wgpy", str(base_tree)),
            ("new", "wgpy", None),
            ("wireguard-go", "wireguard-go", None),
        ):
            lab = stack.enter_context(Lab(tmp / label))
            pairs[label] = start_pair(lab, impl, path)
        say(f"A/B: base {args.base} against the working tree, wireguard-go for reference")
        results: dict[str, dict[str, list[float]]] = {t: {k: [] for k in pairs} for t in tests}
        for r in range(args.rounds):
            for test in tests:
                for label, pair in pairs.items():
                    results[test][label] += measure(pair, test, args.seconds, args.pings)
            say(f"  round {r + 1}/{args.rounds} done")
    for test in tests:
        figures = {k: statistics.median(v) for k, v in results[test].items()}
        unit = "ms added (p50)" if test == "latency" else "Mbit/s (median)"
        say(
            f"{test:8} base {figures['base']:8.3f}  new {figures['new']:8.3f}  "
            f"wireguard-go {figures['wireguard-go']:8.3f}  {unit};  "
            f"new/base {figures['new'] / figures['base']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
