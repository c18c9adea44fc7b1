"""`WG_QUICK_USERSPACE_IMPLEMENTATION=wgpy-userspace wg-quick up CONF` on a host without the
WireGuard kernel module (this one): the real wg-quick drives wgpy, then tears it down (root)."""

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


def test_wg_quick_runs_wgpy_userspace_and_tears_it_down(tmp_path: Path) -> None:
    tag = f"{os.getpid() % 100000}"
    ns, name = f"wgpy-wq-{tag}", f"wgq{tag}"
    conf = tmp_path / f"{name}.conf"
    conf.write_text(
        "[Interface]\n"
        f"PrivateKey = {wgpy.generate_private_key()}\n"
        "Address = 10.55.0.1/24\n"
        "ListenPort = 51999\n\n"
        "[Peer]\n"
        f"PublicKey = {wgpy.public_key(wgpy.generate_private_key())}\n"
        "AllowedIPs = 10.55.0.2/32, 0.0.0.0/0\n"
        "Endpoint = 127.0.0.1:51998\n"
    )
    conf.chmod(0o600)
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "WG_QUICK_USERSPACE_IMPLEMENTATION": "wgpy-userspace",
    }
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        up = subprocess.run(
            ["ip", "netns", "exec", ns, "wg-quick", "up", str(conf)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert "[#] wgpy-userspace" in up.stderr
        show = subprocess.run(
            ["ip", "netns", "exec", ns, "wg", "show", name, "dump"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        interface, peer = show.stdout.splitlines()
        assert interface.split("\t")[2:4] == ["51999", "0xca6c"]  # port, fwmark 51820
        assert peer.split("\t")[2:4] == ["127.0.0.1:51998", "10.55.0.2/32,0.0.0.0/0"]
        rules = subprocess.run(["ip", "-n", ns, "rule"], capture_output=True, text=True)
        assert "not from all fwmark 0xca6c lookup 51820" in rules.stdout
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        assert pids.stdout.split(), "the daemon runs in the namespace"
        down = subprocess.run(
            ["ip", "netns", "exec", ns, "wg-quick", "down", str(conf)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr
        # the interface is gone, so the daemon exits by itself, and its socket with it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            if not left.stdout.split():
                break
            time.sleep(0.1)
        assert not left.stdout.split()
        assert not Path(f"/var/run/wireguard/{name}.sock").exists()
    finally:
        for pid in subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True
        ).stdout.split():
            subprocess.run(["kill", pid], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)
