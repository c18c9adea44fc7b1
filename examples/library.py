"""Two WireGuard interfaces from Python, with the library API (needs root).

    sudo .venv/bin/python examples/library.py

It makes two network namespaces joined by a veth pair, runs one interface in each (each in
its own process, since a process's sockets live in one namespace), and pings across.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import wgpy

NODE = r"""
import asyncio, sys, wgpy
async def main(name, key, peer, endpoint, address, peer_ip):
    async with wgpy.open_interface(name, private_key=key, listen_port=51820,
                                   addresses=[address]) as wg:
        wg.add_peer(peer, endpoint=endpoint, allowed_ips=[peer_ip + "/32"])
        print("up", wg.public_key, flush=True)
        await wg.wait_closed()
asyncio.run(main(*sys.argv[1:]))
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


async def main() -> int:
    if os.geteuid() != 0:
        print("this example creates interfaces and namespaces: run it as root", file=sys.stderr)
        return 1
    key_a, key_b = wgpy.generate_private_key(), wgpy.generate_private_key()
    pub_a, pub_b = wgpy.public_key(key_a), wgpy.public_key(key_b)
    ns = [f"wgpy-example-{os.getpid()}-{i}" for i in (1, 2)]
    procs = []
    try:
        for n in ns:
            sh("ip", "netns", "add", n)
        sh(
            "ip",
            "link",
            "add",
            "vex1",
            "netns",
            ns[0],
            "type",
            "veth",
            "peer",
            "vex2",
            "netns",
            ns[1],
        )
        for n, dev, addr in ((ns[0], "vex1", "192.0.2.1/24"), (ns[1], "vex2", "192.0.2.2/24")):
            sh("ip", "-n", n, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", n, "link", "set", dev, "up")
        # interface names must differ: the control sockets share /var/run/wireguard
        names = [f"wgex{os.getpid() % 10000}a", f"wgex{os.getpid() % 10000}b"]
        for args in (
            (ns[0], names[0], key_a, pub_b, "192.0.2.2:51820", "10.7.0.1/24", "10.7.0.2"),
            (ns[1], names[1], key_b, pub_a, "192.0.2.1:51820", "10.7.0.2/24", "10.7.0.1"),
        ):
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", args[0], sys.executable, "-c", NODE, *args[1:],
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            procs.append(proc)
            assert proc.stdout is not None
            print(args[0], (await proc.stdout.readline()).decode().strip())
        sh("ip", "netns", "exec", ns[0], "ping", "-c", "3", "-i", "0.2", "10.7.0.2")
        sh("ip", "netns", "exec", ns[0], "wg", "show", names[0])
        return 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
        for n in ns:
            subprocess.run(["ip", "netns", "del", n], check=False)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
