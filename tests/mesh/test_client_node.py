"""The mesh node against a fake server: login, the full map and deltas applied to a real
protocol Device, resync after the stream breaks, expiry, endpoints, policy flags.

No TUN: the node gets a FakeInterface (a real Device) and a FakeHost (recorded routes).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import structlog

from wgpy import log
from wgpy.keys import key_from_base64, key_to_base64
from wgpy.mesh.client import node as node_module
from wgpy.mesh.client.api import NodeClient
from wgpy.mesh.client.backoff import Backoff
from wgpy.mesh.client.node import QUICK_RETRY_AFTER, MeshError, MeshNode, NodeConfig
from wgpy.mesh.client.state import StateDir
from wgpy.protocol.crypto import public_key
from wgpy.protocol.flows import ReplyOnlyFilter

from .fakes import (
    FakeHost,
    FakeInterface,
    FakeServer,
    key_texts,
    new_keypair,
    until,
)

TEST_TIMEOUT = 30.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


def net(text: str) -> Any:
    return ipaddress.ip_network(text)


class Harness:
    """One node on a fake interface and host, with a fast backoff."""

    def __init__(
        self,
        server: FakeServer,
        directory: Path,
        *,
        auth_key: str | None = None,
        host: FakeHost | None = None,
        backoff: Backoff | None = None,
        **config: Any,
    ) -> None:
        self.server = server
        self.backoff = backoff or Backoff(0.05, 0.2)
        self.state = StateDir(directory / "state")
        self.private = self.state.load_or_create_key()
        self.public = key_to_base64(public_key(self.private))
        self.host = host or FakeHost()
        self.interfaces: list[FakeInterface] = []
        self.auth_key = auth_key
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
        iface = FakeInterface(name, key, port)
        self.interfaces.append(iface)
        return iface

    def make(self) -> MeshNode:
        client = NodeClient(self.server.url, token=self.state.read_token(), timeout=2.0)
        self.node = MeshNode(
            self.config,
            client,
            self.state,
            self.private,
            interface_factory=self.factory,
            host=self.host,
            backoff=self.backoff,
        )
        return self.node

    async def start(self) -> MeshNode:
        node = self.make()
        self.task = asyncio.create_task(node.run())
        ready = asyncio.create_task(node.ready.wait())
        done, _ = await asyncio.wait([ready, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            self.task.result()
        return node

    async def stop(self) -> None:
        if self.node is not None and self.task is not None:
            self.node.stop()
            await asyncio.wait_for(self.task, 5)
            await self.node.client.close()


def k(public: str) -> bytes:
    return key_from_base64(public)


# ------------------------------------------------------------------ register, map, deltas


def test_register_full_map_then_deltas_on_a_real_device(tmp_path: Path) -> None:
    with FakeServer() as server:
        _, pub_b = new_keypair()
        _, pub_c = new_keypair()
        b = server.add_node("b", pub_b, ["192.0.2.2:41641", "198.51.100.2:41641"])
        c = server.add_node("c", pub_c, ["[2001:db8::3]:41641"])
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            node = await h.start()
            try:
                me = server.node_by_key(h.public)
                # the state: token stored 0600 in a 0700 directory
                token_file = h.state.file("node.token")
                assert token_file.read_text().strip() == me.token
                assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
                assert stat.S_IMODE(h.state.path.stat().st_mode) == 0o700
                # the interface: made with the node's key and port, addresses, link up
                (iface,) = h.interfaces
                assert iface.device.public_key == k(h.public)
                assert iface.listen_port == 41641
                assert [str(a) for a in h.host.addresses] == [f"{me.ipv4}/32", f"{me.ipv6}/128"]
                assert h.host.link == ("wgtest0", 1420)
                # the full map on the device
                device = iface.device
                assert set(device.peers) == {k(pub_b), k(pub_c)}
                peer_b = device.peers[k(pub_b)]
                assert peer_b.endpoint == ("192.0.2.2", 41641)  # the first reported
                assert set(device.allowed_ips.prefixes(peer_b)) == {
                    net(f"{b.ipv4}/32"),
                    net(f"{b.ipv6}/128"),
                }
                assert device.peers[k(pub_c)].endpoint == ("2001:db8::3", 41641)
                assert device.allowed_ips.lookup_ip(c.ipv4) is device.peers[k(pub_c)]
                assert h.host.routes == {
                    net(f"{b.ipv4}/32"),
                    net(f"{b.ipv6}/128"),
                    net(f"{c.ipv4}/32"),
                    net(f"{c.ipv6}/128"),
                }
                # the endpoints were reported with the listen port
                await until(lambda: bool(server.requests_to("POST", "/api/v1/node/endpoints")))
                assert me.endpoints == ["192.0.2.10:41641"]

                # a new peer arrives as a delta, well under a second
                _, pub_d = new_keypair()
                d = server.add_node("d", pub_d, ["203.0.113.4:1234"])
                took = await until(lambda: k(pub_d) in device.peers, what="peer d")
                assert took < 0.5
                await until(lambda: net(f"{d.ipv4}/32") in h.host.routes, 1.0)
                assert device.peers[k(pub_d)].endpoint == ("203.0.113.4", 1234)

                # an update: new endpoint, same Peer object (its sessions are kept)
                server.update_node(b.id, endpoints=["192.0.2.22:5555"])
                await until(lambda: peer_b.endpoint == ("192.0.2.22", 5555), 1.0)
                assert device.peers[k(pub_b)] is peer_b

                # a removal: the peer and its routes go
                server.remove_node(c.id)
                await until(lambda: k(pub_c) not in device.peers, 1.0, "peer c removed")
                await until(lambda: net(f"{c.ipv4}/32") not in h.host.routes, 1.0)
                assert net(f"{c.ipv6}/128") not in h.host.routes
                assert set(node.peers) == {k(pub_b), k(pub_d)}
            finally:
                await h.stop()
            assert h.interfaces[0].closed.is_set()

        run(main())


def test_private_key_is_never_sent(tmp_path: Path) -> None:
    """Every request the client makes, in every spelling of the key: body, path, headers."""
    with FakeServer() as server:
        _, pub_b = new_keypair()
        server.add_node("b", pub_b, ["192.0.2.2:41641"])
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            await h.start()
            await until(lambda: bool(server.requests_to("POST", "/api/v1/node/endpoints")))
            h.host.local.append(ipaddress.ip_address("2001:db8::10"))
            await until(lambda: len(server.requests_to("POST", "/api/v1/node/endpoints")) == 2)
            await h.stop()
            # and once more: log in again with the token, then log out
            h2 = Harness(server, tmp_path)
            await h2.start()
            await h2.node.client.logout()  # type: ignore[union-attr]
            await h2.stop()
            private = h.private
            assert h2.private == private
            spellings = key_texts(private)
            seen = {(r.method, r.path) for r in server.requests}
            assert {
                ("POST", "/api/v1/register"),
                ("POST", "/api/v1/login"),
                ("POST", "/api/v1/node/endpoints"),
                ("GET", "/api/v1/node/map"),
                ("POST", "/api/v1/logout"),
            } <= seen
            for r in server.requests:
                blob = (
                    r.body + r.path.encode() + r.query.encode() + (r.authorization or "").encode()
                )
                for spelling in spellings:
                    assert spelling not in blob, f"the private key leaked in {r.method} {r.path}"
            register = server.requests_to("POST", "/api/v1/register")[0]
            assert h.public.encode() in register.body  # the public key, of course, is sent

        run(main())


def test_login_again_with_the_stored_token(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            first = Harness(server, tmp_path, auth_key=auth)
            await first.start()
            await first.stop()
            me = server.node_by_key(first.public)
            second = Harness(server, tmp_path)  # no auth key: the stored token
            node = await second.start()
            try:
                assert len(server.requests_to("POST", "/api/v1/register")) == 1
                (login,) = server.requests_to("POST", "/api/v1/login")
                assert login.authorization == f"Bearer {me.token}"
                assert node.self_node is not None and str(node.self_node.ipv4) == me.ipv4
                assert h_addresses(second) == [f"{me.ipv4}/32", f"{me.ipv6}/128"]
            finally:
                await second.stop()

        run(main())


def h_addresses(h: Harness) -> list[str]:
    return [str(a) for a in h.host.addresses]


def test_a_refused_registration_is_one_sentence(tmp_path: Path) -> None:
    with FakeServer() as server:

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key="wgpy_auth_nope_nope")
            with pytest.raises(MeshError) as e:
                await h.start()
            assert e.value.message == (
                "the server refused to register this node: The pre-auth key is not valid."
            )
            # the interface was made first (local checks before the server), then closed
            assert [i.closed.is_set() for i in h.interfaces] == [True]
            assert h.state.read_token() is None
            await h.node.client.close()  # type: ignore[union-attr]

        run(main())


def test_a_refused_token_says_to_register_again(tmp_path: Path) -> None:
    with FakeServer() as server:

        async def main() -> None:
            h = Harness(server, tmp_path)
            h.state.write_token("wgpy_node_x_unknown")
            with pytest.raises(MeshError, match="register again with --auth-key"):
                await h.start()
            await h.node.client.close()  # type: ignore[union-attr]

        run(main())


def test_an_unreachable_server_at_start_is_one_sentence(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()
        url = server.url
    # the server has stopped: nothing listens on its port any more

    async def main() -> None:
        h = Harness(server, tmp_path, auth_key=auth)
        with pytest.raises(MeshError) as e:
            await h.start()
        assert e.value.message.startswith(f"cannot reach the coordination server at {url}: ")
        assert "\n" not in e.value.message
        await h.node.client.close()  # type: ignore[union-attr]

    run(main())


# ------------------------------------------------------------------ the stream breaks


def test_data_plane_stays_while_the_server_is_down_then_resyncs(tmp_path: Path) -> None:
    with FakeServer() as server:
        _, pub_b = new_keypair()
        _, pub_c = new_keypair()
        server.add_node("b", pub_b, ["192.0.2.2:41641"])
        c = server.add_node("c", pub_c, ["192.0.2.3:41641"])
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth, healthy_stream=0.0)
            node = await h.start()
            try:
                device = node.device
                peer_b, peer_c = device.peers[k(pub_b)], device.peers[k(pub_c)]
                routes = set(h.host.routes)
                route_calls = h.host.route_calls
                maps_before = server.map_requests

                server.go_down()
                await until(lambda: not node.connected, 2.0, "the stream to break")
                # while the server is away: reconnect attempts, with backoff...
                await until(lambda: node.backoff.failures >= 3, 5.0, "several retries")
                # ...and the data plane exactly as it was
                assert device.peers == {k(pub_b): peer_b, k(pub_c): peer_c}
                assert peer_b.endpoint == ("192.0.2.2", 41641)
                assert h.host.routes == routes and h.host.route_calls == route_calls
                assert not h.interfaces[0].closed.is_set()

                # the mesh changes meanwhile: c leaves, d joins, b moves
                server.broadcast = False
                server.call(lambda: server.nodes.pop(c.id))
                _, pub_d = new_keypair()
                d = server.add_node("d", pub_d, ["192.0.2.4:41641"])
                b = server.node_by_key(pub_b)
                server.update_node(b.id, endpoints=["192.0.2.20:41641"])
                server.come_back()
                await until(lambda: node.connected, 5.0, "the stream to come back")
                assert server.map_requests > maps_before
                # the fresh full map, applied as a diff
                assert set(device.peers) == {k(pub_b), k(pub_d)}
                assert device.peers[k(pub_b)] is peer_b  # kept, not re-created
                assert peer_b.endpoint == ("192.0.2.20", 41641)
                assert net(f"{c.ipv4}/32") not in h.host.routes
                assert net(f"{d.ipv4}/32") in h.host.routes
                assert node.full_maps == 2
                assert node.backoff.failures >= 3  # a map alone does not reset the backoff...
                server.drop_streams()
                await until(lambda: node.full_maps == 3, 2.0)
                # ...the loss of a stream that lasted (healthy_stream=0 here) does
                assert node.backoff.failures == 1
                # and the endpoints are reported again to the server that came back
                await until(lambda: server.node_by_key(h.public).endpoints != [], 2.0)
            finally:
                await h.stop()

        run(main())


def test_a_stream_the_server_ends_is_asked_for_again_soon_despite_an_earlier_outage(
    tmp_path: Path,
) -> None:
    """A deleted node learns it at its next connection: after an outage has grown the
    backoff, the server's own end of a stream it served a while is retried at the shortest
    delay (a server that ends its streams at once still meets the backoff)."""
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth, backoff=Backoff(0.05, 5.0))
            node = await h.start()
            try:
                server.go_down()
                await until(lambda: node.backoff.failures >= 6, 10.0, "retries with backoff")
                server.come_back()
                await until(lambda: node.connected, 10.0, "the stream to come back")
                await asyncio.sleep(QUICK_RETRY_AFTER + 0.1)
                maps = node.full_maps
                server.end_streams()  # as the server does when the node is deleted
                await until(lambda: node.full_maps == maps + 1, 1.5, "a prompt reconnection")
                maps = node.full_maps
                server.end_streams()  # a stream ended at once: the backoff holds
                await asyncio.sleep(1.0)
                assert node.full_maps == maps and not node.connected
            finally:
                await h.stop()

        run(main())


def test_reconnect_after_a_refused_and_a_silent_stream(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth, stream_idle_timeout=0.3)
            server.keepalive = 0.05
            node = await h.start()
            try:
                # keepalives hold a stream open past the idle timeout
                before = server.map_requests
                await asyncio.sleep(0.6)
                assert server.map_requests == before and node.full_maps == 1
                # the server answers 503 twice, then serves the map: backoff, then resync
                server.refuse_maps = 2
                server.drop_streams()
                await until(lambda: node.full_maps == 2, 5.0, "a second full map")
                assert server.refuse_maps == 0
                assert node.backoff.failures == 3  # one drop, two refusals
                # a stream that goes silent (no keepalives) is given up and reopened
                server.keepalive = 3600
                before = server.map_requests
                await until(lambda: server.map_requests > before, 3.0, "a new stream")
                await until(lambda: node.connected, 3.0)
                # streams that lasted less than healthy_stream (10 s) keep the backoff growing
                assert node.backoff.failures == 4
            finally:
                await h.stop()

        run(main())


def test_backoff_delays_double_with_jitter_up_to_the_cap() -> None:
    values = iter([0.0, 1.0, 0.5] * 20)
    backoff = Backoff(0.5, 30.0, uniform=lambda: next(values))
    delays = [backoff.next_delay() for _ in range(12)]
    bases = [min(30.0, 0.5 * 2**i) for i in range(12)]
    for delay, base in zip(delays, bases, strict=True):
        assert 0.5 <= delay <= 30.0
        assert base * 0.75 - 1e-9 <= delay <= base * 1.25 + 1e-9
    assert delays[0] == 0.5  # 0.375 raised to the initial delay
    assert delays[1] == 1.25  # 1.0 * (1 + 0.25)
    assert delays[-1] == 30.0
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 0.5  # from the start again (uniform gave 0.0 -> 0.375)
    real = Backoff()
    seen = [real.next_delay() for _ in range(100)]
    assert max(seen) == 30.0 and min(seen) >= 0.5
    assert len({round(d, 6) for d in seen[:6]}) == 6  # jittered: no two alike
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_the_first_delay_is_the_shortest_with_jitter_upwards_and_counts_nothing() -> None:
    values = iter([0.0, 0.999, 0.5])
    backoff = Backoff(0.5, 30.0, uniform=lambda: next(values))
    for _ in range(5):
        backoff.failures += 1
    assert backoff.first_delay() == 0.5
    assert 0.62 < backoff.first_delay() < 0.625  # at most 1.25 times the shortest
    assert backoff.first_delay() == 0.5625
    assert backoff.failures == 5


# ------------------------------------------------------------------ self, policy, endpoints


def test_expired_self_tears_down_the_peers_and_says_so(tmp_path: Path) -> None:
    with FakeServer() as server:
        _, pub_b = new_keypair()
        server.add_node("b", pub_b, ["192.0.2.2:41641"])
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            node = await h.start()
            try:
                me = server.node_by_key(h.public)
                assert k(pub_b) in node.device.peers
                me_json = server.call(me.to_json)
                server.push(me.id, {"type": "self", "self": {**me_json, "expired": True}})
                await until(lambda: node.expired, 1.0)
                await until(lambda: not node.device.peers and not h.host.routes, 1.0)
                assert not node.inbound_allowed(pub_b)
                # while expired, upserts are not applied
                _, pub_c = new_keypair()
                server.add_node("c", pub_c, ["192.0.2.3:41641"])
                await asyncio.sleep(0.1)
                assert not node.device.peers
                # valid again: a fresh full map brings the peers back
                server.push(me.id, {"type": "self", "self": {**me_json, "expired": False}})
                await until(lambda: set(node.device.peers) == {k(pub_b), k(pub_c)}, 2.0)
                assert not node.expired
                # an expiry time in the past is an expiry too
                past = {**me_json, "expires_at": "2020-01-01T00:00:00.000Z"}
                server.push(me.id, {"type": "self", "self": past})
                await until(lambda: node.expired and not node.device.peers, 1.0)
            finally:
                await h.stop()

        with structlog.testing.capture_logs() as logs:
            run(main())
        errors = [e["event"] for e in logs if e["log_level"] == "error"]
        assert any(
            e.startswith("this node has expired at the coordination server: all peers are removed")
            for e in errors
        ), errors


def test_a_revoked_token_on_the_stream_removes_the_peers(tmp_path: Path) -> None:
    with FakeServer() as server:
        _, pub_b = new_keypair()
        server.add_node("b", pub_b, ["192.0.2.2:41641"])
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            node = await h.start()
            try:
                me = server.node_by_key(h.public)
                server.call(lambda: setattr(me, "token", "wgpy_node_revoked"))
                server.drop_streams()
                await until(lambda: node.expired and not node.device.peers, 2.0)
            finally:
                await h.stop()

        run(main())


def test_policy_flags_reach_the_device_filter(tmp_path: Path) -> None:
    with FakeServer() as server:
        _, pub_b = new_keypair()
        _, pub_c = new_keypair()
        b = server.add_node("b", pub_b, ["192.0.2.2:41641"])
        c = server.add_node("c", pub_c, ["192.0.2.3:41641"])
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            # b may be reached by us but may not start flows to us
            server.call(lambda: server.flags.update({(3, b.id): (True, False)}))
            node = await h.start()
            try:
                me = server.node_by_key(h.public)
                assert me.id == 3
                assert node.inbound_allowed(pub_b) is False
                assert node.inbound_allowed(k(pub_b)) is False
                assert node.outbound_allowed(pub_b) is True
                assert isinstance(node.device.peers[k(pub_b)].inbound_filter, ReplyOnlyFilter)
                assert node.inbound_allowed(pub_c) is True
                assert node.device.peers[k(pub_c)].inbound_filter is None
                assert node.inbound_allowed(new_keypair()[1]) is False  # not a peer
                # the policy changes: b may now reach us
                server.push(me.id, {"type": "peer_upsert", "peer": b.peer_json(True, True)})
                await until(lambda: node.inbound_allowed(pub_b), 1.0)
                assert node.device.peers[k(pub_b)].inbound_filter is None
                # and c may no longer
                server.push(me.id, {"type": "peer_upsert", "peer": c.peer_json(False, False)})
                await until(lambda: not node.inbound_allowed(pub_c), 1.0)
                assert isinstance(node.device.peers[k(pub_c)].inbound_filter, ReplyOnlyFilter)
            finally:
                await h.stop()

        run(main())


def test_a_roamed_endpoint_is_kept_until_the_server_reports_another(tmp_path: Path) -> None:
    with FakeServer() as server:
        _, pub_b = new_keypair()
        b = server.add_node("b", pub_b, ["192.0.2.2:41641"])
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            node = await h.start()
            try:
                me = server.node_by_key(h.public)
                peer = node.device.peers[k(pub_b)]
                peer.endpoint = ("198.51.100.9", 60000)  # WireGuard saw b roam
                server.push(me.id, {"type": "peer_upsert", "peer": b.peer_json()})  # same view
                server.push(me.id, {"type": "keepalive"})
                await asyncio.sleep(0.1)
                assert peer.endpoint == ("198.51.100.9", 60000)
                server.update_node(b.id, endpoints=["192.0.2.99:41641"])
                await until(lambda: peer.endpoint == ("192.0.2.99", 41641), 1.0)
            finally:
                await h.stop()

        run(main())


def test_bad_map_entries_are_skipped_and_unknown_messages_ignored(tmp_path: Path) -> None:
    with FakeServer() as server:
        _, pub_b = new_keypair()
        b = server.add_node("b", pub_b, ["192.0.2.2:41641"])
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            node = await h.start()
            try:
                me = server.node_by_key(h.public)
                _, pub_x = new_keypair()
                bad = [
                    {"type": "peer_upsert", "peer": {"public_key": "nope", "addresses": []}},
                    {"type": "peer_upsert", "peer": {**b.peer_json(), "addresses": ["0.0.0.0/0"]}},
                    {"type": "peer_upsert", "peer": {**b.peer_json(), "addresses": ["x"]}},
                    {"type": "peer_remove", "public_key": 12},
                    {"type": "peer_online", "public_key": "nope", "online": True},
                    {"type": "peer_online", "public_key": pub_b, "online": "yes"},
                    {"type": "something_new", "x": 1},
                    {"type": "peer_upsert", "peer": {"public_key": h.public, "addresses": []}},
                ]
                for message in bad:
                    server.push(me.id, message)
                good = {**b.peer_json(), "public_key": pub_x, "addresses": ["100.64.9.9/32"]}
                server.push(me.id, {"type": "peer_upsert", "peer": good})
                await until(lambda: k(pub_x) in node.device.peers, 1.0)
                assert set(node.device.peers) == {k(pub_b), k(pub_x)}
                assert node.device.peers[k(pub_x)].endpoint == ("192.0.2.2", 41641)
                assert node.connected  # none of it broke the stream
                assert node.full_maps == 1
                # a peer's online state follows the short peer_online line
                assert node.peers[k(pub_b)].online is False
                server.push(me.id, {"type": "peer_online", "public_key": pub_b, "online": True})
                await until(lambda: node.peers[k(pub_b)].online, 1.0)
            finally:
                await h.stop()

        run(main())


def test_endpoints_are_reported_again_when_they_change(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            host = FakeHost(["192.0.2.10", "2001:db8::10"])
            h = Harness(server, tmp_path, auth_key=auth, host=host)
            node = await h.start()
            try:
                posts = lambda: server.requests_to("POST", "/api/v1/node/endpoints")  # noqa: E731
                await until(lambda: len(posts()) == 1, 1.0)
                assert node.reported_endpoints == ["192.0.2.10:41641", "[2001:db8::10]:41641"]
                await asyncio.sleep(0.2)  # several looks, no change: no new report
                assert len(posts()) == 1
                host.local = [ipaddress.ip_address("192.0.2.77")]
                await until(lambda: len(posts()) == 2, 1.0)
                me = server.node_by_key(h.public)
                assert me.endpoints == ["192.0.2.77:41641"]
            finally:
                await h.stop()

        run(main())


def test_the_node_stops_when_its_interface_goes(tmp_path: Path) -> None:
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)
            await h.start()
            h.interfaces[0].close("TUN device gone")
            assert h.task is not None
            await asyncio.wait_for(h.task, 2.0)
            await h.stop()

        run(main())


def test_state_dir_key_is_private(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "deep" / "state")
    old = os.umask(0)
    try:
        key = state.load_or_create_key()
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.file("node.key").stat().st_mode) == 0o600
    assert state.load_or_create_key() == key


def test_nothing_is_registered_when_the_interface_cannot_be_made(tmp_path: Path) -> None:
    """A port in use or a name taken is found before the server hears of the node: no
    register request, no node, no token."""
    with FakeServer() as server:
        auth = server.add_auth_key()

        async def main() -> None:
            h = Harness(server, tmp_path, auth_key=auth)

            async def in_use(name: str, key: bytes, port: int) -> FakeInterface:
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))

            h.factory = in_use  # type: ignore[method-assign]
            with pytest.raises(MeshError, match=r"UDP port 41641 or its control socket is in use"):
                await h.start()
            await h.node.client.close()  # type: ignore[union-attr]

        run(main())
        assert server.requests_to("POST", "/api/v1/register") == []
        assert server.nodes == {}
    assert not (tmp_path / "state" / "node.token").exists()


def test_stop_while_logging_in_abandons_the_login(tmp_path: Path) -> None:
    """Ctrl-C (stop) while the server is silent: run() returns at once, the request is
    abandoned (its connection closed), no token is stored."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections queue up; nothing ever answers
    port = silent.getsockname()[1]

    async def main() -> None:
        h = Harness(FakeServer(), tmp_path, auth_key="wgpy_auth_a_b")
        client = NodeClient(f"http://127.0.0.1:{port}", timeout=20.0)
        node = MeshNode(
            h.config, client, h.state, h.private, interface_factory=h.factory, host=h.host
        )
        task = asyncio.create_task(node.run())
        await until(lambda: node.control.get("state") == "connecting", 2.0, "logging in")
        await asyncio.sleep(0.2)  # the request is on the wire
        await asyncio.sleep(node_module.PROGRESS_INTERVAL)  # the server stays silent
        node.stop()
        await asyncio.wait_for(task, 1.0)  # not the 20 s request timeout
        assert [i.closed.is_set() for i in h.interfaces] == [True]
        assert h.state.read_token() is None
        await client.close()

    try:
        log.configure("info")  # capture_logs keeps the level filter
        try:
            with structlog.testing.capture_logs() as logs:
                run(main())
        finally:
            log.configure("error")
        said = [e["event"] for e in logs]
        assert f"waiting for the login server at http://127.0.0.1:{port} (5 s)" in said, said
        conn, _ = silent.accept()  # the abandoned request's connection: closed by the node
        conn.settimeout(2.0)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        assert received.startswith(b"POST /api/v1/register ")
        conn.close()
    finally:
        silent.close()
