"""The real daemon path, as root: two nodes in two network namespaces join the fake server
(in a third, bridged to both), ping each other over the mesh, follow a delta, and leave.

    hub: br0 (10.213.N.1, the fake server)
      +-- n1: e1 10.213.N.2 + the mesh interface (wgpy up --login-server, daemonized)
      +-- n2: e2 10.213.N.3 + the mesh interface
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgpy.mesh.client.state import StateDir

from .fakes import FakeServer, new_keypair

pytestmark = pytest.mark.root

PYTHON = sys.executable
SUBNET = 200 + os.getpid() % 50  # 10.213.SUBNET.0/24, unlikely to clash with a parallel run


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result


def wait_for(predicate: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, TUN)")
    for tool in ("ip", "ping", "wg"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    tag = f"{os.getpid()}-{time.monotonic_ns() % 100000}"
    names = {"hub": f"wgpym-{tag}-hub", "n1": f"wgpym-{tag}-n1", "n2": f"wgpym-{tag}-n2"}
    created: list[str] = []
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
            created.append(ns)
        hub = names["hub"]
        sh("ip", "-n", hub, "link", "add", "name", "br0", "type", "bridge")
        sh("ip", "-n", hub, "addr", "add", f"10.213.{SUBNET}.1/24", "dev", "br0")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        for i in (1, 2):
            ns = names[f"n{i}"]
            sh("ip", "-n", hub, "link", "add", f"h{i}", "type", "veth", "peer", "name", f"e{i}",
               "netns", ns)  # fmt: skip
            sh("ip", "-n", hub, "link", "set", f"h{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"10.213.{SUBNET}.{1 + i}/24", "dev", f"e{i}")
            sh("ip", "-n", ns, "link", "set", f"e{i}", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield names
    finally:
        # whatever still runs in the namespaces was started by this test (its daemons)
        for ns in created:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in created:
            sh("ip", "netns", "del", ns, check=False)


def cli_module() -> str:
    """``wgpy`` once its up/down hand mesh runs to wgpy.cli.mesh, else that module alone."""
    main = importlib.import_module("wgpy.cli.commands")
    mesh = importlib.import_module("wgpy.cli.mesh")
    return "wgpy" if mesh in main.COMMAND_MODULES else "wgpy.cli.mesh"


def wgpy(ns: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOG_LEVEL": "info"}
    return subprocess.run(
        ["ip", "netns", "exec", ns, PYTHON, "-m", cli_module(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def log_of(state_dir: Path) -> str:
    path = state_dir / "wgpy.log"
    return path.read_text()[-4000:] if path.exists() else "(no log)"


def test_two_nodes_join_ping_follow_a_delta_and_leave(lab: dict[str, str], tmp_path: Path) -> None:
    ifnames = {1: f"wm{os.getpid() % 100000}a", 2: f"wm{os.getpid() % 100000}b"}
    states = {i: tmp_path / f"state{i}" for i in (1, 2)}
    server = FakeServer(f"10.213.{SUBNET}.1", netns=lab["hub"]).start(stun=True)
    try:
        auth = server.add_auth_key()
        stun = f"10.213.{SUBNET}.1:{server.stun_port}"
        server.set_nat({"stun": [stun], "turn": [], "refresh": 600})
        for i in (1, 2):
            up = wgpy(
                lab[f"n{i}"], "up", "--login-server", server.url, "--auth-key", auth,
                "--state-dir", str(states[i]), "--interface", ifnames[i], "--hostname", f"n{i}",
            )  # fmt: skip
            assert up.returncode == 0, f"{up.stderr}\n{log_of(states[i])}"
            assert up.stdout.startswith(f"{ifnames[i]} is up as 100.64.0.{i}, fd7a:115c:a1e0::{i}")
        assert "with 1 peer" in up.stdout  # n2 saw n1 in its first map
        # the state: key and token private; the daemon's PID recorded
        for i in (1, 2):
            assert os.stat(states[i]).st_mode & 0o777 == 0o700
            assert os.stat(states[i] / "node.key").st_mode & 0o777 == 0o600
            assert os.stat(states[i] / "node.token").st_mode & 0o777 == 0o600
            assert StateDir(states[i]).daemon_pid() is not None
        n1, n2 = lab["n1"], lab["n2"]
        addresses = sh("ip", "-n", n1, "-brief", "address", "show", "dev", ifnames[1]).stdout
        assert "100.64.0.1/32" in addresses and "fd7a:115c:a1e0::1/128" in addresses
        # endpoints were reported: each node's veth address with its listen port
        wait_for(
            lambda: (
                [n.endpoints for n in server.nodes.values()]
                == [[f"10.213.{SUBNET}.2:41641"], [f"10.213.{SUBNET}.3:41641"]]
            ),
            5,
            "both endpoints",
        )
        # and their ICE candidates, after asking the server's STUN responder from the
        # WireGuard port itself (no NAT here: the mapping is the host candidate)
        wait_for(
            lambda: all(
                n.candidates and n.candidates[0].split()[4:8] == [address, "41641", "typ", "host"]
                for n, address in zip(
                    server.nodes.values(), (f"10.213.{SUBNET}.2", f"10.213.{SUBNET}.3"), strict=True
                )
            ),
            5,
            "both nodes' candidates",
        )
        assert {(f"10.213.{SUBNET}.{i}", 41641) for i in (2, 3)} <= set(server.stun_sources)
        # n1 learns n2 (a delta) with its endpoint
        wait_for(
            lambda: "100.64.0.2" in sh("ip", "-n", n1, "route", "show", "dev", ifnames[1]).stdout,
            5,
            "n1's route to n2",
        )
        dump = sh("ip", "netns", "exec", n1, "wg", "show", ifnames[1], "dump").stdout
        assert server.nodes[2].public_key in dump
        assert f"10.213.{SUBNET}.3:41641" in dump
        # the mesh carries traffic both ways, over IPv4 and IPv6
        for ns, target in ((n1, "100.64.0.2"), (n2, "100.64.0.1"), (n1, "fd7a:115c:a1e0::2")):
            wait_for(
                lambda ns=ns, target=target: (
                    sh(
                        "ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", target, check=False
                    ).returncode
                    == 0
                ),
                15,
                f"ping {target} from {ns}",
            )
        # a delta: a new peer's route appears on n1 well within a second
        _, public = new_keypair()
        start = time.monotonic()
        peer = server.add_node("n3", public, ["192.0.2.3:41641"])
        wait_for(
            lambda: peer.ipv4 in sh("ip", "-n", n1, "route", "show", "dev", ifnames[1]).stdout,
            2,
            "the new peer's route",
        )
        assert time.monotonic() - start < 1.0
        # a second up on the same state dir is refused while the first runs
        again = wgpy(n1, "up", "--login-server", server.url, "--state-dir", str(states[1]))
        assert again.returncode == 1 and "already runs on" in again.stderr
        # leave: by state dir, and by interface name
        down = wgpy(n1, "down", "--state-dir", str(states[1]))
        assert down.returncode == 0, down.stderr
        down = wgpy(n2, "down", ifnames[2])
        assert down.returncode == 0, down.stderr
        for i in (1, 2):
            link = sh("ip", "-n", lab[f"n{i}"], "link", "show", ifnames[i], check=False)
            assert link.returncode != 0, f"{ifnames[i]} is still there"
            assert StateDir(states[i]).daemon_pid() is None
            assert not Path(f"/var/run/wireguard/{ifnames[i]}.sock").exists()
        # down stops the node and keeps it logged in (as `tailscale down`)
        assert server.requests_to("POST", "/api/v1/logout") == []
        # up again without a key: the stored token logs in, same addresses
        up = wgpy(n1, "up", "--login-server", server.url, "--state-dir", str(states[1]))
        assert up.returncode == 0, f"{up.stderr}\n{log_of(states[1])}"
        assert up.stdout.startswith(f"{ifnames[1]} is up as 100.64.0.1,")
        assert len(server.requests_to("POST", "/api/v1/login")) == 1
        assert wgpy(n1, "logout", "--state-dir", str(states[1])).returncode == 0
        assert not (states[1] / "node.key").exists()
        assert sh("ip", "-n", n1, "link", "show", ifnames[1], check=False).returncode != 0
    finally:
        for state_dir in states.values():
            pid = StateDir(state_dir).daemon_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        server.stop()
