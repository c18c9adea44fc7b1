"""`make bench`: wgpy beside wireguard-go through real tunnels, ratios from the same run.

Two network namespaces joined by a veth pair, a userspace WireGuard interface in each. For
every pairing (wgpy to wgpy, Debian's wireguard-go to itself, wgpy to wireguard-go), one after
the other within each round, and several rounds:

  tcp1     iperf3, one TCP stream, a to b (Mbit/s received)
  tcp4     iperf3, 4 TCP streams
  udp      iperf3 UDP at the highest rate the sender manages (delivered Mbit/s and loss)
  latency  ping through the tunnel and over the bare veth; what the tunnel adds (p50, p99)
  cpu      CPU seconds both daemons spent per GB moved by the one-stream run
  rss      the daemons' peak RSS (VmHWM) at the end of the pairing's run

plus the sans-IO core's own figures (benchmarks/core.py). Results: a JSON file, a Markdown
table and a PNG chart under benchmarks/results/, and on the terminal the ratios
wgpy / wireguard-go with medians and spreads. Everything it creates (namespaces, processes,
sockets) is removed at the end, also on Ctrl-C. Needs root.

    .venv/bin/python benchmarks/tunnel.py [--rounds 3] [--seconds 10] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.netns import (  # noqa: E402  (the repository's namespace lab)
    TUN4,
    Lab,
    Pair,
    b64,
    iperf3_json,
    make_pair,
    wait_for,
)

PAIRINGS = [("wgpy", "wgpy"), ("wireguard-go", "wireguard-go"), ("wgpy", "wireguard-go")]
BASELINE = "wireguard-go/wireguard-go"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PORT = 5201
UDP_PAYLOAD = 1392  # an inner MTU of 1420 less the IPv4 and UDP headers
RESULTS = ROOT / "benchmarks" / "results"

# metric -> (label, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "tcp1_mbps": ("TCP, 1 stream", "Mbit/s", True),
    "tcp4_mbps": ("TCP, 4 streams", "Mbit/s", True),
    "udp_mbps": ("UDP delivered", "Mbit/s", True),
    "udp_loss_pct": ("UDP loss", "%", False),
    "added_latency_p50_ms": ("latency added, p50", "ms", False),
    "added_latency_p99_ms": ("latency added, p99", "ms", False),
    "cpu_s_per_gb": ("CPU per GB (both daemons)", "s", False),
    "peak_rss_mb": ("peak RSS (larger daemon)", "MB", False),
}


def say(text: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        print(text, flush=True)


def name_of(pairing: tuple[str, str]) -> str:
    return f"{pairing[0]}/{pairing[1]}"


# ------------------------------------------------------------------ per-process figures


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def daemon_pids(pair: Pair) -> list[int]:
    pids = []
    for side in (pair.a, pair.b):
        assert side.proc is not None and side.proc.alive, f"{side} died: {side.log()}"
        pids.append(side.proc.pid)
    return pids


# ------------------------------------------------------------------ measurements


def iperf3(pair: Pair, seconds: float, *extra: str) -> dict[str, Any]:
    server = pair.b.ns.spawn(["iperf3", "-s", "-1", "-B", TUN4[1], "-p", str(PORT)], log="iperf3")
    try:
        wait_for(lambda: pair.b.ns.tcp_listening(PORT), timeout=10, what="iperf3 -s to listen")
        result = pair.a.ns.run(
            ["iperf3", "-c", TUN4[1], "-p", str(PORT), "-t", f"{seconds:g}", "-J",
             "--connect-timeout", "5000", *extra],
            check=False,
            timeout=seconds + 60,
        )  # fmt: skip
        data = iperf3_json(result)
        if result.returncode != 0 or "error" in data:
            raise RuntimeError(f"iperf3 failed: {data.get('error', result.stderr)}")
        return data
    finally:
        server.stop()


def measure_tcp(pair: Pair, seconds: float, streams: int) -> tuple[float, float]:
    """(Mbit/s received, CPU seconds per GB of both daemons)."""
    pids = daemon_pids(pair)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    extra = ["-P", str(streams)] if streams > 1 else []
    data = iperf3(pair, seconds, *extra)
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    received = data["end"]["sum_received"]
    gigabytes = received["bytes"] / 1e9
    return received["bits_per_second"] / 1e6, cpu / gigabytes if gigabytes else float("inf")


def measure_udp(pair: Pair, seconds: float) -> tuple[float, float]:
    """(delivered Mbit/s, loss %) with the sender as fast as it goes."""
    data = iperf3(pair, seconds, "-u", "-b", "0", "-l", str(UDP_PAYLOAD))
    received = data["end"]["sum_received"]  # the receiver's view ("sum" is the sender's)
    return received["bits_per_second"] / 1e6, float(received.get("lost_percent", 0.0))


PING_TIME = re.compile(r"time=([\d.]+) ms")


def ping_times(pair: Pair, target: str, count: int) -> list[float]:
    result = pair.a.ns.run(
        ["ping", "-n", "-c", str(count), "-i", "0.01", "-W", "1", target],
        check=False,
        timeout=count * 0.05 + 30,
    )
    times = [float(t) for t in PING_TIME.findall(result.stdout)]
    if len(times) < count * 0.9:
        raise RuntimeError(f"ping {target}: {len(times)} of {count} replies")
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_latency(pair: Pair, count: int) -> tuple[float, float]:
    """What the tunnel adds to the round trip, p50 and p99 (ms), against the bare veth."""
    bare = ping_times(pair, pair.link.b4, count)
    tunnel = ping_times(pair, TUN4[1], count)
    return (
        percentile(tunnel, 0.5) - percentile(bare, 0.5),
        percentile(tunnel, 0.99) - percentile(bare, 0.99),
    )


def run_pairing(
    pairing: tuple[str, str], workdir: Path, seconds: float, pings: int
) -> dict[str, float]:
    with Lab(workdir) as lab:
        lab.log_level = "error"
        pair = make_pair(lab, *pairing)
        wait_for(
            lambda: pair.a.ns.ping(TUN4[1], count=1, wait=2) == 1,
            timeout=20,
            what="the tunnel to carry a ping",
        )
        figures: dict[str, float] = {}
        figures["tcp1_mbps"], figures["cpu_s_per_gb"] = measure_tcp(pair, seconds, 1)
        say(f"      TCP 1 stream  {figures['tcp1_mbps']:8.0f} Mbit/s "
            f"({figures['cpu_s_per_gb']:.1f} CPU s/GB)")  # fmt: skip
        figures["tcp4_mbps"], _ = measure_tcp(pair, seconds, 4)
        say(f"      TCP 4 streams {figures['tcp4_mbps']:8.0f} Mbit/s")
        figures["udp_mbps"], figures["udp_loss_pct"] = measure_udp(pair, seconds)
        say(f"      UDP           {figures['udp_mbps']:8.0f} Mbit/s delivered, "
            f"{figures['udp_loss_pct']:.1f} % lost")  # fmt: skip
        p50, p99 = measure_latency(pair, pings)
        figures["added_latency_p50_ms"], figures["added_latency_p99_ms"] = p50, p99
        say(f"      latency added {p50:8.3f} ms p50, {p99:.3f} ms p99")
        figures["peak_rss_mb"] = max(peak_rss_mb(p) for p in daemon_pids(pair))
        say(f"      peak RSS      {figures['peak_rss_mb']:8.1f} MB")
        return figures


def measure_many_peers(impl: str, workdir: Path, peers: int) -> dict[str, float]:
    """One interface with ``peers`` peers (a /32 and an endpoint in TEST-NET-1 each, never
    contacted): how long `wg setconf` and `wg show dump` take, and the daemon's peak RSS."""
    with Lab(workdir) as lab:
        lab.log_level = "error"
        wg = lab.wg(lab.namespace("many"), impl, listen_port=51820)
        lines = ["[Interface]", f"PrivateKey = {wg.key.private_b64}", "ListenPort = 51820"]
        for i in range(peers):
            lines += [
                "[Peer]",
                f"PublicKey = {b64(os.urandom(32))}",
                f"AllowedIPs = 10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32",
                f"Endpoint = 192.0.2.{1 + i % 250}:{10000 + i % 50000}",
            ]
        conf = workdir / "peers.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        started = time.monotonic()
        wg.wg("setconf", wg.name, str(conf), timeout=300)
        setconf = time.monotonic() - started
        shows = []
        for _ in range(3):
            started = time.monotonic()
            dump = wg.wg("show", wg.name, "dump", timeout=60).stdout
            shows.append(time.monotonic() - started)
        listed = len(dump.splitlines()) - 1
        if listed != peers:
            raise RuntimeError(f"{impl}: wg show lists {listed} peers, not {peers}")
        assert wg.proc is not None
        return {
            "peers": peers,
            "setconf_s": setconf,
            "show_s": statistics.median(shows),
            "peak_rss_mb": peak_rss_mb(wg.proc.pid),
        }


# ------------------------------------------------------------------ summary and output


def summarize(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    pairings = [name_of(p) for p in PAIRINGS]
    summary: dict[str, Any] = {}
    for pairing in pairings:
        summary[pairing] = {}
        for metric in METRICS:
            values = [r[pairing][metric] for r in rounds if pairing in r]
            if values:
                summary[pairing][metric] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "values": values,
                }
    ratios: dict[str, dict[str, float]] = {}
    for pairing in pairings:
        if pairing == BASELINE:
            continue
        ratios[pairing] = {}
        for metric in METRICS:
            # ratio of medians, and the spread of the per-round ratios (same round, same noise)
            per_round = [
                r[pairing][metric] / r[BASELINE][metric]
                for r in rounds
                if pairing in r and BASELINE in r and r[BASELINE][metric]
            ]
            if per_round:
                ratios[pairing][metric] = statistics.median(per_round)
                ratios[pairing][metric + "_min"] = min(per_round)
                ratios[pairing][metric + "_max"] = max(per_round)
    return {"summary": summary, "ratios": ratios}


def num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown(result: dict[str, Any]) -> str:
    summary, ratios = result["summary"], result["ratios"]
    pairings = list(summary)
    lines = [
        f"# wgpy beside wireguard-go, {result['date']}",
        "",
        f"{result['rounds']} rounds of {result['seconds']:g} s per test; medians (min-max). "
        f"Command: `{result['command']}`.",
        "",
        "| metric | " + " | ".join(pairings) + " |",
        "| --- |" + " --- |" * len(pairings),
    ]
    for metric, (label, unit, _) in METRICS.items():
        cells = []
        for pairing in pairings:
            s = summary[pairing].get(metric)
            cells.append(f"{num(s['median'])} ({num(s['min'])}-{num(s['max'])})" if s else "-")
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    lines += ["", f"Ratios to {BASELINE} in the same rounds (median of per-round ratios):", ""]
    lines.append("| metric | " + " | ".join(ratios) + " |")
    lines.append("| --- |" + " --- |" * len(ratios))
    for metric, (label, _, higher) in METRICS.items():
        cells = []
        for pairing in ratios:
            r = ratios[pairing].get(metric)
            better = "higher is better" if higher else "lower is better"
            cells.append(
                f"{r:.2f}x ({ratios[pairing][metric + '_min']:.2f}-"
                f"{ratios[pairing][metric + '_max']:.2f}, {better})"
                if r is not None
                else "-"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    many = result.get("many_peers")
    if many:
        lines += ["", "One interface with many peers configured:", "",
                  "| implementation | peers | `wg setconf` | `wg show dump` | peak RSS |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for impl, m in many.items():
            lines.append(f"| {impl} | {m['peers']:,} | {m['setconf_s']:.2f} s | "
                         f"{m['show_s']:.2f} s | {m['peak_rss_mb']:.0f} MB |")  # fmt: skip
    core = result.get("core")
    if core:
        lines += ["", "The sans-IO core on one core (benchmarks/core.py):", ""]
        for key, value in core.items():
            lines.append(f"- {key}: {value['median']:,.0f}")
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    pairings = list(summary)
    shown = ["tcp1_mbps", "tcp4_mbps", "udp_mbps", "added_latency_p50_ms", "peak_rss_mb"]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 4))
    for ax, metric in zip(axes, shown, strict=True):
        label, unit, _ = METRICS[metric]
        medians = [summary[p][metric]["median"] for p in pairings]
        low = [m - summary[p][metric]["min"] for p, m in zip(pairings, medians, strict=True)]
        high = [summary[p][metric]["max"] - m for p, m in zip(pairings, medians, strict=True)]
        ax.bar(range(len(pairings)), medians, yerr=[low, high], capsize=4,
               color=["#3b7dd8", "#888888", "#7fb3ee"][: len(pairings)])  # fmt: skip
        ax.set_xticks(range(len(pairings)), [p.replace("/", "\n") for p in pairings], fontsize=8)
        ax.set_title(f"{label} ({unit})", fontsize=10)
    fig.suptitle(f"wgpy beside wireguard-go ({result['date']}, medians, min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_ratios(result: dict[str, Any]) -> None:
    say(f"\nratios to {BASELINE}, same rounds (median, min-max):")
    for pairing, ratios in result["ratios"].items():
        say(f"  {pairing}")
        for metric, (label, _, higher) in METRICS.items():
            if metric in ratios:
                mark = "higher is better" if higher else "lower is better"
                low, high = ratios[metric + "_min"], ratios[metric + "_max"]
                say(f"    {label:28s} {ratios[metric]:5.2f}x ({low:.2f}-{high:.2f}; {mark})")


def core_figures(quick: bool) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        args = [sys.executable, str(ROOT / "benchmarks" / "core.py"), "--json", f.name]
        args += ["--quick", "--rounds", "1"] if quick else ["--rounds", "5"]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, timeout=900)
        results: dict[str, Any] = json.loads(Path(f.name).read_text())["results"]
        return results


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per iperf3 test")
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--peers", type=int, default=10_000, help="for the many-peers test")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s tests, a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: this creates network namespaces; run it as root", file=sys.stderr)
        return 1
    if args.quick:
        args.rounds, args.seconds, args.pings, args.peers = 1, 2.0, 20, 1000
    if args.rounds < 1 or args.seconds <= 0 or args.pings < 10:
        parser.error("--rounds must be >= 1, --seconds > 0 and --pings >= 10")
    # SIGTERM unwinds like Ctrl-C, so every namespace and daemon is removed on the way out
    signal.signal(signal.SIGTERM, _interrupted)
    command = "make bench" if not argv else "benchmarks/tunnel.py " + " ".join(argv)
    started = datetime.datetime.now(datetime.UTC)
    rounds: list[dict[str, dict[str, float]]] = []
    total = args.rounds * len(PAIRINGS)
    done = 0
    with tempfile.TemporaryDirectory(prefix="wgpy-bench-") as tmp:
        try:
            for r in range(args.rounds):
                figures: dict[str, dict[str, float]] = {}
                for pairing in PAIRINGS:
                    done += 1
                    say(f"[{done}/{total}] round {r + 1}: {name_of(pairing)}")
                    workdir = Path(tmp) / f"r{r}-{pairing[0]}-{pairing[1]}"
                    figures[name_of(pairing)] = run_pairing(
                        pairing, workdir, args.seconds, args.pings
                    )
                rounds.append(figures)
            many: dict[str, dict[str, float]] = {}
            for impl in ("wgpy", "wireguard-go"):
                say(f"{impl} with {args.peers:,} peers configured ...")
                many[impl] = measure_many_peers(impl, Path(tmp) / f"many-{impl}", args.peers)
                m = many[impl]
                say(f"      setconf {m['setconf_s']:.2f} s, show {m['show_s']:.2f} s, "
                    f"peak RSS {m['peak_rss_mb']:.0f} MB")  # fmt: skip
            say("the core's own figures (benchmarks/core.py) ...")
            core = core_figures(args.quick)
        except KeyboardInterrupt:
            say("interrupted: cleaned up, nothing written")
            return 130
    result: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "per_round": rounds,
        "core": core,
        "many_peers": many,
        **summarize(rounds),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "tunnel-" + started.strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    chart(result, args.out / f"{stem}.png")
    for suffix in ("json", "md", "png"):
        latest = args.out / f"latest.{suffix}"
        latest.unlink(missing_ok=True)
        latest.symlink_to(f"{stem}.{suffix}")
    say("\n" + markdown(result))
    print_ratios(result)
    say(f"\nwritten: {args.out / stem}.json, .md, .png (and latest.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
