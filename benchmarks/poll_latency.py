"""`make bench-poll`: the added latency of a ping through wgpy for several WGPY_POLL_US.

One wgpy/wgpy pair (tests/interop/netns.py's lab: two namespaces on a veth) per setting, all
started first and measured in turn within every round, so slow and fast minutes fall on all
of them alike. Per round and pair: 20 pings over the bare veth (its p50 is subtracted) and
PINGS pings through the tunnel at 10 ms, as `make bench` does; the CPU seconds both daemons
spent over the pings. With --load N, N processes that only spin run for the whole measurement
(a loaded machine) and are killed at the end. Prints p50 and p99 of all pings per setting,
their ratio to the first setting, and the daemons' CPU per 1,000 pings. Asserts nothing.
Needs root.

    .venv/bin/python benchmarks/poll_latency.py [--settings 0,300,1000] [--rounds 6]
        [--pings 100] [--load 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import percentile  # noqa: E402
from tunnel import cpu_seconds, daemon_pids, ping_times, say  # noqa: E402

from tests.interop.netns import TUN4, Lab, Pair, make_pair, wait_for  # noqa: E402

SPIN = "while True: pass"


def start_pair(lab: Lab, poll_us: int) -> Pair:
    """A wgpy/wgpy pair whose daemons read WGPY_POLL_US=poll_us (they inherit it)."""
    lab.log_level = "error"
    before = os.environ.get("WGPY_POLL_US")
    os.environ["WGPY_POLL_US"] = str(poll_us)
    try:
        pair = make_pair(lab, "wgpy", "wgpy")
    finally:
        if before is None:
            os.environ.pop("WGPY_POLL_US", None)
        else:
            os.environ["WGPY_POLL_US"] = before
    wait_for(
        lambda: pair.a.ns.ping(TUN4[1], count=1, wait=2) == 1,
        timeout=20,
        what="the tunnel to carry a ping",
    )
    return pair


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="0,300,1000", help="WGPY_POLL_US values")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--pings", type=int, default=100, help="per pair and round")
    parser.add_argument("--load", type=int, default=0, help="spinning processes beside")
    args = parser.parse_args(argv)
    try:
        settings = [int(s) for s in args.settings.split(",")]
    except ValueError:
        parser.error(f"--settings {args.settings!r} is not a list of microseconds like 0,300")
    if any(not 0 <= s <= 10_000 for s in settings) or len(set(settings)) != len(settings):
        parser.error("--settings takes distinct values from 0 to 10000")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wgpy-poll-")))
        pairs = {s: start_pair(stack.enter_context(Lab(tmp / f"p{s}")), s) for s in settings}
        hogs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.load)]
        for hog in hogs:
            stack.callback(hog.wait, 10)
            stack.callback(hog.kill)
        load = f", {args.load} spinning processes beside" if args.load else ""
        say(f"ping latency added by wgpy per WGPY_POLL_US ({', '.join(map(str, settings))}){load}")
        added: dict[int, list[float]] = {s: [] for s in settings}
        cpu: dict[int, float] = dict.fromkeys(settings, 0.0)
        for r in range(args.rounds):
            for setting, pair in pairs.items():
                bare = percentile(ping_times(pair, pair.link.b4, 20), 0.5)
                pids = daemon_pids(pair)
                before = sum(cpu_seconds(p) for p in pids)
                added[setting] += [t - bare for t in ping_times(pair, TUN4[1], args.pings)]
                cpu[setting] += sum(cpu_seconds(p) for p in pids) - before
            say(f"  round {r + 1}/{args.rounds} done")
    first = percentile(added[settings[0]], 0.5)
    for setting in settings:
        p50, p99 = percentile(added[setting], 0.5), percentile(added[setting], 0.99)
        per_1000 = cpu[setting] / len(added[setting]) * 1000
        say(
            f"WGPY_POLL_US={setting:<5} added p50 {p50:.3f} ms  p99 {p99:.3f} ms  "
            f"p50/first {p50 / first:.3f}  daemons' CPU {per_1000:.2f} s per 1,000 pings"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
