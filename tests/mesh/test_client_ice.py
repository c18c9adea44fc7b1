"""Two mesh nodes find a direct path through the map's candidates: each reports its ICE
candidates and credentials, the (fake) server fans them out as peer changes, and each node's
path manager checks on its WireGuard socket and sets the peer's endpoint.

The nodes run whole Interfaces on loopback (UdpBind, a TUN stand-in) against FakeServer.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Any

import pytest
from support import PipeTun, ipv4_packet

from wgpy.cli import Environment
from wgpy.cli import main as main_cli
from wgpy.cli import status as status_module
from wgpy.device.interface import Interface
from wgpy.device.udp import UdpBind
from wgpy.keys import key_from_base64, key_to_base64
from wgpy.mesh.client.api import NodeClient
from wgpy.mesh.client.backoff import Backoff
from wgpy.mesh.client.node import MeshNode, NodeConfig
from wgpy.mesh.client.state import Settings, StateDir
from wgpy.nat.lifetime import Lifetime
from wgpy.protocol.crypto import public_key
from wgpy.uapi.client import DeviceState

from .fakes import FakeHost, FakeServer, until

TEST_TIMEOUT = 30.0


class LoopbackNode:
    """A mesh node on a real Interface on loopback: its host candidate is 127.0.0.1."""

    def __init__(self, server: FakeServer, directory: Path, name: str, auth: str) -> None:
        self.state = StateDir(directory / name)
        self.private = self.state.load_or_create_key()
        self.public = key_to_base64(public_key(self.private))
        self.tun = PipeTun(name)
        self.config = NodeConfig(
            interface=name, listen_port=0, hostname=name, auth_key=auth, endpoint_interval=0.05
        )
        self.client = NodeClient(server.url, timeout=2.0)
        self.node = MeshNode(
            self.config,
            self.client,
            self.state,
            self.private,
            interface_factory=self.factory,
            host=FakeHost(["127.0.0.1"]),
            backoff=Backoff(0.05, 0.2),
        )
        self.task: asyncio.Task[None] | None = None

    async def factory(self, name: str, key: bytes, port: int) -> Interface:
        return Interface(name, private_key=key, tun=self.tun, bind=UdpBind(port))  # type: ignore[arg-type]

    async def start(self) -> None:
        self.task = asyncio.create_task(self.node.run())
        await asyncio.wait_for(self.node.ready.wait(), 10)

    async def stop(self) -> None:
        self.node.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)
        await self.client.close()

    def path(self, other: LoopbackNode) -> str:
        paths = self.node.paths
        return "none" if paths is None else paths.path(key_from_base64(other.public)).kind


def saved_path(node: LoopbackNode, other: LoopbackNode) -> dict[str, Any] | None:
    """The path ``node`` saved for ``other`` in its state directory, once direct."""
    for peer in node.state.read_peers():
        if peer.get("public_key") == other.public and peer.get("path", {}).get("kind") == "direct":
            path: dict[str, Any] = peer["path"]
            return path
    return None


def test_two_nodes_end_direct_on_the_candidates_the_map_carries(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            a = LoopbackNode(server, tmp_path, "icea", auth)
            b = LoopbackNode(server, tmp_path, "iceb", auth)
            await a.start()
            await b.start()
            try:
                await until(lambda: a.path(b) == "direct" and b.path(a) == "direct", 10.0)
                assert a.node.iface is not None and b.node.iface is not None
                peer_b = a.node.iface.device.peers[key_from_base64(b.public)]
                assert peer_b.endpoint is not None
                assert peer_b.endpoint[:2] == ("127.0.0.1", b.node.iface.listen_port)
                assert not peer_b.roaming
                me_a, me_b = server.node_by_key(a.public), server.node_by_key(b.public)
                packet = ipv4_packet(me_a.ipv4, me_b.ipv4, b"over ice")
                a.tun.push([packet])
                await until(lambda: packet in b.tun.written, 5.0)
                # the path is saved for `wgpy status` with the peer list
                await until(lambda: saved_path(a, b) is not None, 2.0)
                saved = saved_path(a, b)
                assert saved is not None and saved["kind"] == "direct"
                assert saved["endpoint"] == f"127.0.0.1:{b.node.iface.listen_port}"
                assert isinstance(saved["rtt_ms"], float)
                # the map's endpoint for b changes (b reported another address): ICE's path
                # stays the endpoint, the map's is not set over it
                full_maps = a.node.full_maps
                server.update_node(me_b.id, endpoints=["192.0.2.99:4000"])
                await until(
                    lambda: (
                        a.node.peers[key_from_base64(b.public)].endpoints[0] == "192.0.2.99:4000"
                    ),
                    5.0,
                )
                assert peer_b.endpoint[:2] == ("127.0.0.1", b.node.iface.listen_port)
                assert full_maps == a.node.full_maps  # a delta, not a new map
                again = ipv4_packet(me_a.ipv4, me_b.ipv4, b"still over ice")
                a.tun.push([again])
                await until(lambda: again in b.tun.written, 5.0)
                # a peer that leaves the map is no longer checked
                server.remove_node(me_b.id)
                await until(lambda: a.node.paths is not None and a.path(b) == "none", 5.0)
            finally:
                await a.stop()
                await b.stop()

        asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT))


def saved_checks(node: LoopbackNode, public: str) -> str | None:
    for peer in node.state.read_peers():
        if peer.get("public_key") == public and isinstance(peer.get("path"), dict):
            return str(peer["path"].get("checks"))
    return None


def test_status_says_the_checks_run_and_then_that_they_found_no_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer whose candidates never answer: the node saves for `wgpy status` that its checks
    run, then that the round found no path, and `wgpy status` says so in words (this process
    is the daemon; the interface's control socket is the one thing not real here)."""
    monkeypatch.setattr(status_module, "uapi_get", lambda name: DeviceState(name))
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            a = LoopbackNode(server, tmp_path, "icea", auth)
            await a.start()
            try:
                ghost_key = key_to_base64(public_key(bytes(range(1, 33))))
                ghost = server.add_node("ghost", ghost_key, [])
                server.update_node(
                    ghost.id,
                    candidates=["1 1 udp 2130706431 127.0.0.1 9 typ host"],  # discard: silence
                    ice_ufrag="ghst",
                    ice_pwd="p" * 22,
                )
                await until(lambda: saved_checks(a, ghost_key) == "running", 3.0)
                await until(lambda: saved_checks(a, ghost_key) == "failed", 8.0)
                # what `wgpy up` writes beside the node's own files
                a.state.write_settings(Settings(server.url, "icea", 0, "icea"))
                a.state.write_pid(os.getpid())
                out = io.StringIO()
                env = Environment(stdin=io.BytesIO(), stdout=out, stderr=io.StringIO())
                assert main_cli(["status", "--state-dir", str(a.state.path)], env) == 0
                (line,) = [x for x in out.getvalue().splitlines() if " ghost " in x]
                assert "no path: ICE checks found none (retrying about every 30 s)" in line
            finally:
                await a.stop()

        asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT))


def test_peers_without_ice_get_wireguard_keepalives_at_the_node_s_interval(
    tmp_path: Path,
) -> None:
    """An older peer whose map entry carries only endpoints has no ICE path and so no
    checks to keep the NATs' mappings open: WireGuard's persistent keepalive does it, at the
    node's keepalive interval (measured shorter: shorter), and stops once the peer has ICE."""
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            a = LoopbackNode(server, tmp_path, "icea", auth)
            await a.start()
            try:
                assert a.node.iface is not None and a.node.paths is not None
                device = a.node.iface.device
                old_key = key_to_base64(public_key(bytes(range(1, 33))))
                old = server.add_node("old", old_key, ["192.0.2.7:41641"])
                peer = await until_peer(a, old_key)
                await until(lambda: peer.persistent_keepalive == 25, 3.0)
                assert a.node.paths.session(key_from_base64(old_key)) is None
                # armed for an interval from now (not at once: the peer may not know us yet)
                now = a.node.iface.now()
                assert now < peer.timers.persistent_keepalive <= now + 25
                # its node is upgraded: candidates come, ICE keeps the path, no keepalive
                server.update_node(
                    old.id,
                    candidates=["1 1 udp 2130706431 127.0.0.1 9 typ host"],
                    ice_ufrag="oldu",
                    ice_pwd="p" * 22,
                )
                await until(lambda: peer.persistent_keepalive == 0, 3.0)
                assert a.node.paths.session(key_from_base64(old_key)) is not None
                # and back: the candidates go, the keepalive comes back
                server.update_node(old.id, candidates=[], ice_ufrag="", ice_pwd="")
                await until(lambda: peer.persistent_keepalive == 25, 3.0)
                # the NAT's mapping lifetime measured short: both kinds of keepalive follow
                assert a.node.traversal is not None
                a.node.traversal.lifetime_measured(Lifetime(3.2, survived=4.0, died=6.0, took=7.0))
                assert peer.persistent_keepalive == 3
                assert peer.timers.persistent_keepalive <= a.node.iface.now() + 3
                assert a.node.paths.keepalive_interval == 3.2
                nat = a.state.read_nat()
                assert nat is not None and nat["mapping_lifetime"] == 4.0
                assert nat["keepalive"] == 3.2 and nat["keepalive_source"] == "measured"
                assert peer is device.peers[key_from_base64(old_key)]
            finally:
                await a.stop()

        asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT))


async def until_peer(node: LoopbackNode, public: str) -> Any:
    assert node.node.iface is not None
    peers = node.node.iface.device.peers
    await until(lambda: key_from_base64(public) in peers, 3.0)
    return peers[key_from_base64(public)]
