"""`make bench`: wgpy beside wireguard-go through real tunnels, ratios from the same run.

Two network namespaces joined by a veth pair, a userspace WireGuard interface in each. For
every pairing (wgpy to wgpy, Debian's wireguard-go to itself, wgpy to wireguard-go; with
--newest PATH or WIREGUARD_GO_NEWEST=PATH also that wireguard-go, built from source, to itself
and wgpy to it), one after the other within each round, and several rounds:

  tcp1     iperf3, one TCP stream, a to b (Mbit/s received; iperf3's retransmits; the drops
           of both TUNs' transmit queues, tx_dropped, over the run)
  tcp4     iperf3, 4 TCP streams (the same)
  udp      iperf3 UDP at the highest rate the sender manages (delivered Mbit/s and loss)
  latency  ping through the tunnel and over the bare veth; what the tunnel adds (p50, p99)
  cpu      CPU seconds both daemons spent per GB moved by the one-stream run
  rss      the daemons' peak RSS (VmHWM) at the end of the pairing's run

plus the sans-IO core's own figures (benchmarks/core.py). Results: a JSON file, a Markdown
table and a PNG chart under benchmarks/results/, and on the terminal the ratios
wgpy / each wireguard-go with medians and spreads (benchmarks/tunnel_figures.py), and each
binary's --version. Everything it creates (namespaces, processes, sockets) is removed at the
end, also on Ctrl-C. Needs root.

    .venv/bin/python benchmarks/tunnel.py [--rounds 3] [--seconds 10] [--quick] [--newest PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
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
    IMPLEMENTATIONS,
    TUN4,
    Lab,
    Pair,
    WgInterface,
    b64,
    iperf3_run,
    make_pair,
    received_mbits,
    wait_for,
)

sys.path.insert(0, str(ROOT / "benchmarks"))
from report import percentile  # noqa: E402
from tunnel_figures import (  # noqa: E402
    DEBIAN,
    NEWEST,
    chart,
    implementations,
    markdown,
    name_of,
    pairings,
    ratio_lines,
    summarize,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UDP_PAYLOAD = 1392  # an inner MTU of 1420 less the IPv4 and UDP headers
RESULTS = ROOT / "benchmarks" / "results"
NEWEST_ENV = "WIREGUARD_GO_NEWEST"


def say(text: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        print(text, flush=True)


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


def tun_tx_dropped(side: WgInterface) -> int:
    """The packets the kernel dropped at this TUN's transmit queue (a full queue: the daemon
    did not read fast enough), read inside its namespace."""
    path = f"/sys/class/net/{side.name}/statistics/tx_dropped"
    return int(side.ns.run(["cat", path], timeout=10).stdout)


def measure_tcp(pair: Pair, seconds: float, streams: int) -> dict[str, float]:
    """iperf3 a -> b with ``streams`` TCP streams: Mbit/s received ("mbps"), CPU seconds per
    GB of both daemons, the sender's retransmits and both TUNs' transmit-queue drops
    ("tun_drops"; "tun_drops_a" at the sending end, "tun_drops_b" at the receiving end)."""
    pids = daemon_pids(pair)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    drops0 = (tun_tx_dropped(pair.a), tun_tx_dropped(pair.b))
    extra = ["-P", str(streams)] if streams > 1 else []
    data = iperf3_run(pair.a.ns, pair.b.ns, TUN4[1], seconds, *extra)
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    drops_a = tun_tx_dropped(pair.a) - drops0[0]
    drops_b = tun_tx_dropped(pair.b) - drops0[1]
    gigabytes = data["end"]["sum_received"]["bytes"] / 1e9
    return {
        "mbps": received_mbits(data),
        "cpu_s_per_gb": cpu / gigabytes if gigabytes else float("inf"),
        "retransmits": float(data["end"].get("sum_sent", {}).get("retransmits", 0)),
        "tun_drops": float(drops_a + drops_b),
        "tun_drops_a": float(drops_a),
        "tun_drops_b": float(drops_b),
    }


def measure_udp(pair: Pair, seconds: float) -> tuple[float, float]:
    """(delivered Mbit/s, loss %) with the sender as fast as it goes."""
    data = iperf3_run(pair.a.ns, pair.b.ns, TUN4[1], seconds, "-u", "-b", "0", "-l",
                      str(UDP_PAYLOAD))  # fmt: skip
    received = data["end"]["sum_received"]  # the receiver's view ("sum" is the sender's)
    return received_mbits(data), float(received.get("lost_percent", 0.0))


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
        for streams in (1, 4):
            tcp = measure_tcp(pair, seconds, streams)
            key = f"tcp{streams}"
            figures[f"{key}_mbps"] = tcp["mbps"]
            figures[f"{key}_retransmits"] = tcp["retransmits"]
            figures[f"{key}_tun_drops"] = tcp["tun_drops"]
            cpu = ""
            if streams == 1:
                figures["cpu_s_per_gb"] = tcp["cpu_s_per_gb"]
                cpu = f", {tcp['cpu_s_per_gb']:.1f} CPU s/GB"
            label = "TCP 1 stream " if streams == 1 else f"TCP {streams} streams"
            say(f"      {label} {tcp['mbps']:8.0f} Mbit/s ({tcp['retransmits']:.0f} "
                f"retransmits, TUN drops {tcp['tun_drops_a']:.0f} sending, "
                f"{tcp['tun_drops_b']:.0f} receiving{cpu})")  # fmt: skip
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


# ------------------------------------------------------------------ the binaries


def version_of(path: str) -> str:
    """The first line of ``path --version`` ("" when it prints nothing or fails)."""
    try:
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = result.stdout.strip().splitlines()
    return lines[0].strip() if result.returncode == 0 and lines else ""


def wireguard_go_version(path: str) -> str:
    """The version line of the wireguard-go at ``path``; ValueError with one sentence when
    ``path`` is not an executable wireguard-go."""
    file = Path(path)
    if not file.is_file() or not os.access(file, os.X_OK):
        raise ValueError(
            f"{NEWEST_ENV} / --newest {path} is not an executable file; give the path of a "
            "wireguard-go binary (benchmarks/README.md says how to build one)."
        )
    version = version_of(str(file.resolve()))
    if not version.startswith("wireguard-go "):
        raise ValueError(
            f"{path} is not a wireguard-go: `{path} --version` printed "
            f"{version or 'nothing'!r} instead of a line starting with 'wireguard-go '."
        )
    return version


def versions(newest: str | None) -> dict[str, str]:
    """Each implementation's --version line, as the results record them."""
    found = {
        "wgpy": version_of(IMPLEMENTATIONS["wgpy"]) or "?",
        f"{DEBIAN} (Debian)": version_of(shutil.which(IMPLEMENTATIONS[DEBIAN]) or DEBIAN) or "?",
    }
    if newest:
        found[f"{NEWEST} ({newest})"] = version_of(newest) or "?"
    return found


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
    parser.add_argument(
        "--newest",
        metavar="PATH",
        default=os.environ.get(NEWEST_ENV) or None,
        help=f"a second wireguard-go (built from source) measured beside Debian's "
        f"(default: ${NEWEST_ENV})",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: this creates network namespaces; run it as root", file=sys.stderr)
        return 1
    if args.newest:
        try:
            wireguard_go_version(args.newest)
        except ValueError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 2
        args.newest = str(Path(args.newest).resolve())
        IMPLEMENTATIONS[NEWEST] = args.newest
    if args.quick:
        args.rounds, args.seconds, args.pings, args.peers = 1, 2.0, 20, 1000
    if args.rounds < 1 or args.seconds <= 0 or args.pings < 10:
        parser.error("--rounds must be >= 1, --seconds > 0 and --pings >= 10")
    # SIGTERM unwinds like Ctrl-C, so every namespace and daemon is removed on the way out
    signal.signal(signal.SIGTERM, _interrupted)
    command = "make bench" if not argv else "benchmarks/tunnel.py " + " ".join(argv)
    if args.newest and "--newest" not in argv:
        command += f" ({NEWEST_ENV}={os.environ[NEWEST_ENV]})"
    measured = pairings(bool(args.newest))
    started = datetime.datetime.now(datetime.UTC)
    rounds: list[dict[str, dict[str, float]]] = []
    total = args.rounds * len(measured)
    done = 0
    with tempfile.TemporaryDirectory(prefix="wgpy-bench-") as tmp:
        try:
            for r in range(args.rounds):
                figures: dict[str, dict[str, float]] = {}
                for pairing in measured:
                    done += 1
                    say(f"[{done}/{total}] round {r + 1}: {name_of(pairing)}")
                    workdir = Path(tmp) / f"r{r}-{pairing[0]}-{pairing[1]}"
                    figures[name_of(pairing)] = run_pairing(
                        pairing, workdir, args.seconds, args.pings
                    )
                rounds.append(figures)
            many: dict[str, dict[str, float]] = {}
            for impl in implementations(bool(args.newest)):
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
        "versions": versions(args.newest),
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
    for line in ratio_lines(result):
        say(line)
    say(f"\nwritten: {args.out / stem}.json, .md, .png (and latest.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
