"""`make demo` and `make demo-wg` run to the end, show what they promise, and leave nothing
behind (namespaces, control sockets)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .netns import namespaces_matching, run_program

pytestmark = [pytest.mark.root, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def sockets() -> set[str]:
    directory = Path("/var/run/wireguard")
    return {p.name for p in directory.glob("*.sock")} if directory.exists() else set()


def run_demo(script: str) -> subprocess.CompletedProcess[str]:
    result, pid = run_program([sys.executable, str(EXAMPLES / script)], timeout=300)
    # the demo names its namespaces and interfaces after its PID
    tag = str(pid % 100000)
    assert not namespaces_matching(lambda n: f"-{tag}-" in n)
    assert not [s for s in sockets() if s.startswith((f"wgd{tag}", f"wgm{tag}"))]
    netns_etc = Path("/etc/netns")  # the namespaces' own resolv.conf files are gone too
    assert not [d for d in netns_etc.glob(f"*-{tag}-*")] if netns_etc.exists() else True
    return result


def test_the_mesh_demo() -> None:
    result = run_demo("mesh_demo.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # the open node ends direct with both others (the NATs let its checks in)
    assert "cloud <-> home: direct" in out and "cloud <-> phone: direct" in out
    assert out.count(" 3/3 replies, path direct") == 4  # those two pairs, both ways
    # hard NAT against easy NAT: relayed where the node speaks TURN, else shown without one
    relayed = out.count(" 3/3 replies, path relay") == 2 and "home <-> phone: relay" in out
    assert relayed or "home <-> phone: no path, no ping" in out, out[-3000:]
    for name in ("cloud", "home", "phone"):
        assert f"==> {name}: wgpy status" in out
    assert out.count("this node: ") == 3
    # names through each node's resolver, and a subnet route that works only once approved
    assert "cloud$ ping home -> 100.64.0.2: 2/2 replies" in out or (
        "cloud$ ping home -> fd7a:115c:a1e0::2: 2/2 replies" in out
    ), out[-3000:]
    assert "cloud$ wgpy ping phone: pong from phone" in out
    assert "before approval: cloud -> printer 192.168.1.11: 0/2 replies" in out
    assert "wgpy admin routes list: home 192.168.1.0/24: awaiting approval" in out
    assert "cloud -> printer 192.168.1.11: 3/3 replies, through home" in out
    assert "routes 192.168.1.0/24; direct" in out  # cloud's status: home's route
    assert "==> the mesh works" in out and "namespaces, processes and files removed" in out


def test_the_wireguard_demo() -> None:
    result = run_demo("demo.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count(" 0% packet loss") == 6
    assert "wg show on carol (wireguard-go)" in result.stdout
