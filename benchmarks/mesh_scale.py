"""The coordination server at scale: N simulated nodes register and hold their map streams.

A benchmark, not a test: it prints figures and asserts nothing about speed.

The server is the real `wgpy server` in its own process (so its CPU time and peak RSS are its
own), on loopback. The simulated nodes are protocol-level clients in this process: HTTP and
the NDJSON map stream, no TUN, no WireGuard. All N nodes belong to one user under the default
policy, so every node's map holds every other node: N full maps of N - 1 peers each.

Registration is rate limited per source address (20 at once, then 1 a second); the nodes come
from many loopback addresses (127.0.1.1, 127.0.1.2, ...), as a fleet would come from many
hosts, so the limit stays on.

Phases, each timed, with the server's CPU seconds:
  register   N nodes register with one reusable pre-auth key (HTTP POST each)
  streams    N map streams open and each receives its full map
  endpoint   one node reports a new endpoint; the time until all N - 1 other streams have it
             (--rounds times: median, min, max)
  join       a new node registers; the time until all N streams have it (--rounds times)

    .venv/bin/python benchmarks/mesh_scale.py [--nodes 1000] [--rounds 5]
                                              [--database-url postgresql://...] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

WGPY = str(Path(sys.executable).parent / "wgpy")
API = "/api/v1"
PER_SOURCE = 20  # registrations one source address may make at once (the server's burst)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """`wgpy server` in a child process; CPU seconds and peak RSS read from /proc."""

    def __init__(self, workdir: Path, database_url: str | None, extra: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        store = ["--database-url", database_url] if database_url else ["--state-dir", str(workdir)]
        created = subprocess.run(
            [WGPY, "server", *store, "apikey", "create"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        self.api_key = created.stdout.strip()
        self.log = workdir / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [WGPY, "server", "--listen", f"127.0.0.1:{self.port}", *store, *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "LOG_LEVEL": "warning"},
            )

    async def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise SystemExit("the server did not start listening within 30 s")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        values = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in status.splitlines()
            if line.startswith(("VmRSS", "VmHWM"))
        }
        return values["VmRSS"], values["VmHWM"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class SimNode:
    hostname: str
    public_key: str
    token: str = ""
    peers_in_full_map: int = -1
    seen: dict[bytes, float] = field(default_factory=dict)  # watched needle -> when it came
    watch: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.got_full = asyncio.Event()


def new_public_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def follow(session: aiohttp.ClientSession, url: str, node: SimNode) -> None:
    """Read a node's map stream until cancelled, noting when watched needles arrive."""
    headers = {"Authorization": f"Bearer {node.token}", "Accept": "application/x-ndjson"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with session.get(url + API + "/node/map", headers=headers, timeout=timeout) as resp:
        if resp.status != 200:
            raise SystemExit(f"{node.hostname}: map stream refused: HTTP {resp.status}")
        buffer = bytearray()
        async for chunk in resp.content.iter_any():
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                line = bytes(buffer[start:end])
                start = end + 1
                if not node.got_full.is_set():
                    node.peers_in_full_map = line.count(b'"public_key"') - 1  # minus self
                    node.got_full.set()
                    continue
                for needle in node.watch:
                    if needle in line and needle not in node.seen:
                        node.seen[needle] = time.monotonic()
            del buffer[:start]


async def wait_all_seen(nodes: list[SimNode], needle: bytes, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(needle in n.seen for n in nodes):
            return [n.seen[needle] for n in nodes]
        await asyncio.sleep(0.002)
    missing = sum(needle not in n.seen for n in nodes)
    raise SystemExit(f"{missing} of {len(nodes)} streams never saw the change within {timeout} s")


async def settle(server: ServerProcess, timeout: float = 30) -> float:
    """Wait until the server's CPU use falls below 5 % over 200 ms; how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = server.cpu_seconds()
        await asyncio.sleep(0.2)
        if server.cpu_seconds() - before < 0.01:
            break
    return time.monotonic() - start


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="wgpy-mesh-scale-"))
    # every node is one user's: no per-user quota
    server = ServerProcess(workdir, args.database_url, ["--max-nodes-per-user", "0"])
    results: dict[str, Any] = {"nodes": args.nodes, "rounds": args.rounds}
    sources = [f"127.0.1.{1 + i}" for i in range((args.nodes + PER_SOURCE) // PER_SOURCE + 1)]
    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, local_addr=(address, 0), force_close=False)
        )
        for address in sources
    ]
    admin = sessions[-1]
    streams: list[asyncio.Task[None]] = []
    try:
        await server.wait_listening()
        headers = {"Authorization": f"Bearer {server.api_key}"}

        async def call(method: str, path: str, body: Any = None) -> Any:
            async with admin.request(method, server.url + API + path, json=body,
                                     headers=headers) as resp:  # fmt: skip
                data = await resp.json()
                if resp.status >= 300:
                    raise SystemExit(f"{method} {path}: HTTP {resp.status}: {data}")
                return data

        await call("POST", "/users", {"name": "sim"})
        created = await call("POST", "/preauthkeys", {"user": "sim", "reusable": True})
        key = created["preauthkey"]["key"]

        async def register(session: aiohttp.ClientSession, node: SimNode) -> None:
            body = {"auth_key": key, "public_key": node.public_key, "hostname": node.hostname}
            async with session.post(server.url + API + "/register", json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise SystemExit(f"register {node.hostname}: HTTP {resp.status}: {data}")
                node.token = data["token"]

        nodes = [SimNode(f"n{i}", new_public_key()) for i in range(args.nodes)]
        say(f"registering {args.nodes} nodes from {len(sources) - 1} source addresses ...")
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        await asyncio.gather(
            *(register(sessions[i // PER_SOURCE], node) for i, node in enumerate(nodes))
        )
        elapsed = time.perf_counter() - t0
        results["registrations_per_s"] = args.nodes / elapsed
        results["register_server_cpu_s"] = server.cpu_seconds() - cpu0
        results["rss_after_register_mb"] = server.memory_mb()[0]
        say(f"  {args.nodes / elapsed:,.0f} registrations/s")

        say(f"opening {args.nodes} map streams ...")
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        for i, node in enumerate(nodes):
            session = sessions[i // PER_SOURCE]
            streams.append(asyncio.create_task(follow(session, server.url, node)))
        for done, node in enumerate(nodes, 1):
            await asyncio.wait_for(node.got_full.wait(), timeout=120)
            if done % 200 == 0:
                say(f"  {done} full maps received")
        elapsed = time.perf_counter() - t0
        results["streams_open_s"] = elapsed
        results["streams_server_cpu_s"] = server.cpu_seconds() - cpu0
        results["rss_after_streams_mb"] = server.memory_mb()[0]
        wrong = [n.hostname for n in nodes if n.peers_in_full_map != args.nodes - 1]
        if wrong:
            raise SystemExit(f"{len(wrong)} full maps lack peers (e.g. {wrong[0]})")
        say(f"  all {args.nodes} full maps ({args.nodes - 1} peers each) in {elapsed:.2f} s")
        settled = await settle(server)
        results["settle_s"] = settled
        say(f"  the server went idle {settled:.2f} s later")

        async def fan_out(
            change: Callable[[], Awaitable[None]], needle: bytes, watchers: list[SimNode]
        ) -> tuple[float, float]:
            """Make ``change``; (seconds until every watcher's stream carried ``needle``,
            server CPU seconds meanwhile)."""
            for n in watchers:
                n.watch.append(needle)
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            await change()
            arrivals = await wait_all_seen(watchers, needle, timeout=30)
            return max(arrivals) - t0, server.cpu_seconds() - cpu0

        endpoint_times, endpoint_cpu = [], 0.0
        for r in range(args.rounds):
            mover = nodes[r * 7 % len(nodes)]
            endpoint = f"192.0.2.{1 + r}:{41641 + r}"

            async def move(mover: SimNode = mover, endpoint: str = endpoint) -> None:
                async with admin.post(
                    server.url + API + "/node/endpoints",
                    json={"endpoints": [endpoint]},
                    headers={"Authorization": f"Bearer {mover.token}"},
                ) as resp:
                    assert resp.status == 200, await resp.text()

            others = [n for n in nodes if n is not mover]
            seconds, cpu = await fan_out(move, endpoint.encode(), others)
            endpoint_times.append(seconds)
            endpoint_cpu += cpu
            say(f"  round {r + 1}: an endpoint change reached all {len(others)} streams in "
                f"{seconds * 1000:.0f} ms")  # fmt: skip
            await asyncio.sleep(0.2)
        results["endpoint_change_all_s"] = endpoint_times
        results["endpoint_server_cpu_s_per_change"] = endpoint_cpu / args.rounds

        join_times, join_cpu = [], 0.0
        for r in range(args.rounds):
            newcomer = SimNode(f"late{r}", new_public_key())
            seconds, cpu = await fan_out(
                lambda newcomer=newcomer: register(admin, newcomer),
                newcomer.public_key.encode(),
                nodes,
            )
            join_times.append(seconds)
            join_cpu += cpu
            say(f"  round {r + 1}: a join reached all {len(nodes)} streams in "
                f"{seconds * 1000:.0f} ms")  # fmt: skip
            await asyncio.sleep(0.2)
        results["join_all_s"] = join_times
        results["join_server_cpu_s_per_change"] = join_cpu / args.rounds

        rss, peak = server.memory_mb()
        results["server_rss_mb"] = rss
        results["server_peak_rss_mb"] = peak
        return results
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        for session in sessions:
            await session.close()
        server.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def report(results: dict[str, Any]) -> None:
    def ms(values: list[float]) -> str:
        return (
            f"{statistics.median(values) * 1000:,.0f} ms "
            f"({min(values) * 1000:,.0f}-{max(values) * 1000:,.0f})"
        )

    n = results["nodes"]
    memory = (results["server_rss_mb"], results["server_peak_rss_mb"])
    print(f"\nwgpy server with {n} nodes, full mesh (medians, min-max of {results['rounds']})")
    rows = [
        ("registrations/s", f"{results['registrations_per_s']:,.0f}"),
        (f"{n} streams opened, full maps received", f"{results['streams_open_s']:.2f} s"),
        ("an endpoint change reaches every stream", ms(results["endpoint_change_all_s"])),
        ("a join reaches every stream", ms(results["join_all_s"])),
        ("server CPU: registrations", f"{results['register_server_cpu_s']:.2f} s"),
        ("server CPU: opening the streams", f"{results['streams_server_cpu_s']:.2f} s"),
        ("server CPU per endpoint change", f"{results['endpoint_server_cpu_s_per_change']:.3f} s"),
        ("server CPU per join", f"{results['join_server_cpu_s_per_change']:.3f} s"),
        ("server RSS after registrations", f"{results['rss_after_register_mb']:.0f} MB"),
        ("server RSS with the streams open", f"{results['rss_after_streams_mb']:.0f} MB"),
        ("server RSS now / peak", "{:.0f} / {:.0f} MB".format(*memory)),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", help="PostgreSQL instead of SQLite")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.rounds < 1:
        parser.error("--nodes must be at least 2 and --rounds at least 1")
    results = asyncio.run(run(args))
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
