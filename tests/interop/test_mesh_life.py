"""A mesh node's life as a new user meets it, against a real `wgpy server` (SQLite) with the
nodes in network namespaces: secrets out of /proc, Ctrl-C during `up`, `down` that keeps the
node logged in, nothing registered when the interface cannot be made, and `wgpy status`
saying what is wrong with the control plane.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .mesh_lab import SERVER_PORT, WGPY, Mesh, MeshNode
from .netns import Lab, unique_ifname, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def mesh(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    mesh = Mesh(lab)
    yield mesh
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== node logs\n{mesh.logs()}")


def status(node: MeshNode) -> Any:
    result = node.ns.run([WGPY, "status", "--json", "--state-dir", str(node.state_dir)])
    return json.loads(result.stdout)


def status_text(node: MeshNode) -> str:
    return node.ns.run([WGPY, "status", "--state-dir", str(node.state_dir)]).stdout


def processes_showing(secret: str) -> list[str]:
    """Every process on this machine whose command line or environment holds ``secret``."""
    found = []
    needle = secret.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        for what in ("cmdline", "environ"):
            try:
                data = (entry / what).read_bytes()
            except OSError:
                continue  # gone, or a kernel thread
            if needle in data:
                found.append(f"{entry.name} ({what}): {data[:200]!r}")
    return found


def up_args(mesh: Mesh, node: MeshNode, *more: str) -> list[str]:
    return [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(node.state_dir),
            "--interface", node.ifname, "--hostname", node.name, *more]  # fmt: skip


def test_the_auth_key_is_in_no_command_line_nor_environment(mesh: Mesh) -> None:
    """`wgpy up --auth-key KEY` (daemon and --foreground) and WGPY_AUTH_KEY: while the node
    runs, no process shows the key in /proc/PID/cmdline or /proc/PID/environ."""
    key = mesh.auth_key("alice", "--reusable")
    assert not processes_showing(key)
    a = mesh.add_node("a")
    mesh.up(a, auth_key=key)  # --auth-key KEY on the command line, daemonized
    assert a.daemon_pid() is not None
    assert processes_showing(key) == []
    mesh.down(a)

    # --foreground with the key on the command line: the node runs in the process that was
    # started with it, which must not show it any more
    b = mesh.add_node("b")
    foreground = b.ns.spawn(
        up_args(mesh, b, "--foreground", "--auth-key", key), log="up-b", env={"LOG_LEVEL": "info"}
    )
    wait_for(
        lambda: " is up as " in foreground.output() or not foreground.alive,
        timeout=30,
        what="the foreground node to come up",
    )
    assert foreground.alive, foreground.output()
    assert processes_showing(key) == []
    foreground.signal(signal.SIGINT)
    assert foreground.wait_stopped(10) in (0, 1), foreground.output()

    # from the environment: not handed on to the daemon either
    c = mesh.add_node("c")
    result = c.ns.run(["env", f"WGPY_AUTH_KEY={key}", *up_args(mesh, c)], timeout=60)
    assert " is up as " in result.stdout
    c.joined = True
    assert processes_showing(key) == []


def block_server(mesh: Mesh) -> None:
    """The server's port drops every packet, as a host that went away does (no RST)."""
    rules = (
        "table inet wgpyblock {\n chain input {\n  type filter hook input priority 0;\n"
        f"  tcp dport {SERVER_PORT} drop\n }}\n}}\n"
    )
    mesh.hub.run(["nft", "-f", "-"], input=rules)


def unblock_server(mesh: Mesh) -> None:
    mesh.hub.run(["nft", "delete", "table", "inet", "wgpyblock"])


def test_ctrl_c_during_up_cancels_for_real_after_saying_what_it_waits_for(mesh: Mesh) -> None:
    """The server is unreachable: `up` says every 5 s that it waits; Ctrl-C then exits 130
    and stops the daemon, so when the server becomes reachable again nothing registers. The
    same for `up --foreground`, whether it runs the node itself or execs the daemon's
    program (its key on the command line)."""
    key = mesh.auth_key("alice", "--reusable")
    a, b, c = mesh.add_node("a"), mesh.add_node("b"), mesh.add_node("c")
    block_server(mesh)
    started = time.monotonic()
    up = a.ns.spawn(up_args(mesh, a, "--auth-key", key), log="up-a", env={"LOG_LEVEL": "info"})
    # and a node in the foreground (its key from the environment: no exec)
    fg = b.ns.spawn(
        up_args(mesh, b, "--foreground"),
        log="up-b",
        env={"LOG_LEVEL": "info", "WGPY_AUTH_KEY": key},
    )
    # and one that execs the daemon's program: `up` does not keep the key on its command line
    exec_fg = c.ns.spawn(
        up_args(mesh, c, "--foreground", "--auth-key", key), log="up-c", env={"LOG_LEVEL": "info"}
    )
    wait_for(
        lambda: "waiting for the login server" in up.output() or not up.alive,
        timeout=10,
        what="`up` to say it waits",
    )
    assert f"[#] waiting for the login server at {mesh.url()} (5 s)...\n" in up.output()
    daemon = a.daemon_pid()
    assert daemon is not None and daemon in a.ns.pids()
    up.signal(signal.SIGINT)  # Ctrl-C on the terminal: the foreground process group
    assert up.wait(15) == 130, up.output()
    assert f"interrupted: stop the mesh daemon (kill -TERM {daemon})" in up.output()
    assert daemon not in a.ns.pids() and a.daemon_pid() is None
    wait_for(
        lambda: "waiting for the login server" in fg.output() or not fg.alive,
        timeout=10,
        what="the foreground node to say it waits",
    )
    fg.signal(signal.SIGINT)
    assert fg.wait_stopped(15) == 130, fg.output()
    wait_for(
        lambda: "waiting for the login server" in exec_fg.output() or not exec_fg.alive,
        timeout=10,
        what="the exec'd foreground node to say it waits",
    )
    assert os.readlink(f"/proc/{exec_fg.pid}/cwd") == "/"  # its paths are absolute
    exec_fg.signal(signal.SIGINT)
    assert exec_fg.wait_stopped(15) == 130, exec_fg.output()
    assert "stopped before it was up" not in exec_fg.output()
    # the server becomes reachable while a connection attempt would still be retrying
    # (TCP retries its SYN 1, 3, 7 and 15 s after the first, and no attempt starts before
    # `started`): a daemon left running would register by `started + 15 s` and a bit
    unblock_server(mesh)
    assert time.monotonic() - started < 12, "too slow to test the retry that Ctrl-C stops"
    time.sleep(max(0.0, started + 20 - time.monotonic()))
    assert mesh.server_nodes() == {}, "a node registered after Ctrl-C"
    for node in (a, b, c):
        assert node.ns.pids() == []  # no daemon, nothing else left running
        assert node.ns.ip("link", "show", node.ifname, check=False).returncode != 0
        assert not node.state_dir.joinpath("node.token").exists()


def test_down_keeps_the_node_logged_in_and_up_brings_it_back_as_it_was(mesh: Mesh) -> None:
    key = mesh.auth_key("alice", "--reusable")
    a, b = mesh.join("a", "b", auth_key=key)
    mesh.wait_ping(a, b)
    before = mesh.server_nodes()["a"]
    mesh.down(a)
    after = mesh.server_nodes()["a"]
    assert after["expired"] is False and after["id"] == before["id"]
    mesh.up(a)  # no key: the stored token logs in again
    again = mesh.server_nodes()
    assert set(again) == {"a", "b"}  # the same name, no `a-1`
    assert again["a"]["id"] == before["id"] and again["a"]["ipv4"] == before["ipv4"]
    mesh.wait_ping(b, a)
    # logout is the command that leaves
    result = a.ns.run([WGPY, "logout", "--state-dir", str(a.state_dir)], timeout=60)
    assert "log out at" in result.stderr
    a.joined = False
    assert not a.state_dir.joinpath("node.token").exists()


def test_nothing_is_registered_when_the_interface_or_port_is_taken(mesh: Mesh) -> None:
    """A second node in the same namespace fails on the UDP port (41641 by default), and
    `--interface eth0` names a link that exists: neither leaves a node at the server."""
    key = mesh.auth_key("alice", "--reusable")
    (a,) = mesh.join("a", auth_key=key)
    second = a.state_dir.with_name("node-a-second")
    args = [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(second),
            "--hostname", "second", "--auth-key", key]  # fmt: skip
    other = a.ns.run([*args, "--interface", unique_ifname("wm")], check=False, timeout=60)
    assert other.returncode == 1
    assert "UDP port 41641 or its control socket is in use" in other.stderr
    assert set(mesh.server_nodes()) == {"a"}, "the failed node was registered"
    eth = a.ns.run([*args, "--interface", "eth0"], check=False, timeout=60)
    assert eth.returncode == 1
    assert "the interface `eth0' already exists on this host" in eth.stderr
    assert set(mesh.server_nodes()) == {"a"}


def test_status_says_the_server_is_unreachable_or_the_node_deleted(mesh: Mesh) -> None:
    key = mesh.auth_key("alice", "--reusable")
    a, b = mesh.join("a", "b", auth_key=key)
    mesh.wait_peers(a, {b}, timeout=5)
    report = status(a)
    assert report["self"]["running"] is True and report["self"]["problem"] is None
    assert report["self"]["control"]["state"] == "connected"

    # the server goes away: a still runs, and says since when the server is unreachable
    stopped_at = time.time()
    mesh.stop_server()
    wait_for(
        lambda: status(a)["self"]["control"]["state"] == "unreachable",
        timeout=10,
        what="a to see the server unreachable",
    )
    control = status(a)["self"]["control"]
    assert stopped_at - 1 <= control["since"] <= time.time()
    text = status_text(a)
    assert f"# the coordination server {mesh.url()} has been unreachable since " in text
    assert "the peers are kept as they were" in text
    assert b.ipv4 in text  # and the peers it keeps

    # back: connected again
    mesh.start_server()
    wait_for(
        lambda: status(a)["self"]["control"]["state"] == "connected",
        timeout=15,
        what="a to reconnect",
    )

    # deleted by an admin: a's token is refused; status says so, not `running` alone
    mesh.admin("nodes", "delete", str(a.id))
    wait_for(
        lambda: status(a)["self"]["control"]["state"] == "refused",
        timeout=15,
        what="a to learn it was deleted",
    )
    text = status_text(a)
    assert "# the coordination server no longer accepts this node since " in text
    assert "it was deleted there (by an admin" in text
    assert "the policy lets this node reach no one" not in text
    assert os.stat(a.state_dir / "control.json").st_mode & 0o777 == 0o600
