"""Map streams that never read: what N of them pin in the kernel and in the server.

A benchmark, not a test: it prints figures and asserts nothing. The review behind issue 9
opened 500 map streams that never read and found 176 MiB of kernel memory pinned; the server
now bounds each stream's send buffers and closes stalled streams beyond a cap per source and
in all. This replays that: N nodes of one user register (from many loopback addresses, so the
registration limit stays on), then each opens its map stream on a raw socket with a small
receive buffer and never reads. After --wait seconds it reports the kernel's TCP memory
(/proc/net/sockstat, the whole host: run it on a quiet machine), the server's RSS, and how many
streams the server still holds open.

    .venv/bin/python benchmarks/unread_streams.py [--nodes 500] [--wait 20]

Run it against another revision with PYTHONPATH pointing at that revision's tree.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from mesh_scale import API, PER_SOURCE, WGPY, ServerProcess, new_public_key, say

PAGE = resource.getpagesize()


def tcp_memory_mb() -> float:
    """The kernel's TCP buffer memory in use, host-wide (sockstat counts pages)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * PAGE / 2**20
    return 0.0


def server_side(port: int) -> tuple[int, float]:
    """The server's connections on ``port`` that are still established, and the bytes its
    send queues hold (``ss``: the server's own view; orphans it closed count as gone)."""
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return len(rows), sum(int(row[1]) for row in rows) / 2**20  # Send-Q


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="wgpy-unread-"))
    help_text = subprocess.run([WGPY, "server", "--help"], capture_output=True, text=True).stdout
    quota = ["--max-nodes-per-user", "0"] if "--max-nodes-per-user" in help_text else []
    server = ServerProcess(workdir, None, quota)
    sources = [f"127.0.2.{1 + i}" for i in range(args.nodes // PER_SOURCE + 2)]
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(a, 0))) for a in sources
    ]
    socks: list[socket.socket] = []
    try:
        await server.wait_listening()
        admin = sessions[-1]
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with admin.post(server.url + API + "/users", json={"name": "sim"}, headers=headers):
            pass
        body = {"user": "sim", "reusable": True}
        async with admin.post(server.url + API + "/preauthkeys", json=body, headers=headers) as r:
            key = (await r.json())["preauthkey"]["key"]

        async def register(i: int) -> tuple[str, str]:
            body = {"auth_key": key, "public_key": new_public_key(), "hostname": f"n{i}"}
            session = sessions[i // PER_SOURCE]
            async with session.post(server.url + API + "/register", json=body) as r:
                data = await r.json()
                if r.status != 200:
                    raise SystemExit(f"register n{i}: HTTP {r.status}: {data}")
                return sources[i // PER_SOURCE], data["token"]

        say(f"registering {args.nodes} nodes ...")
        nodes = await asyncio.gather(*(register(i) for i in range(args.nodes)))
        await asyncio.sleep(2)
        before = tcp_memory_mb()
        say(f"opening {args.nodes} map streams that never read ...")
        for source, token in nodes:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(
                f"GET {API}/node/map HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            socks.append(sock)
        peak = 0.0
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            peak = max(peak, tcp_memory_mb() - before)
        held, queued = server_side(server.port)
        rss, hwm = server.memory_mb()
        say(
            f"{args.nodes} unread streams after {args.wait:.0f} s: kernel TCP memory "
            f"+{tcp_memory_mb() - before:.1f} MiB (peak +{peak:.1f}), server RSS {rss:.0f} MB "
            f"(peak {hwm:.0f}), connections the server still holds {held} with {queued:.1f} "
            "MiB in their send queues"
        )
    finally:
        for sock in socks:
            sock.close()
        for session in sessions:
            await session.close()
        server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--wait", type=float, default=20.0)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
