"""Real mesh nodes (`wgpy up`: daemons and TUNs) in namespaces, against tests/mesh/fakes.py's
coordination server: what test_ice_mesh.py, test_relay_mesh.py and test_status_ping.py share
(tests/interop/mesh_lab.py runs the real `wgpy server` instead)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mesh.fakes import FakeServer

from wgpy.mesh.client.state import StateDir

from .netns import Namespace, unique_ifname

WGPY = [sys.executable, "-m", "wgpy"]


def up(ns: Namespace, server: FakeServer, auth: str, state: Path, name: str, *, port: int) -> None:
    """``wgpy up`` in ``ns`` as ``name`` on UDP ``port`` (its daemon stays)."""
    result = ns.run(
        [
            *WGPY, "up", "--login-server", server.url, "--auth-key", auth,
            "--state-dir", str(state), "--interface", unique_ifname("wm"),
            "--hostname", name, "--listen-port", str(port),
        ],
        check=False,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def down(ns: Namespace, state: Path) -> None:
    """``wgpy down``, which must succeed."""
    result = ns.run([*WGPY, "down", "--state-dir", str(state)], check=False, timeout=30)
    assert result.returncode == 0, result.stderr


def kill_daemons(states: Iterable[Path]) -> None:
    """Kill what a failed test left running (after :func:`down`: nothing)."""
    for state in states:
        pid = StateDir(state).daemon_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


def path_to(state: Path, hostname: str) -> dict[str, Any] | None:
    """The path a node saved for the peer ``hostname`` (None before it has one)."""
    try:
        peers = StateDir(state).read_peers()
    except Exception:  # written while we read: look again
        return None
    for peer in peers:
        if peer.get("hostname") == hostname and isinstance(peer.get("path"), dict):
            path: dict[str, Any] = peer["path"]
            return path
    return None
