"""The mesh end to end: `wgpy server` and nodes joined with `wgpy up --login-server`, each in
a network namespace on one flat underlay, on SQLite and on PostgreSQL (a cluster these tests
start; with two server replicas on one database).

What the nodes do is checked on the nodes themselves: their WireGuard peers (`wg show`), their
routes, and pings over the mesh.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mesh.pg import PostgresCluster, PostgresUnavailable, postgres_cluster

from .mesh_lab import WGPY, Mesh, MeshNode
from .netns import Lab, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

BACKENDS = ["sqlite", "postgresql"]
CHANGE_DEADLINE = 2.0  # seconds for a deletion or expiry to reach every node (the spec's figure)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    try:
        with postgres_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as e:
        pytest.fail(f"PostgreSQL did not start ({e}); `make setup` installs it")


def new_database(cluster: PostgresCluster) -> str:
    """A fresh database, reached through the cluster's Unix socket: the servers run in a
    namespace of their own."""
    return cluster.socket_dsn_for(cluster.create_database("mesh_"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_mesh(lab: Lab, backend: str, request: pytest.FixtureRequest, replicas: int = 1) -> Mesh:
    url = None
    if backend == "postgresql":
        url = new_database(request.getfixturevalue("postgres"))
    mesh = Mesh(lab, database_url=url, replicas=replicas)
    request.node.mesh = mesh
    return mesh


@pytest.fixture(autouse=True)
def _mesh_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)
    mesh = getattr(request.node, "mesh", None)
    if mesh is not None and (rep is None or rep.failed):
        print(f"\n===== node logs\n{mesh.logs()}")


def others(mesh: Mesh, node: MeshNode, *, excluding: tuple[MeshNode, ...] = ()) -> set[MeshNode]:
    return {n for n in mesh.nodes.values() if n is not node and n not in excluding and n.joined}


def wgpy_status(mesh: Mesh, node: MeshNode) -> Any:
    result = node.ns.run([WGPY, "status", "--json", "--state-dir", str(node.state_dir)])
    return json.loads(result.stdout)


def pair_policy(allowed: list[tuple[str, str]], user: str = "alice") -> dict[str, object]:
    """Accept rules both ways for each pair of hostnames, nothing else."""
    acls = []
    for a, b in allowed:
        for src, dst in ((a, b), (b, a)):
            acls.append(
                {"action": "accept", "src": [f"node:{user}/{src}"], "dst": [f"node:{user}/{dst}"]}
            )
    return {"acls": acls}


def set_policy(mesh: Mesh, policy: dict[str, object], replica: int = 0) -> None:
    path = mesh.workdir / f"policy-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(policy))
    mesh.admin("policy", "set", str(path), replica=replica)


def test_three_nodes_ping_each_other_and_a_policy_separates_one_pair(
    lab: Lab, backend: str, request: pytest.FixtureRequest
) -> None:
    mesh = make_mesh(lab, backend, request)
    a, b, c = mesh.join("a", "b", "c", auth_key=mesh.auth_key("alice", "--reusable"))
    for node in (a, b, c):
        mesh.wait_peers(node, others(mesh, node), timeout=5)
    for src in (a, b, c):
        for dst in others(mesh, src):
            mesh.wait_ping(src, dst)
    assert a.ping(c, ipv6=True) == 1 and c.ping(a, ipv6=True) == 1
    # `wgpy status` on a: both peers, online, with a handshake over their veth addresses
    status = wgpy_status(mesh, a)
    assert status["self"]["running"] is True and status["self"]["ipv4"] == a.ipv4
    peers = {p["hostname"]: p for p in status["peers"]}
    assert set(peers) == {"b", "c"}
    for node in (b, c):
        assert peers[node.name]["online"] is True
        assert peers[node.name]["endpoint"] == f"{node.underlay}:41641"
        assert peers[node.name]["latest_handshake"] and peers[node.name]["rx_bytes"] > 0
    table = a.ns.run([WGPY, "status", "--state-dir", str(a.state_dir)]).stdout
    assert f"this node: {a.ifname}, running" in table
    assert re.search(
        rf"{re.escape(b.ipv4)}\s+b\s+alice\s+b\.alice\.mesh\.internal\s+online; direct "
        rf"{b.underlay}:41641",
        table,
    )
    # `wgpy ping b` on a: the pong came over the direct path, which ends the run
    pong = a.ns.run([WGPY, "ping", "b", "--state-dir", str(a.state_dir)]).stdout
    assert re.fullmatch(
        rf"pong from b \({re.escape(b.ipv4)}\) via direct {b.underlay}:41641 in [0-9.]+ ms\n", pong
    ), pong

    # a and c may no longer reach each other; b still reaches both
    set_policy(mesh, pair_policy([("a", "b"), ("b", "c")]))
    mesh.wait_peers(a, {b}, timeout=CHANGE_DEADLINE)
    mesh.wait_peers(c, {b}, timeout=CHANGE_DEADLINE)
    mesh.wait_peers(b, {a, c}, timeout=CHANGE_DEADLINE)
    assert c.ipv4 not in a.routes() and a.ipv4 not in c.routes()
    assert a.ping(c, count=2) == 0 and c.ping(a, count=2) == 0
    wait_for(
        lambda: [p["hostname"] for p in wgpy_status(mesh, a)["peers"]] == ["b"],
        timeout=5,
        what="a's status to list only b",
    )
    for src, dst in ((a, b), (b, a), (b, c), (c, b)):
        assert src.ping(dst, count=2, wait=2) >= 1, f"{src.name} -> {dst.name}"

    # the default again (no policy: one user's nodes reach each other)
    set_policy(mesh, {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["user:alice"]}]})
    mesh.wait_peers(a, {b, c}, timeout=CHANGE_DEADLINE)
    mesh.wait_ping(a, c)


def test_deleted_expired_and_ephemeral_nodes_leave_every_other_node(
    lab: Lab, backend: str, request: pytest.FixtureRequest
) -> None:
    mesh = make_mesh(lab, backend, request)
    a, b, c = mesh.join("a", "b", "c", auth_key=mesh.auth_key("alice", "--reusable"))
    (d,) = mesh.join("d", auth_key=mesh.auth_key("alice", "--ephemeral"))
    for node in (a, b, c, d):
        mesh.wait_peers(node, others(mesh, node), timeout=5)
    mesh.wait_ping(a, d)

    # deleted: gone from every other node within the deadline
    mesh.admin("nodes", "delete", str(b.id))
    for node in (a, c, d):
        mesh.wait_peers(node, {a, c, d} - {node}, timeout=CHANGE_DEADLINE)
    assert "b" not in mesh.server_nodes()

    # expired: likewise, and the server still lists it as expired
    mesh.admin("nodes", "expire", str(c.id))
    for node in (a, d):
        mesh.wait_peers(node, {a, d} - {node}, timeout=CHANGE_DEADLINE)
    assert mesh.server_nodes()["c"]["expired"] is True
    assert a.ping(c, count=1) == 0

    # ephemeral: its daemon dies without a word; the server removes it once it is offline
    pid = d.daemon_pid()
    assert pid is not None and pid in d.ns.pids()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "d" not in mesh.server_nodes(), timeout=15, what="the ephemeral node to go")
    mesh.wait_peers(a, set(), timeout=CHANGE_DEADLINE)


def test_pings_continue_while_the_server_is_down_and_the_nodes_resync(
    lab: Lab, backend: str, request: pytest.FixtureRequest
) -> None:
    mesh = make_mesh(lab, backend, request)
    a, b, c = mesh.join("a", "b", "c", auth_key=mesh.auth_key("alice", "--reusable"))
    for src, dst in ((a, b), (b, c), (c, a)):
        mesh.wait_ping(src, dst)

    # 5 pings a second on three pairs, through 30 s of outage and the reconnection
    outage = 30.0
    count = int((outage + 10) / 0.2)
    ping = ["ping", "-n", "-q", "-i", "0.2", "-c", str(count), "-W", "1"]
    pingers = [
        (src, dst, src.ns.spawn([*ping, dst.ipv4], log=f"ping-{dst.name}"))
        for src, dst in ((a, b), (b, c), (c, a))
    ]
    time.sleep(3)
    mesh.stop_server()
    down_since = time.monotonic()
    time.sleep(outage)
    for node in (a, b, c):  # the data plane kept its peers
        assert node.peers() == {n.public_key for n in others(mesh, node)}
    mesh.start_server()
    print(f"server down for {time.monotonic() - down_since:.1f} s")

    # every node comes back online by itself...
    wait_for(
        lambda: all(n["online"] for n in mesh.server_nodes().values()),
        timeout=60,
        interval=0.5,
        what="all three nodes to reconnect",
    )
    # ...and follows changes again: a fourth node joins and every other node learns it
    (d,) = mesh.join("d", auth_key=mesh.auth_key("alice"))
    for node in (a, b, c):
        mesh.wait_peers(node, {a, b, c, d} - {node}, timeout=CHANGE_DEADLINE)
    mesh.wait_ping(a, d)

    for src, dst, pinger in pingers:
        pinger.wait(timeout=count * 0.2 + 30)
        summary = pinger.output()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", summary)
        assert m, summary
        sent, received = int(m.group(1)), int(m.group(2))
        assert sent == count and received == sent, f"{src.name} -> {dst.name}: {summary}"


def test_two_replicas_on_one_database_serve_one_mesh(
    lab: Lab, request: pytest.FixtureRequest
) -> None:
    mesh = make_mesh(lab, "postgresql", request, replicas=2)
    key = mesh.auth_key("alice", "--reusable")
    a = mesh.add_node("a")
    b = mesh.add_node("b")
    mesh.up(a, auth_key=key, replica=0)
    mesh.up(b, auth_key=key, replica=1)
    mesh.wait_peers(a, {b}, timeout=CHANGE_DEADLINE)
    mesh.wait_peers(b, {a}, timeout=CHANGE_DEADLINE)
    mesh.wait_ping(a, b)
    mesh.wait_ping(b, a)

    # a change made through one replica reaches a node streaming from the other
    c = mesh.add_node("c")
    mesh.up(c, auth_key=key, replica=1)
    mesh.wait_peers(a, {b, c}, timeout=CHANGE_DEADLINE)
    mesh.admin("nodes", "delete", str(b.id), replica=0)
    mesh.wait_peers(c, {a}, timeout=CHANGE_DEADLINE)
    mesh.wait_peers(a, {c}, timeout=CHANGE_DEADLINE)
    mesh.wait_ping(c, a)
