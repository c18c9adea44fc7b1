"""The node reports its ICE candidates: host candidates from its addresses, server-reflexive
ones from STUN through its WireGuard port (a MemoryBind here, with STUN servers on the same
memory network playing a NAT), again when its addresses change; an older server without
the endpoints leaves the node working as before."""

from __future__ import annotations

import asyncio
import io
import ipaddress
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from aioice import Candidate
from stun_fakes import MemoryStunServer

from wgpy import log
from wgpy.device.memorybind import MemoryBind, MemoryNetwork
from wgpy.endpoint import Endpoint
from wgpy.keys import key_to_base64
from wgpy.mesh.client import traversal
from wgpy.mesh.client.api import NodeClient
from wgpy.mesh.client.backoff import Backoff
from wgpy.mesh.client.candidates import EARLY_REPORT, SILENT_ROUNDS, CandidateReporter
from wgpy.mesh.client.node import MeshNode, NodeConfig
from wgpy.mesh.client.state import StateDir
from wgpy.nat.discovery import Discovery, IceCredentials, StunProbe
from wgpy.nat.paths import PathState
from wgpy.protocol.crypto import public_key

from .fakes import FakeHost, FakeInterface, FakeServer, until

LAN = "192.0.2.10"  # the node's own address (FakeHost's default)
PUBLIC = "203.0.113.5"  # what its NAT maps it to


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30.0))


class Harness:
    """One node on a fake host, with a FakeInterface (``factory`` may give another)."""

    def __init__(self, server: FakeServer, directory: Path, *, auth_key: str, **config: Any):
        self.server = server
        self.state = StateDir(directory / "state")
        self.private = self.state.load_or_create_key()
        self.public = key_to_base64(public_key(self.private))
        self.host = FakeHost()
        self.config = NodeConfig(
            interface="wgtest0",
            listen_port=41641,
            hostname="a",
            auth_key=auth_key,
            **{"endpoint_interval": 0.05, "startup_timeout": 5.0, **config},
        )
        self.node: MeshNode | None = None
        self.task: asyncio.Task[None] | None = None

    async def factory(self, name: str, key: bytes, port: int) -> FakeInterface:
        return FakeInterface(name, key, port)

    async def start(self) -> MeshNode:
        client = NodeClient(self.server.url, token=self.state.read_token(), timeout=2.0)
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
            self.task.result()
        return node

    async def stop(self) -> None:
        assert self.node is not None and self.task is not None
        self.node.stop()
        await asyncio.wait_for(self.task, 5)
        await self.node.client.close()


class BoundInterface(FakeInterface):
    """A FakeInterface with a WireGuard port: a MemoryBind on ``network``."""

    def __init__(self, network: MemoryNetwork, name: str, key: bytes, port: int) -> None:
        super().__init__(name, key, port)
        self.bind = MemoryBind(network, LAN, self.listen_port)
        self.bind.watch(asyncio.get_running_loop(), lambda reader: self.bind.read_batch(reader))

    def close(self, reason: str = "closed") -> None:
        self.bind.unwatch(asyncio.get_running_loop())
        self.bind.close()
        super().close(reason)


def parsed(sdps: list[str]) -> list[tuple[str, str, int]]:
    out = []
    for sdp in sdps:
        c = Candidate.from_sdp(sdp)
        assert (c.component, c.transport) == (1, "udp")
        out.append((c.type, c.host, c.port))
    return out


def test_host_candidates_without_a_wireguard_port(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()
        server.set_nat({"stun": ["198.51.100.1:3478"], "turn": [], "refresh": 600})

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            node = await h.start()
            me = server.node_by_key(h.public)
            await until(lambda: bool(me.candidates), what="the candidates")
            assert parsed(me.candidates) == [("host", LAN, 41641)]
            assert (me.ice_ufrag, me.ice_pwd) == (node.ice.ufrag, "")  # no password is sent
            assert len(me.ice_ufrag) >= 4
            # a new address: reported again, with the same credentials (one per run)
            h.host.local.append(ipaddress.ip_address("2001:db8::10"))
            await until(lambda: len(me.candidates) == 2, what="the new candidate")
            assert parsed(me.candidates)[0] == ("host", "2001:db8::10", 41641)  # IPv6 first
            assert me.ice_ufrag == node.ice.ufrag
            await h.stop()

        run(main())


def test_server_reflexive_candidates_through_the_wireguard_port(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()
        server.set_nat(
            {
                "stun": ["198.51.100.1:3478", "198.51.100.2:3478", "not an address"],
                "turn": [],
                "refresh": 600,
            }
        )

        async def main() -> None:
            network = MemoryNetwork()
            stuns = [
                MemoryStunServer(network, "198.51.100.1"),
                MemoryStunServer(network, "198.51.100.2"),
            ]
            for s in stuns:  # an easy NAT: one public port for the WireGuard socket
                s.mapped = lambda source: (PUBLIC, 62000)
            h = Harness(server, tmp_path, auth_key=auth)
            interfaces: list[BoundInterface] = []

            async def factory(name: str, key: bytes, port: int) -> BoundInterface:
                interfaces.append(BoundInterface(network, name, key, port))
                return interfaces[-1]

            h.factory = factory  # type: ignore[method-assign,assignment]
            stream = io.StringIO()
            log.configure("info", stream=stream)
            try:
                node = await h.start()
                me = server.node_by_key(h.public)
                await until(lambda: len(me.candidates) == 2, what="the candidates")
                assert parsed(me.candidates) == [("host", LAN, 41641), ("srflx", PUBLIC, 62000)]
                assert [s.requests for s in stuns] == [1, 1]  # from the WireGuard port
                assert node.mux is not None and not node.mux.drops
                assert node.candidates.discovery.mapping_varies() is False
                # a NAT that maps each destination anew: both mappings are candidates
                stuns[1].mapped = lambda source: (PUBLIC, 62001)
                h.host.local.append(ipaddress.ip_address("192.0.2.11"))  # a reason to look
                await until(lambda: len(me.candidates) == 4, what="the new candidates")
                kinds = parsed(me.candidates)
                assert ("srflx", PUBLIC, 62000) in kinds and ("srflx", PUBLIC, 62001) in kinds
                assert node.candidates.discovery.mapping_varies() is True
                await h.stop()
            finally:
                log.configure("error")
            assert interfaces[0].bind.demux is None  # the mux is gone with the node
            text = stream.getvalue()
            assert "candidates reported" in text
            for s in stuns:
                s.close()

        run(main())


def test_an_older_server_without_candidates(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()
        server.set_nat(None)  # 404 to GET /node/nat and POST /node/candidates

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth, candidate_interval=0.05)
            node = await h.start()
            await until(lambda: not node.candidates.supported, what="the 404")
            h.host.local.append(ipaddress.ip_address("192.0.2.11"))
            await until(lambda: len(server.requests_to("POST", "/api/v1/node/endpoints")) == 2)
            await asyncio.sleep(0.2)
            # asked once each, then left alone; the endpoints are reported as before
            assert len(server.requests_to("POST", "/api/v1/node/candidates")) == 1
            assert len(server.requests_to("GET", "/api/v1/node/nat")) == 1
            assert node.connected
            await h.stop()

        run(main())


def test_a_round_without_stun_answers_keeps_the_last_mapping_a_little() -> None:
    reporter = CandidateReporter(NodeClient("http://127.0.0.1:9"), IceCredentials.generate())
    server = Endpoint("198.51.100.1", 3478)
    answered = Discovery((StunProbe(server, Endpoint(PUBLIC, 62000), 0.01),))
    silent = Discovery((StunProbe(server, error="no answer"),))
    reporter.discovered(answered)
    for _ in range(SILENT_ROUNDS):  # a lost datagram or two
        reporter.discovered(silent)
        assert reporter.discovery is answered
    reporter.discovered(silent)  # gone for good
    assert reporter.discovery is silent
    reporter.discovered(silent)
    assert reporter.discovery is silent
    reporter.discovered(answered)
    assert reporter.discovery is answered


def test_a_changed_network_is_rediscovered_at_once(tmp_path: Path) -> None:
    """Moved behind another NAT: new host address, new mapping. The node's polls are far
    apart here (60 s); the kernel's announcement (``addresses_changed``, from netlink) or a
    lost path makes it look again at once."""
    with FakeServer() as server:
        auth = server.add_auth_key()
        server.set_nat({"stun": ["198.51.100.1:3478"], "turn": [], "refresh": 600})

        async def main() -> None:
            network = MemoryNetwork()
            stun = MemoryStunServer(network, "198.51.100.1")
            stun.mapped = lambda source: (PUBLIC, 62000)
            h = Harness(server, tmp_path, auth_key=auth, endpoint_interval=60.0,
                        candidate_interval=60.0)  # fmt: skip

            async def factory(name: str, key: bytes, port: int) -> BoundInterface:
                return BoundInterface(network, name, key, port)

            h.factory = factory  # type: ignore[method-assign,assignment]
            node = await h.start()
            me = server.node_by_key(h.public)
            await until(lambda: len(me.candidates) == 2, what="the candidates")
            stun.mapped = lambda source: ("203.0.113.77", 62001)  # another NAT
            h.host.local[:] = [ipaddress.ip_address("192.0.2.20")]
            await asyncio.sleep(0.3)
            assert parsed(me.candidates) == [("host", LAN, 41641), ("srflx", PUBLIC, 62000)]
            # the endpoint report hangs (sent on a connection the move broke): the
            # candidates do not wait for it
            server.endpoints_delay = 10.0
            node.addresses_changed()
            took = await until(lambda: ("srflx", "203.0.113.77", 62001) in parsed(me.candidates))
            assert took < 1.0
            assert parsed(me.candidates)[0] == ("host", "192.0.2.20", 41641)
            h.host.local[:] = [ipaddress.ip_address("192.0.2.21")]  # again, meanwhile
            node.addresses_changed()
            took = await until(lambda: ("host", "192.0.2.21", 41641) in parsed(me.candidates))
            assert took < 1.0
            server.endpoints_delay = 0.0
            node.addresses_changed()  # (a failed endpoint report waits for the next look)
            await until(lambda: me.endpoints == ["192.0.2.21:41641"], what="the endpoints")
            # a path that stops answering: where STUN sees the node is asked again at once
            stun.mapped = lambda source: ("203.0.113.78", 62002)
            assert node.paths is not None
            node.paths.changed(b"\x01" * 32, PathState())
            took = await until(lambda: ("srflx", "203.0.113.78", 62002) in parsed(me.candidates))
            assert took < 1.0
            await h.stop()
            stun.close()

        run(main())


def test_discovery_that_gets_no_answer_holds_nothing_back(tmp_path: Path) -> None:
    """Where UDP is blocked STUN discovery waits out its retransmissions (~3 s): the host
    candidates are reported after EARLY_REPORT all the same, a relayed candidate that comes
    meanwhile at once, and discovery's end changes nothing more."""
    with FakeServer() as server:
        auth = server.add_auth_key()
        server.set_nat({"stun": ["198.51.100.1:3478"], "turn": [], "refresh": 600})

        async def main() -> None:
            network = MemoryNetwork()  # nothing answers at the STUN server's address
            h = Harness(server, tmp_path, auth_key=auth)

            async def factory(name: str, key: bytes, port: int) -> BoundInterface:
                return BoundInterface(network, name, key, port)

            h.factory = factory  # type: ignore[method-assign,assignment]
            loop = asyncio.get_running_loop()
            started = loop.time()
            node = await h.start()
            me = server.node_by_key(h.public)
            await until(lambda: bool(me.candidates), what="the host candidates", timeout=2.0)
            assert loop.time() - started < EARLY_REPORT + 1.0
            assert parsed(me.candidates) == [("host", LAN, 41641)]
            relayed = Candidate(
                foundation="relay",
                component=1,
                transport="udp",
                priority=100,
                host="203.0.113.3",
                port=49152,
                type="relay",
            )
            node.candidates.relayed = lambda: [relayed]
            moved_at = loop.time()
            assert node.traversal is not None
            node.traversal.relay_changed()  # as the relay manager calls it
            await until(lambda: len(me.candidates) == 2, what="the relayed candidate", timeout=2.0)
            assert loop.time() - moved_at < 0.5  # not after discovery's timeouts
            assert parsed(me.candidates)[-1] == ("relay", "203.0.113.3", 49152)
            reports = len(server.requests_to("POST", "/api/v1/node/candidates"))
            await asyncio.sleep(3.5)  # discovery ends without an answer: nothing new
            assert len(server.requests_to("POST", "/api/v1/node/candidates")) == reports
            await h.stop()

        run(main())


def test_hostile_datagrams_on_the_wireguard_port_show_in_nat_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(traversal, "DROPS_INTERVAL", 0.05)
    with FakeServer() as server:
        auth = server.add_auth_key()
        server.set_nat({"stun": [], "turn": [], "refresh": 600})

        async def main() -> None:
            network = MemoryNetwork()
            h = Harness(server, tmp_path, auth_key=auth)

            async def factory(name: str, key: bytes, port: int) -> BoundInterface:
                return BoundInterface(network, name, key, port)

            h.factory = factory  # type: ignore[method-assign,assignment]
            stream = io.StringIO()
            log.configure("info", stream=stream)
            hostile = MemoryBind(network, "198.51.100.66", 4444)
            try:
                node = await h.start()
                assert node.mux is not None
                nat = h.state.read_nat()
                assert nat is not None and nat["drops"] == {}  # nothing dropped yet
                node_port = (LAN, 41641)
                garbage = [(b"\xff" * 40, node_port)] * 3 + [(b"\x00\x01\x00", node_port)]
                hostile.send_batch(garbage)

                def drops() -> Any:
                    saved = h.state.read_nat()
                    return None if saved is None else saved.get("drops")

                await until(lambda: drops() == {"not-stun": 3, "truncated": 1}, what="the drops")
                hostile.send_batch(garbage[:1])  # more: saved again, not logged again
                await until(lambda: drops() == {"not-stun": 4, "truncated": 1}, what="more")
                saved = h.state.read_nat()
                assert saved is not None and saved["keepalive_source"] == nat["keepalive_source"]
                assert node.traversal is not None  # a minute later: what came since is said
                node.traversal.look_at_drops(asyncio.get_running_loop().time() + 61)
                await h.stop()
            finally:
                hostile.close()
                log.configure("error")
            text = stream.getvalue()
            warning = (
                "dropped 4 STUN/ChannelData datagrams on the WireGuard port in the last minute"
            )
            assert text.count(warning) == 1 and "not-stun" in text
            assert text.count("STUN/ChannelData datagrams") == 2  # at most once a minute
            assert "dropped 1 STUN/ChannelData datagrams" in text

        run(main())
