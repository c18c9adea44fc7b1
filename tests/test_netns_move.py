"""The interface moved into another network namespace after creation: the daemon and its UDP
socket stay where they were, packets from the moved TUN still go out through the first
namespace (the "init namespace" trick wireguard-go supports). Root, namespaces of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import wgpy

BIN = Path(sys.executable).parent
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and TUN"),
]


def sh(*args: str, input: str | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, input=input, timeout=30)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


def test_interface_moved_to_another_namespace_keeps_working() -> None:
    tag = f"{os.getpid() % 100000}"
    outer, peer_ns, inner = (f"wgpy-mv-{tag}-{x}" for x in ("outer", "peer", "inner"))
    ours, theirs = f"wgm{tag}a", f"wgm{tag}b"
    k_ours, k_theirs = wgpy.generate_private_key(), wgpy.generate_private_key()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (outer, peer_ns, inner):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "vm0", "netns", outer, "type", "veth", "peer", "vm1",
           "netns", peer_ns)  # fmt: skip
        sh("ip", "-n", outer, "addr", "add", "192.0.2.1/24", "dev", "vm0")
        sh("ip", "-n", peer_ns, "addr", "add", "192.0.2.2/24", "dev", "vm1")
        sh("ip", "-n", outer, "link", "set", "vm0", "up")
        sh("ip", "-n", peer_ns, "link", "set", "vm1", "up")
        # ours: wgpy in the outer namespace; theirs: wireguard-go in the peer namespace
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", outer, str(BIN / "wgpy-userspace"), "-f", ours]
            )
        )
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", peer_ns, "wireguard-go", "-f", theirs],
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            Path(f"/var/run/wireguard/{n}.sock").exists() for n in (ours, theirs)
        ):
            time.sleep(0.05)
        sh("wg", "set", ours, "private-key", "/dev/stdin", "listen-port", "51820", "peer",
           wgpy.public_key(k_theirs), "endpoint", "192.0.2.2:51820", "allowed-ips",
           "10.66.0.2/32", input=k_ours)  # fmt: skip
        sh("wg", "set", theirs, "private-key", "/dev/stdin", "listen-port", "51820", "peer",
           wgpy.public_key(k_ours), "endpoint", "192.0.2.1:51820", "allowed-ips",
           "10.66.0.1/32", input=k_theirs)  # fmt: skip
        # move our interface into a namespace with no other link at all
        sh("ip", "-n", outer, "link", "set", ours, "netns", inner)
        sh("ip", "-n", inner, "addr", "add", "10.66.0.1/24", "dev", ours)
        sh("ip", "-n", inner, "link", "set", ours, "up")
        sh("ip", "-n", peer_ns, "addr", "add", "10.66.0.2/24", "dev", theirs)
        sh("ip", "-n", peer_ns, "link", "set", theirs, "up")
        out = sh("ip", "netns", "exec", inner, "ping", "-c", "3", "-i", "0.2", "-W", "3",
                 "10.66.0.2")  # fmt: skip
        assert "3 received" in out
        assert "ERROR" not in sh("ip", "-n", inner, "link", "show", ours)
        # the daemon still answers on its socket, from the outer namespace
        assert "latest handshake" in sh("wg", "show", ours)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in (outer, peer_ns, inner):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        for name in (ours, theirs):
            Path(f"/var/run/wireguard/{name}.sock").unlink(missing_ok=True)
