"""A/B: this working tree's wgpy against another revision, through real tunnels, interleaved.

`make bench` compares wgpy with wireguard-go; this compares wgpy with itself, to decide
whether a change to the data path gains anything on a machine whose speed swings by a factor
of two from one minute to the next. Three pairs run side by side for the whole measurement:
wgpy/wgpy at BASE (a git revision, checked out into a temporary worktree), wgpy/wgpy from the
working tree, and wireguard-go/wireguard-go as a reference. Each round measures every pair
once, in turn, so slow and fast minutes fall on all of them alike; the figures are medians
over rounds (latency: the p50 of all pings of all rounds).

    .venv/bin/python benchmarks/ab.py --base HEAD [--rounds 8] [--tests latency,tcp1,udp]
        [--mux off|on|compare]

Prints, per test, base, new, reference and new/base. Needs root (namespaces, TUN).

`--mux` measures the data path with the STUN demultiplexer (wgpy.nat.stunmux) installed on
each wgpy interface's bind, as a mesh node has it (benchmarks/mux_userspace.py): `on` runs
both base and new with it (the base revision must have wgpy.nat.stunmux); `compare` runs the
working tree twice instead, without the mux ("new") and with it ("new+mux"), beside
wireguard-go, and prints new+mux/new: what the demux costs, from the same rounds.

`--newest PATH` (default: $WIREGUARD_GO_NEWEST), a wireguard-go built from source, adds a
second reference pair beside Debian's: both run in every round, and each test prints
new/wireguard-go and new/wireguard-go-newest too. The TCP tests also print, per pair, the
drops of both TUNs' transmit queues (tx_dropped) and iperf3's retransmits, summed over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import percentile  # noqa: E402
from tunnel import (  # noqa: E402
    NEWEST_ENV,
    measure_tcp,
    measure_udp,
    ping_times,
    say,
    wireguard_go_version,
)
from tunnel_figures import DEBIAN, NEWEST  # noqa: E402

from tests.interop.netns import (  # noqa: E402
    IMPLEMENTATIONS,
    TUN4,
    Lab,
    Pair,
    make_pair,
    wait_for,
)

TESTS = ("latency", "tcp1", "tcp4", "udp")
MUX_MODES = ("off", "on", "compare")
MUXED = "wgpy+mux"  # the implementation name of wgpy-userspace with the mux (netns.py)
MUX_PROGRAM = ROOT / "benchmarks" / "mux_userspace.py"


def install_muxed(directory: Path) -> None:
    """Make `MUXED` an implementation the lab can start: a launcher in ``directory`` that
    runs benchmarks/mux_userspace.py with this Python (wgpy from the pair's PYTHONPATH)."""
    launcher = directory / "wgpy-userspace-mux"
    launcher.write_text(f"#!{sys.executable}\nimport runpy, sys\n"
                        f"sys.argv[0] = {str(MUX_PROGRAM)!r}\n"
                        f"runpy.run_path({str(MUX_PROGRAM)!r}, run_name='__main__')\n")  # fmt: skip
    launcher.chmod(0o755)
    IMPLEMENTATIONS[MUXED] = str(launcher)


def has_mux(tree: Path) -> bool:
    return (tree / "wgpy" / "nat" / "stunmux.py").exists()


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


def measure(
    pair: Pair, test: str, seconds: float, pings: int, counts: dict[str, float]
) -> list[float]:
    """The test's figures for one pair and round; a TCP test adds its TUN drops and
    retransmits to ``counts``."""
    if test == "latency":  # what the tunnel adds to each ping: minus the bare veth's p50
        bare = percentile(ping_times(pair, pair.link.b4, 20), 0.5)
        return [t - bare for t in ping_times(pair, TUN4[1], pings)]
    if test == "udp":
        return [measure_udp(pair, seconds)[0]]
    tcp = measure_tcp(pair, seconds, 4 if test == "tcp4" else 1)
    for key in ("tun_drops", "retransmits"):
        counts[key] = counts.get(key, 0.0) + tcp[key]
    return [tcp["mbps"]]


def quotient(x: float, y: float) -> str:
    return f"{x / y:.3f}" if y else "-"


def spread(a: list[float], b: list[float]) -> str:
    """b/a round by round (the same minute's noise on both): median and range."""
    ratios = [y / x for x, y in zip(a, b, strict=True) if x]
    if len(ratios) < 2:
        return ""
    return f" (per round {statistics.median(ratios):.3f}, {min(ratios):.3f}-{max(ratios):.3f})"


def checkout_base(stack: contextlib.ExitStack, base_tree: Path, base: str) -> bool:
    """Check ``base`` out into ``base_tree`` (a detached worktree, removed when ``stack``
    closes); False, with a message, if git cannot."""
    checkout = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), base],
        capture_output=True,
        text=True,
    )
    if checkout.returncode != 0:
        reason = checkout.stderr.strip().splitlines()[-1] if checkout.stderr else "?"
        say(f"cannot check out --base {base} ({reason}); give a commit, tag or branch")
        return False
    stack.callback(
        subprocess.run,
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
        check=False,
        capture_output=True,
    )
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tests", default="latency,tcp1")
    parser.add_argument("--seconds", type=float, default=5, help="per iperf3 run")
    parser.add_argument("--pings", type=int, default=100, help="per pair and round")
    parser.add_argument(
        "--mux",
        choices=MUX_MODES,
        default="off",
        help="the STUN demux on wgpy's binds: on (base and new), compare (new without and with)",
    )
    parser.add_argument(
        "--newest",
        metavar="PATH",
        default=os.environ.get(NEWEST_ENV) or None,
        help=f"a wireguard-go built from source, a second reference (default: ${NEWEST_ENV})",
    )
    args = parser.parse_args(argv)
    tests = args.tests.split(",")
    if unknown := set(tests) - set(TESTS):
        parser.error(f"unknown tests {sorted(unknown)}; choose from {', '.join(TESTS)}")
    if args.newest:
        try:
            wireguard_go_version(args.newest)
        except ValueError as e:
            say(f"bench-ab: {e}")
            return 2
        IMPLEMENTATIONS[NEWEST] = str(Path(args.newest).resolve())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wgpy-ab-")))
        base_tree = tmp / "base"
        # --mux compare measures the working tree alone: no checkout (and no worktree that
        # another run beside it could see come and go)
        if args.mux != "compare" and not checkout_base(stack, base_tree, args.base):
            return 2
        if args.mux != "off":
            install_muxed(tmp)
        if args.mux == "on" and not has_mux(base_tree):
            say(f"--base {args.base} has no wgpy/nat/stunmux.py, so it cannot run with the mux; "
                "use --mux compare (the working tree without and with it)")  # fmt: skip
            return 2
        wgpy = MUXED if args.mux == "on" else "wgpy"
        plan: tuple[tuple[str, str, str | None], ...] = (
            ("base", wgpy, str(base_tree)),
            ("new", wgpy, None),
            (DEBIAN, DEBIAN, None),
        )
        if args.mux == "compare":
            plan = (plan[1], ("new+mux", MUXED, None), plan[2])
        if args.newest:
            plan += ((NEWEST, NEWEST, None),)
        pairs = {}
        for label, impl, path in plan:
            lab = stack.enter_context(Lab(tmp / label.replace("+", "-")))
            pairs[label] = start_pair(lab, impl, path)
        refs = " and ".join(label for label in (DEBIAN, NEWEST) if label in pairs)
        if args.mux == "compare":
            say(f"A/B: the working tree without the STUN demux and with it, {refs} for "
                "reference")  # fmt: skip
        else:
            mux = " (both with the STUN demux)" if args.mux == "on" else ""
            say(f"A/B: base {args.base} against the working tree{mux}, {refs} for "
                "reference")  # fmt: skip
        results: dict[str, dict[str, list[float]]] = {t: {k: [] for k in pairs} for t in tests}
        per_round: dict[str, dict[str, list[float]]] = {t: {k: [] for k in pairs} for t in tests}
        counts: dict[str, dict[str, dict[str, float]]] = {t: {k: {} for k in pairs} for t in tests}
        for r in range(args.rounds):
            for test in tests:
                for label, pair in pairs.items():
                    values = measure(pair, test, args.seconds, args.pings, counts[test][label])
                    results[test][label] += values
                    per_round[test][label].append(statistics.median(values))
            say(f"  round {r + 1}/{args.rounds} done")
    a, b = ("new", "new+mux") if args.mux == "compare" else ("base", "new")
    references = [label for label in (DEBIAN, NEWEST) if label in pairs]
    for test in tests:
        figures = {k: statistics.median(v) for k, v in results[test].items()}
        unit = "ms added (p50)" if test == "latency" else "Mbit/s (median)"
        shown = "  ".join(f"{k} {figures[k]:8.3f}" for k in (a, b, *references))
        line = f"{test:8} {shown}  {unit}"
        for ref in (a, *references):
            line += f";  {b}/{ref} {quotient(figures[b], figures[ref])}"
            line += spread(per_round[test][ref], per_round[test][b])
        say(line)
        if test.startswith("tcp"):
            for key, label in (("tun_drops", "TUN drops"), ("retransmits", "retransmits")):
                summed = ", ".join(f"{k} {counts[test][k][key]:.0f}" for k in pairs)
                say(f"  {test} {label} (all rounds): {summed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
