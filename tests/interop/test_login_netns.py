"""A node joins by interactive login through the server's pages, end to end in network
namespaces: `wgpy up --login-server URL` with no auth key prints the URL and waits; a person
(tests/interop/login_walk.py, in the server's namespace) signs in with a password, enrols
TOTP, connects the device; the node comes up as that user's and pings a peer over the mesh.
The seconds from `wgpy up` to the URL, and from Connect to the node being up, are printed
(the figures in the issue's note).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mesh_lab import NODE_ENV, WGPY, Mesh
from .netns import Lab, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

PASSWORD = "correct horse battery"
TESTS = Path(__file__).resolve().parents[1]
URL = re.compile(r"(http://\S+/login/[A-Za-z0-9_-]+)")


@pytest.fixture
def mesh(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    mesh = Mesh(lab)
    yield mesh
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== node logs\n{mesh.logs()}")


def walk_pages(mesh: Mesh, url: str, name: str) -> dict[str, object]:
    """A person signing in at ``url`` (from the server's namespace, where its address is)."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    result = mesh.hub.run(
        ["env", f"PYTHONPATH={path}", sys.executable, "-m", "interop.login_walk", url, name],
        input=PASSWORD + "\n",
        check=False,
        timeout=60,
    )
    walked: dict[str, object] = json.loads(result.stdout or "{}")
    assert result.returncode == 0, f"the walk failed: {walked} {result.stderr[-2000:]}"
    return walked


def test_a_node_joins_by_signing_in_on_the_pages(mesh: Mesh) -> None:
    mesh.hub.run(
        [WGPY, "admin", "--server", mesh.url(), "--api-key", mesh.api_key,
         "users", "create", "alice", "--password", "--password-stdin"],
        input=PASSWORD + "\n",
    )  # fmt: skip
    (peer,) = mesh.join("peer", auth_key=mesh.auth_key("alice"))
    node = mesh.add_node("laptop")
    args = [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(node.state_dir),
            "--interface", node.ifname, "--hostname", node.name]  # fmt: skip
    started = time.monotonic()
    up = node.ns.spawn(args, log="up", env=NODE_ENV)
    wait_for(
        lambda: URL.search(up.output()) is not None or not up.alive,
        timeout=30,
        what="wgpy up to print the login URL",
    )
    match = URL.search(up.output())
    assert match, f"wgpy up printed no URL:\n{up.output()}"
    url_after = time.monotonic() - started
    assert not mesh.server_nodes().get("laptop"), "nothing is registered before the sign-in"
    walked = walk_pages(mesh, match[1], "alice")
    assert walked["titles"] == [
        "Sign in to connect a device",
        "Set up your authenticator",
        "Connect this device?",
        "Device connected",
    ]
    connected = time.monotonic()
    assert up.wait(timeout=60) == 0, up.output()
    up_after = time.monotonic() - connected
    m = re.search(r" is up as ([\d.]+), ([0-9a-f:]+)", up.output())
    assert m, up.output()
    node.ipv4, node.ipv6, node.joined = m[1], m[2], True
    record = mesh.server_nodes()["laptop"]
    assert record["user"] == "alice" and record["expires_at"] is not None
    node.public_key, node.id = record["public_key"], record["id"]
    assert str(record["ipv4"]) in str(walked["message"]) or node.ipv4 in up.output()
    mesh.wait_peers(node, {peer}, timeout=15)
    mesh.wait_ping(node, peer)
    print(
        f"\nfigures: wgpy up -> URL printed {url_after:.2f} s; the pages walked in "
        f"{walked['seconds']} s; Connect -> wgpy up returned (node up) {up_after:.2f} s"
    )
