"""The client against the real coordination server (wgpy.mesh.server, SQLite), in one
process: the contract of docs/mesh-api.md as both sides read it. Nodes run on fake
interfaces (a real Device, no TUN); the admin CLI runs in-process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from wgpy import cli
from wgpy.cli.environment import Environment
from wgpy.keys import key_to_base64
from wgpy.mesh.client.admin import AdminClient
from wgpy.mesh.client.api import NodeClient
from wgpy.mesh.client.backoff import Backoff
from wgpy.mesh.client.node import MeshError, MeshNode, NodeConfig
from wgpy.mesh.client.state import StateDir
from wgpy.mesh.server import MeshServer, ServerConfig
from wgpy.protocol.crypto import public_key
from wgpy.protocol.flows import ReplyOnlyFilter

from .fakes import FakeHost, FakeInterface, key_texts, until


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 40))


class Node:
    def __init__(self, url: str, directory: Path, name: str, auth_key: str | None) -> None:
        self.state = StateDir(directory / name)
        self.private = self.state.load_or_create_key()
        self.public = public_key(self.private)
        self.host = FakeHost([f"192.0.2.{len(name)}"])
        self.interfaces: list[FakeInterface] = []
        self.config = NodeConfig(
            interface=f"wg{name}",
            listen_port=41641,
            hostname=name,
            auth_key=auth_key,
            endpoint_interval=0.05,
            startup_timeout=5.0,
        )
        self.url = url
        self.node: MeshNode | None = None
        self.task: asyncio.Task[None] | None = None

    async def factory(self, name: str, key: bytes, port: int) -> FakeInterface:
        self.interfaces.append(FakeInterface(name, key, port))
        return self.interfaces[-1]

    async def start(self) -> MeshNode:
        client = NodeClient(self.url, token=self.state.read_token(), timeout=3.0)
        node = self.node = MeshNode(
            self.config,
            client,
            self.state,
            self.private,
            interface_factory=self.factory,
            host=self.host,
            backoff=Backoff(0.05, 0.2),
        )
        self.task = asyncio.create_task(node.run())
        ready = asyncio.create_task(node.ready.wait())
        done, _ = await asyncio.wait([ready, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            ready.cancel()
            self.task.result()
        return node

    async def stop(self) -> None:
        if self.node is not None and self.task is not None:
            self.node.stop()
            await asyncio.wait_for(self.task, 5)
            await self.node.client.close()


def admin_cli(url: str, key: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.BytesIO(stdin), stdout=out, stderr=err, env={})
    status = cli.main(["admin", "--server", url, "--api-key", key, *args], env)
    return int(status), out.getvalue(), err.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        state_dir=tmp_path / "server",
        ephemeral_grace=0.3,
        keepalive=0.5,
        heartbeat=0.5,
        shutdown_timeout=1.0,
    )


def test_nodes_and_admin_against_the_real_server(config: ServerConfig, tmp_path: Path) -> None:
    servers: list[MeshServer] = []

    async def main() -> None:
        try:
            await body()
        finally:
            for server in servers:
                await server.stop()

    async def body() -> None:
        server = MeshServer(config)
        servers.append(server)
        await server.start()
        _, api_key = await server.store.api_keys.create(None)
        key = str(api_key)
        url = server.url
        # the admin CLI runs its own loop: give it a thread
        call = asyncio.to_thread
        status, out, err = await call(admin_cli, url, key, "users", "create", "alice")
        assert status == 0, err
        status, out, err = await call(
            admin_cli, url, key, "preauthkeys", "create", "--user", "alice", "--reusable"
        )
        assert status == 0, err
        auth = out.strip()
        assert auth.startswith("wgpy_auth_")

        a = Node(url, tmp_path, "a", auth)
        b = Node(url, tmp_path, "b", auth)
        node_a = await a.start()
        node_b = await b.start()
        try:
            # each sees the other, with its endpoint, on the device
            await until(lambda: b.public in node_a.device.peers, 3.0, "a sees b")
            assert a.public in node_b.device.peers
            peer = node_a.device.peers[b.public]
            await until(lambda: peer.endpoint == ("192.0.2.1", 41641), 3.0, "b's endpoint")
            assert node_a.inbound_allowed(b.public) and node_a.outbound_allowed(b.public)
            assert {str(n) for n in node_a.host.routes} == {
                f"{node_b.self_node.ipv4}/32",  # type: ignore[union-attr]
                f"{node_b.self_node.ipv6}/128",  # type: ignore[union-attr]
            }

            status, out, err = await call(admin_cli, url, key, "nodes", "list")
            assert status == 0, err
            rows = out.splitlines()
            assert rows[0].split()[:4] == ["ID", "HOSTNAME", "USER", "IPV4"]
            assert sorted(r.split()[1] for r in rows[1:]) == ["a", "b"]

            # a one-way policy: a may reach b, b may not start flows to a
            policy = {"acls": [{"action": "accept", "src": ["node:alice/a"], "dst": ["*"]}]}
            status, out, err = await call(
                admin_cli, url, key, "policy", "set", "-", stdin=json.dumps(policy).encode()
            )
            assert status == 0, err
            await until(lambda: not node_a.inbound_allowed(b.public), 3.0, "policy on a")
            assert node_a.outbound_allowed(b.public)
            assert isinstance(node_a.device.peers[b.public].inbound_filter, ReplyOnlyFilter)
            assert node_b.inbound_allowed(a.public)
            assert not node_b.outbound_allowed(a.public)
            # a policy that does not validate is refused with the server's sentence
            bad = {"acls": [{"action": "accept", "src": ["user:bob"], "dst": ["*"]}]}
            status, out, err = await call(
                admin_cli, url, key, "policy", "check", "-", stdin=json.dumps(bad).encode()
            )
            assert status == 1 and err.startswith("wgpy admin: ")
            assert 'acls[0].src[0]: unknown user "bob"' in err and err.count("\n") == 1

            # the server goes away: the data plane stays as it is; it comes back (same
            # database, same port): the nodes reconnect and resync
            peers_before = dict(node_a.device.peers)
            await server.stop()
            await until(lambda: node_a.backoff.failures >= 2, 5.0, "a retrying")
            assert node_a.device.peers == peers_before and not node_a.expired
            port = int(url.rsplit(":", 1)[1])
            server = MeshServer(dataclasses.replace(config, port=port))
            servers.append(server)
            await server.start()
            await until(lambda: node_a.connected and node_b.connected, 5.0, "resync")
            assert node_a.full_maps == 2 and node_b.full_maps == 2
            assert node_a.device.peers == peers_before  # the same Peer objects
            b_id = str(node_b.self_node.raw["id"])  # type: ignore[union-attr]
            # expiry of b: b tears its peers down, a loses b
            status, out, err = await call(admin_cli, url, key, "nodes", "expire", b_id)
            assert status == 0, err
            await until(lambda: node_b.expired and not node_b.device.peers, 3.0, "b expired")
            await until(lambda: b.public not in node_a.device.peers, 3.0, "a drops b")

            # nothing secret left the nodes
            async with AdminClient(url, token=key) as admin:
                nodes = await admin.list_nodes()
            assert {n["public_key"] for n in nodes} == {
                key_to_base64(a.public),
                key_to_base64(b.public),
            }
            text = json.dumps(nodes).encode()
            for private in (a.private, b.private):
                for spelling in key_texts(private):
                    assert spelling not in text
        finally:
            await a.stop()
            await b.stop()

        # login again with the stored token: same addresses
        again = Node(url, tmp_path, "a", None)
        node = await again.start()
        try:
            assert node.self_node is not None and node_a.self_node is not None
            assert node.self_node.ipv4 == node_a.self_node.ipv4
        finally:
            await again.node.client.logout()  # type: ignore[union-attr]
            await again.stop()

        # a bad pre-auth key: one sentence from the server
        bad = Node(url, tmp_path, "c", "wgpy_auth_0000000000000000_" + "x" * 43)
        with pytest.raises(MeshError, match=r"^the server refused to register this node: "):
            await bad.start()
        await bad.node.client.close()  # type: ignore[union-attr]

    run(main())
