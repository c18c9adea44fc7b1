"""Interactive login end to end, against a real `wgpy server` (SQLite) with the nodes in
network namespaces: `wgpy up --login-server URL` without an auth key prints a URL and waits;
an admin approves it (`wgpy admin login approve ID --user alice`, the second path beside the
pages) and the node comes up and reaches its peer; Ctrl-C withdraws the request (exit 130,
nothing registered, no daemon); an expired node logs in again and keeps its name and
addresses; `wgpy status` warns before the key expires.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import time
from collections.abc import Iterator

import pytest

from .mesh_lab import NODE_ENV, WGPY, Mesh, MeshNode
from .netns import Lab, Process, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

URL = re.compile(r"\t(http://\S+/login/([A-Za-z0-9_-]+))\n")
TICK = re.compile(r"\r\x1b\[K\[#\] waiting for approval: (\d+:\d\d) left \(Ctrl-C cancels\)")


@pytest.fixture
def mesh(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    mesh = Mesh(lab)
    yield mesh
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== node logs\n{mesh.logs()}")


def spawn_up(mesh: Mesh, node: MeshNode) -> Process:
    """`wgpy up` without an auth key, in the background (its output to a log file)."""
    return node.ns.spawn(
        [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(node.state_dir),
         "--interface", node.ifname, "--hostname", node.name],
        log=f"up-{node.name}",
        env=NODE_ENV,
    )  # fmt: skip


def login_url(up: Process) -> tuple[str, str]:
    """The URL `up` printed and the request's id in it."""
    wait_for(
        lambda: URL.search(up.output()) is not None or not up.alive,
        timeout=30,
        what="`wgpy up` to print the login URL",
    )
    m = URL.search(up.output())
    assert m is not None, up.output()
    return m.group(1), m.group(2)


def joined(mesh: Mesh, node: MeshNode, up: Process) -> None:
    """`up` succeeded: take the node's addresses and id as Mesh.up does."""
    assert up.wait(60) == 0, up.output()
    m = re.search(r" is up as ([\d.]+), ([0-9a-f:]+)", up.output())
    assert m, up.output()
    node.joined = True
    node.ipv4, node.ipv6 = m.group(1), m.group(2)
    me = mesh.server_nodes()[node.name]
    node.public_key, node.id = me["public_key"], me["id"]


def approve(mesh: Mesh, request_id: str, user: str = "alice") -> dict[str, object]:
    node: dict[str, object] = mesh.admin("login", "approve", request_id, "--user", user)
    return node


def test_a_node_joins_by_interactive_login_approved_by_an_admin(mesh: Mesh) -> None:
    key = mesh.auth_key("alice")
    b = mesh.join("b", auth_key=key)[0]
    a = mesh.add_node("a")
    started = time.monotonic()
    up = spawn_up(mesh, a)
    url, request_id = login_url(up)
    shown = time.monotonic() - started
    assert url == f"{mesh.url()}/login/{request_id}"
    assert "[#] waiting for approval (10:00 left)" in up.output()
    assert "\r" not in up.output()  # not a terminal: plain lines
    pending = mesh.admin("login", "list")
    assert [(q["id"], q["hostname"]) for q in pending] == [(request_id, "a")]
    assert "a" not in mesh.server_nodes()  # nothing registered before approval

    approved_at = time.monotonic()
    node = approve(mesh, request_id)
    assert node["hostname"] == "a" and node["user"] == "alice" and node["expires_at"]
    joined(mesh, a, up)
    up_after = time.monotonic() - approved_at
    assert "[#] approved: node a of user alice" in up.output()
    mesh.wait_ping(a, b)
    connected = time.monotonic() - approved_at
    print(
        f"\nlogin figures: URL shown {shown:.2f} s after `up` started; `up` done "
        f"{up_after:.2f} s and first ping over the mesh {connected:.2f} s after approval"
    )
    assert mesh.server_nodes()["a"]["expires_at"]  # an interactive node expires (180 d)
    assert mesh.server_nodes()["b"]["expires_at"] is None  # an auth-key node does not


def test_ctrl_c_withdraws_the_request_and_registers_nothing(mesh: Mesh) -> None:
    mesh.admin("users", "create", "alice")
    a = mesh.add_node("a")
    up = spawn_up(mesh, a)
    _, request_id = login_url(up)
    up.signal(signal.SIGINT)  # Ctrl-C on the terminal: the foreground process group
    assert up.wait(15) == 130, up.output()
    assert (
        "wgpy up: cancelled: the login request was withdrawn; nothing was registered\n"
        in up.output()
    )
    states = {q["id"]: q["state"] for q in mesh.admin("login", "list", "--all")}
    assert states == {request_id: "cancelled"}
    refused = a.ns.run(
        [WGPY, "admin", "--server", mesh.url(), "--api-key", mesh.api_key,
         "login", "approve", request_id, "--user", "alice"],
        check=False,
        timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0 and "was cancelled on the device" in refused.stderr
    assert mesh.server_nodes() == {}
    assert a.ns.pids() == [] and a.daemon_pid() is None
    assert a.ns.ip("link", "show", a.ifname, check=False).returncode != 0
    assert not a.state_dir.joinpath("node.token").exists()


def test_an_expired_node_logs_in_again_with_its_name_and_addresses(mesh: Mesh) -> None:
    key = mesh.auth_key("alice")
    b = mesh.join("b", auth_key=key)[0]
    a = mesh.add_node("a")
    up = spawn_up(mesh, a)
    _, request_id = login_url(up)
    approve(mesh, request_id)
    joined(mesh, a, up)
    mesh.wait_ping(a, b)
    before = mesh.server_nodes()["a"]

    # three days left: the node hears it in its map, and status warns
    mesh.admin("nodes", "expiry", str(a.id), "3d")
    wait_for(
        lambda: "# this node's key expires on " in status_text(a),
        timeout=10,
        what="`wgpy status` to warn of the expiry",
    )
    assert "(in 2 days)" in status_text(a) or "(in 3 days)" in status_text(a)

    # expired: its peers lose it; `up` logs in again with its key and token
    mesh.admin("nodes", "expire", str(a.id))
    mesh.wait_peers(b, set(), timeout=10)
    mesh.down(a)
    again = spawn_up(mesh, a)
    _, second = login_url(again)
    assert "[#] this node's key has expired: log in again to renew it" in again.output()
    assert second != request_id
    approve(mesh, second)
    joined(mesh, a, again)
    after = mesh.server_nodes()["a"]
    assert (after["id"], after["hostname"]) == (before["id"], "a")
    assert (after["ipv4"], after["ipv6"]) == (before["ipv4"], before["ipv6"])
    assert after["expired"] is False and set(mesh.server_nodes()) == {"a", "b"}
    mesh.wait_ping(b, a)


def status_text(node: MeshNode) -> str:
    return node.ns.run([WGPY, "status", "--state-dir", str(node.state_dir)]).stdout


def test_an_expired_auth_key_node_logs_in_interactively(mesh: Mesh) -> None:
    """A node registered with an auth key does not expire by itself; one an admin expired
    (while it ran, or while it was down) logs in again interactively, as the same node."""
    key = mesh.auth_key("alice", "--reusable")
    a, b = mesh.join("a", "b", auth_key=key)
    before = mesh.server_nodes()["a"]
    assert before["expires_at"] is None
    mesh.admin("nodes", "expire", str(a.id))
    mesh.wait_peers(b, set(), timeout=10)
    mesh.down(a)
    up = spawn_up(mesh, a)
    _, request_id = login_url(up)
    assert "[#] this node's key has expired: log in again to renew it" in up.output()
    approve(mesh, request_id)
    joined(mesh, a, up)
    after = mesh.server_nodes()["a"]
    assert (after["id"], after["ipv4"], after["ipv6"]) == (
        before["id"],
        before["ipv4"],
        before["ipv6"],
    )
    assert after["expires_at"] is not None  # a person logged it in: it expires now
    mesh.wait_ping(b, a)

    # expired while it was down: the daemon says how, and the next `up` logs in
    mesh.down(b)
    mesh.admin("nodes", "expire", str(b.id))
    refused = mesh.up(b, check=False)
    assert refused.returncode != 0
    assert "run wgpy up again without an auth key to log in" in refused.stderr
    again = spawn_up(mesh, b)
    _, second = login_url(again)
    approve(mesh, second)
    joined(mesh, b, again)
    mesh.wait_ping(a, b)


def test_on_a_terminal_the_countdown_ticks_and_ctrl_c_cancels(mesh: Mesh) -> None:
    """`wgpy up` on a terminal (a pty): one line that counts down each second, rewritten in
    place; Ctrl-C (SIGINT to it) withdraws the request, says so and exits 130."""
    mesh.admin("users", "create", "alice")
    a = mesh.add_node("a")
    argv = a.ns.exec_args(
        ["env", *(f"{k}={v}" for k, v in NODE_ENV.items()),
         WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(a.state_dir),
         "--interface", a.ifname, "--hostname", "a"]
    )  # fmt: skip
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal's foreground program
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    out = b""

    def read(seconds: float, ticks: int = 0) -> None:
        """What the terminal shows, for ``seconds`` or until ``ticks`` countdown lines."""
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (ticks and len(TICK.findall(out.decode())) >= ticks):
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    return
                if not data:
                    return
                out += data

    try:
        read(20, ticks=3)
        os.kill(pid, signal.SIGINT)
        read(10)
    finally:
        status = os.waitpid(pid, 0)[1]
        os.close(fd)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 130, text
    ticks = TICK.findall(text)
    assert len(ticks) >= 3 and len(set(ticks)) >= 2, text  # it counts down
    assert "wgpy up: cancelled: the login request was withdrawn; nothing was registered" in text
    assert [q["state"] for q in mesh.admin("login", "list", "--all")] == ["cancelled"]
    assert mesh.server_nodes() == {}
