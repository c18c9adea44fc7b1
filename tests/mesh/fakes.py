"""Fakes for the mesh client tests: a coordination server, an interface and a host.

:class:`FakeServer` implements just enough of docs/mesh-api.md (the real server is built
separately) on 127.0.0.1, in a thread of its own so that both async node tests and the
synchronous CLI can talk to it; it records every request, body included. Tests change it
only through :meth:`FakeServer.call`, which runs a function in the server's loop.
:class:`FakeInterface` holds a real protocol ``Device`` and no TUN; :class:`FakeHost` records
addresses and routes instead of running ``ip``.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ipaddress
import json
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from stun_fakes import binding_response

from wgpy.keys import key_to_base64
from wgpy.protocol.crypto import generate_private_key, public_key
from wgpy.protocol.device import Device

T = TypeVar("T")
API_KEY = "wgpy_api_test_" + "s" * 43
ISO_NEVER = None


def new_keypair() -> tuple[bytes, str]:
    private = generate_private_key(os.urandom)
    return private, key_to_base64(public_key(private))


END_STREAM = {"type": "end of the stream (fakes only)"}  # a clean end, by identity


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    authorization: str | None
    body: bytes


@dataclass
class FakeNode:
    id: int
    user: str
    hostname: str
    public_key: str
    token: str
    ephemeral: bool = False
    endpoints: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    expired: bool = False
    online: bool = False
    candidates: list[str] = field(default_factory=list)
    ice_ufrag: str = ""
    ice_pwd: str = ""
    exit_node: bool = False  # an approved exit node: its PEER says so

    @property
    def ipv4(self) -> str:
        return str(ipaddress.IPv4Address("100.64.0.0") + self.id)

    @property
    def ipv6(self) -> str:
        return str(ipaddress.IPv6Address("fd7a:115c:a1e0::") + self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": 1,
            "user": self.user,
            "hostname": self.hostname,
            "public_key": self.public_key,
            "ipv4": self.ipv4,
            "ipv6": self.ipv6,
            "endpoints": list(self.endpoints),
            "tags": list(self.tags),
            "ephemeral": self.ephemeral,
            "expires_at": None,
            "expired": self.expired,
            "last_seen": None,
            "online": self.online,
            "created_at": "2026-11-27T18:00:00.000Z",
        }

    def peer_json(self, can_reach: bool = True, reachable_from: bool = True) -> dict[str, Any]:
        ice = (
            {
                "candidates": list(self.candidates),
                "ice_ufrag": self.ice_ufrag,
            }
            if self.ice_ufrag
            else {}
        )
        return {
            **ice,
            "public_key": self.public_key,
            "hostname": self.hostname,
            "user": self.user,
            "addresses": [f"{self.ipv4}/32", f"{self.ipv6}/128"],
            "endpoints": list(self.endpoints),
            "tags": list(self.tags),
            "online": self.online,
            "can_reach": can_reach,
            "reachable_from": reachable_from,
            **({"exit_node": True} if self.exit_node else {}),
        }


def _setns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (sockets it makes stay)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


class FakeServer:
    """A coordination server in a thread; ``url`` once started."""

    def __init__(self, host: str = "127.0.0.1", *, netns: str | None = None) -> None:
        self.host = host
        self.netns = netns
        self.port = 0
        self.requests: list[Recorded] = []
        self.auth_keys: dict[str, dict[str, Any]] = {}
        self.nodes: dict[int, FakeNode] = {}
        self.flags: dict[tuple[int, int], tuple[bool, bool]] = {}  # (node, peer) -> flags
        self.streams: dict[int, list[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.map_requests = 0
        self.refuse_maps = 0  # answer this many map requests with 503
        self.broadcast = True  # tell the other nodes of registrations and endpoints
        self.endpoints_delay = 0.0  # seconds before an endpoint report is answered
        self.keepalive = 15.0
        self.users: list[dict[str, Any]] = [{"id": 1, "name": "alice", "created_at": "t0"}]
        self.preauthkeys: list[dict[str, Any]] = []
        self.policy: dict[str, Any] = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}]}
        self.policy_version = 1
        self.list_envelopes = True  # {"users": [...]} rather than [...]
        # GET /api/v1/node/nat; nat None: a server older than NAT traversal (404 to it and
        # to POST /api/v1/node/candidates)
        self.nat: dict[str, Any] | None = {"stun": [], "turn": [], "refresh": 600}
        self.stun_port = 0  # with start(stun=True): a STUN responder on this UDP port
        self.stun_sources: list[tuple[str, int]] = []  # where Binding requests came from
        self._next_id = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ life cycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, *, stun: bool = False) -> FakeServer:
        """Serve; with ``stun``, answer STUN Binding requests on a UDP port of the same
        host (:attr:`stun_port`), as ``wgpy server --stun-listen`` does."""
        started = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            try:
                if self.netns:
                    _setns(self.netns)
                self._loop = asyncio.new_event_loop()
                self._loop.run_until_complete(self._start())
                if stun:
                    self._loop.run_until_complete(self._start_stun())
            except BaseException as e:
                errors.append(e)
                started.set()
                return
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._shutdown())
            self._loop.close()

        self._thread = threading.Thread(target=main, name="fake-mesh-server", daemon=True)
        self._thread.start()
        started.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app(), handler_cancellation=True, shutdown_timeout=0.1)
        await self._runner.setup()
        await self._listen()

    async def _start_stun(self) -> None:
        server = self

        class Answer(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport: Any = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                response = binding_response(data, (addr[0], addr[1]), None)
                if response is not None:
                    server.stun_sources.append((addr[0], addr[1]))
                    self.transport.sendto(response, addr)

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Answer, local_addr=(self.host, 0)
        )
        self.stun_port = transport.get_extra_info("sockname")[1]

    def set_nat(self, nat: dict[str, Any] | None) -> None:
        """What GET /api/v1/node/nat answers; None: 404, as a server older than NAT
        traversal (POST /api/v1/node/candidates too)."""

        def change() -> None:
            self.nat = nat

        self.call(change)

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        self._close_streams()
        if self._runner is not None:
            await self._runner.cleanup()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the server's loop and return its result."""
        assert self._loop is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def run(self, coro: Callable[[], Awaitable[T]]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro(), self._loop).result(10)  # type: ignore[arg-type]

    def go_down(self) -> None:
        """Stop listening and cut every map stream, as a crashed server would."""

        async def down() -> None:
            assert self._site is not None and self._runner is not None
            self._close_streams()
            await self._site.stop()
            server = self._runner.server
            assert server is not None
            for transport in list(server._connections.values()):
                transport.abort()

        self.run(down)

    def come_back(self) -> None:
        self.run(self._listen)

    def drop_streams(self) -> None:
        self.call(self._close_streams)

    def end_streams(self) -> None:
        """Finish every map stream's response, as the real server does when it deletes a
        node (drop_streams cuts the connection instead)."""
        self.call(lambda: self._close_streams(END_STREAM))

    def _close_streams(self, how: Any = None) -> None:
        for queues in self.streams.values():
            for queue in queues:
                queue.put_nowait(how)

    # ------------------------------------------------------------ test helpers

    def add_auth_key(
        self, *, user: str = "alice", reusable: bool = True, ephemeral: bool = False
    ) -> str:
        key = "wgpy_auth_" + secrets.token_urlsafe(8) + "_" + secrets.token_urlsafe(32)
        self.auth_keys[key] = {"user": user, "reusable": reusable, "ephemeral": ephemeral}
        return key

    def add_node(self, hostname: str, public_key: str, endpoints: list[str]) -> FakeNode:
        """A node that exists at the server without a client (a peer for the tests)."""

        def add() -> FakeNode:
            node = self._create(hostname, public_key, "alice", ephemeral=False)
            node.endpoints = list(endpoints)
            self._announce(node)
            return node

        return self.call(add)

    def push(self, node_id: int, message: dict[str, Any]) -> None:
        """Send ``message`` on every open map stream of node ``node_id``."""
        self.call(lambda: self._push(node_id, message))

    def _push(self, node_id: int, message: dict[str, Any]) -> None:
        for queue in self.streams.get(node_id, []):
            queue.put_nowait(message)

    def update_node(self, node_id: int, **changes: Any) -> None:
        """Change a node and tell the others, as the real server would."""

        def update() -> None:
            node = self.nodes[node_id]
            for name, value in changes.items():
                setattr(node, name, value)
            self._announce(node)

        self.call(update)

    def remove_node(self, node_id: int) -> None:
        def remove() -> None:
            node = self.nodes.pop(node_id)
            for other in self.nodes:
                self._push(other, {"type": "peer_remove", "public_key": node.public_key})

        self.call(remove)

    def bodies(self) -> list[bytes]:
        return [r.body for r in list(self.requests)]

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.method == method and r.path == path]

    def node_by_key(self, public: str) -> FakeNode:
        return next(n for n in self.nodes.values() if n.public_key == public)

    # ------------------------------------------------------------ the model

    def _create(self, hostname: str, public: str, user: str, *, ephemeral: bool) -> FakeNode:
        node_id = self._next_id
        self._next_id += 1
        node = FakeNode(
            id=node_id,
            user=user,
            hostname=hostname,
            public_key=public,
            token=f"wgpy_node_{node_id}_" + secrets.token_urlsafe(32),
            ephemeral=ephemeral,
        )
        self.nodes[node_id] = node
        return node

    def _peer_entry(self, viewer: int, node: FakeNode) -> dict[str, Any]:
        can_reach, reachable_from = self.flags.get((viewer, node.id), (True, True))
        return node.peer_json(can_reach, reachable_from)

    def _announce(self, node: FakeNode) -> None:
        if not self.broadcast:
            return
        for other in self.nodes:
            if other != node.id:
                self._push(other, {"type": "peer_upsert", "peer": self._peer_entry(other, node)})

    def full_map(self, node: FakeNode) -> dict[str, Any]:
        return {
            "type": "full",
            "version": 1,
            "self": node.to_json(),
            "peers": [self._peer_entry(node.id, p) for p in self.nodes.values() if p is not node],
        }

    # ------------------------------------------------------------ HTTP

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        r = app.router
        r.add_post("/api/v1/register", self._register)
        r.add_post("/api/v1/login", self._login)
        r.add_post("/api/v1/node/endpoints", self._endpoints)
        r.add_post("/api/v1/node/candidates", self._candidates)
        r.add_get("/api/v1/node/nat", self._nat)
        r.add_get("/api/v1/node/map", self._map)
        r.add_post("/api/v1/logout", self._logout)
        r.add_get("/api/v1/users", self._users_list)
        r.add_post("/api/v1/users", self._users_create)
        r.add_delete("/api/v1/users/{name}", self._users_delete)
        r.add_get("/api/v1/preauthkeys", self._keys_list)
        r.add_post("/api/v1/preauthkeys", self._keys_create)
        r.add_post("/api/v1/preauthkeys/{id}/expire", self._keys_expire)
        r.add_get("/api/v1/nodes", self._nodes_list)
        r.add_post("/api/v1/nodes/{id}/expire", self._nodes_expire)
        r.add_delete("/api/v1/nodes/{id}", self._nodes_delete)
        r.add_post("/api/v1/nodes/{id}/rename", self._nodes_rename)
        r.add_post("/api/v1/nodes/{id}/tags", self._nodes_tags)
        r.add_get("/api/v1/policy", self._policy_get)
        r.add_put("/api/v1/policy", self._policy_put)
        r.add_post("/api/v1/policy/check", self._policy_check)
        return app

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                request.query_string,
                request.headers.get("Authorization"),
                body,
            )
        )
        return await handler(request)

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    @staticmethod
    async def _json(request: web.Request) -> Any:
        return json.loads(await request.read() or b"{}")

    def _node_of(self, request: web.Request) -> FakeNode | None:
        auth = request.headers.get("Authorization", "")
        for node in self.nodes.values():
            if auth == f"Bearer {node.token}":
                return node
        return None

    def _admin(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {API_KEY}"

    async def _register(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if set(body) != {"auth_key", "public_key", "hostname"}:
            return self._error(400, f"unexpected fields {sorted(body)}")
        key = self.auth_keys.get(body["auth_key"])
        if key is None:
            return self._error(401, "The pre-auth key is not valid.")
        if not key["reusable"]:
            del self.auth_keys[body["auth_key"]]
        node = self._create(
            body["hostname"], body["public_key"], key["user"], ephemeral=key["ephemeral"]
        )
        self._announce(node)
        return web.json_response({"node": node.to_json(), "token": node.token})

    async def _login(self, request: web.Request) -> web.Response:
        node = self._node_of(request)
        if node is None:
            return self._error(401, "The node token is not valid.")
        body = await self._json(request)
        if set(body) != {"public_key", "hostname"}:
            return self._error(400, f"unexpected fields {sorted(body)}")
        node.public_key, node.hostname = body["public_key"], body["hostname"]
        return web.json_response({"node": node.to_json()})

    async def _endpoints(self, request: web.Request) -> web.Response:
        node = self._node_of(request)
        if node is None:
            return self._error(401, "The node token is not valid.")
        body = await self._json(request)
        if self.endpoints_delay:  # no await otherwise: a test that saw the request sees it done
            await asyncio.sleep(self.endpoints_delay)
        node.endpoints = list(body["endpoints"])
        self._announce(node)
        return web.json_response({})

    async def _candidates(self, request: web.Request) -> web.Response:
        if self.nat is None:
            return self._error(404, "Not Found")
        node = self._node_of(request)
        if node is None:
            return self._error(401, "The node token is not valid.")
        body = await self._json(request)
        if not {"ice_ufrag", "candidates"} <= set(body) <= {"ice_ufrag", "ice_pwd", "candidates"}:
            return self._error(400, f"unexpected fields {sorted(body)}")
        node.candidates = list(body["candidates"])
        # what the node sent as a password (nodes before per-pair keys did): kept to be
        # asserted on, never in a map, as the real server keeps none
        node.ice_ufrag, node.ice_pwd = body["ice_ufrag"], body.get("ice_pwd", "")
        self._announce(node)  # the peers learn the candidates, as from the real server
        return web.json_response({})

    async def _nat(self, request: web.Request) -> web.Response:
        if self.nat is None:
            return self._error(404, "Not Found")
        if self._node_of(request) is None:
            return self._error(401, "The node token is not valid.")
        return web.json_response(self.nat)

    async def _logout(self, request: web.Request) -> web.Response:
        node = self._node_of(request)
        if node is None:
            return self._error(401, "The node token is not valid.")
        if node.ephemeral:
            del self.nodes[node.id]
            for other in self.nodes:
                self._push(other, {"type": "peer_remove", "public_key": node.public_key})
        return web.json_response({})

    async def _map(self, request: web.Request) -> web.StreamResponse:
        self.map_requests += 1
        node = self._node_of(request)
        if node is None:
            return self._error(401, "The node token is not valid.")
        if self.refuse_maps > 0:
            self.refuse_maps -= 1
            return self._error(503, "The server is busy; try again.")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.streams.setdefault(node.id, []).append(queue)
        node.online = True
        try:
            await response.write(json.dumps(self.full_map(node)).encode() + b"\n")
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), self.keepalive)
                except TimeoutError:
                    message = {"type": "keepalive"}
                if message is None:
                    break
                if message is END_STREAM:
                    await response.write_eof()  # a finished response, the connection kept
                    return response
                await response.write(json.dumps(message).encode() + b"\n")
        finally:
            self.streams[node.id].remove(queue)
            node.online = bool(self.streams[node.id])
        # cut the connection: a closed stream, not a finished response
        if request.transport is not None:
            request.transport.close()
        return response

    # -- admin

    def _envelope(self, key: str, items: list[dict[str, Any]]) -> web.Response:
        return web.json_response({key: items} if self.list_envelopes else items)

    async def _users_list(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        return self._envelope("users", self.users)

    async def _users_create(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        body = await self._json(request)
        if any(u["name"] == body["name"] for u in self.users):
            return self._error(409, f'A user named "{body["name"]}" exists already.')
        user = {"id": len(self.users) + 1, "name": body["name"], "created_at": "t1"}
        self.users.append(user)
        return web.json_response({"user": user})

    async def _users_delete(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        name = request.match_info["name"]
        if not any(u["name"] == name for u in self.users):
            return self._error(404, f'There is no user named "{name}".')
        self.users = [u for u in self.users if u["name"] != name]
        return web.json_response({})

    async def _keys_list(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        return self._envelope("preauthkeys", self.preauthkeys)

    async def _keys_create(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        body = await self._json(request)
        allowed = {"user", "reusable", "ephemeral", "expiration_seconds", "tags"}
        if not set(body) <= allowed:
            return self._error(400, f"unknown fields {sorted(set(body) - allowed)}")
        key_id = secrets.token_hex(4)
        secret = f"wgpy_auth_{key_id}_" + secrets.token_urlsafe(32)
        record = {
            "id": key_id,
            "user": body.get("user"),
            "reusable": body.get("reusable", False),
            "ephemeral": body.get("ephemeral", False),
            "tags": body.get("tags", []),
            "expires_at": "2026-11-27T19:00:00.000Z",
            "used": False,
            "created_at": "2026-11-27T18:00:00.000Z",
        }
        self.preauthkeys.append(record)
        self.auth_keys[secret] = {
            "user": body.get("user") or "alice",
            "reusable": record["reusable"],
            "ephemeral": record["ephemeral"],
        }
        return web.json_response({"preauthkey": {**record, "key": secret}})

    async def _keys_expire(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        return web.json_response({})

    async def _nodes_list(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        user = request.query.get("user")
        nodes = [n.to_json() for n in self.nodes.values() if user is None or n.user == user]
        return self._envelope("nodes", nodes)

    def _find(self, request: web.Request) -> FakeNode | None:
        try:
            return self.nodes.get(int(request.match_info["id"]))
        except ValueError:
            return None

    async def _nodes_expire(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        node = self._find(request)
        if node is None:
            return self._error(404, "There is no such node.")
        node.expired = True
        self._push(node.id, {"type": "self", "self": node.to_json()})
        return web.json_response({"node": node.to_json()})

    async def _nodes_delete(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        node = self._find(request)
        if node is None:
            return self._error(404, f"There is no node {request.match_info['id']}.")
        del self.nodes[node.id]
        return web.json_response({})

    async def _nodes_rename(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        node = self._find(request)
        if node is None:
            return self._error(404, "There is no such node.")
        node.hostname = (await self._json(request))["hostname"]
        return web.json_response({"node": node.to_json()})

    async def _nodes_tags(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        node = self._find(request)
        if node is None:
            return self._error(404, "There is no such node.")
        node.tags = list((await self._json(request))["tags"])
        return web.json_response({"node": node.to_json()})

    async def _policy_get(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        return web.json_response({"version": self.policy_version, "policy": self.policy})

    def _validate(self, document: Any) -> str | None:
        names = {u["name"] for u in self.users}
        for i, rule in enumerate(document.get("acls", [])):
            for part in ("src", "dst"):
                for j, selector in enumerate(rule.get(part, [])):
                    if selector.startswith("user:") and selector[5:] not in names:
                        return f'acls[{i}].{part}[{j}]: unknown user "{selector[5:]}"'
        return None

    async def _policy_put(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        document = await self._json(request)
        problem = self._validate(document)
        if problem:
            return self._error(400, problem)
        self.policy = document
        self.policy_version += 1
        return web.json_response({"version": self.policy_version})

    async def _policy_check(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return self._error(401, "The API key is not valid.")
        problem = self._validate(await self._json(request))
        if problem:
            return self._error(400, problem)
        return web.json_response({})


# ---------------------------------------------------------------- interface and host


class FakeInterface:
    """A MeshInterface with a real Device and no TUN or socket."""

    def __init__(self, name: str, private_key: bytes, listen_port: int) -> None:
        self.name = name
        self.device = Device(private_key, rng=os.urandom, wall_clock=time.time_ns)
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.flushes = 0
        self._port = listen_port or 51999

    @property
    def listen_port(self) -> int:
        return self._port

    def flush(self) -> None:
        self.flushes += 1
        self.device.datagrams_to_send()
        self.device.packets_to_deliver()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def close(self, reason: str = "closed") -> None:
        self.close_reason = reason
        self.closed.set()


class FakeHost:
    """A HostNetwork that records instead of running ``ip``."""

    def __init__(self, addresses: list[str] | None = None) -> None:
        self.addresses: list[Any] = []  # on the interface
        self.service_addresses: list[Any] = []  # of those, the resolver's (not a source)
        self.routes: set[Any] = set()
        self.route_calls = 0
        self.link: tuple[str, int] | None = None
        self.local = [ipaddress.ip_address(a) for a in (addresses or ["192.0.2.10"])]

    async def add_address(self, name: str, address: Any) -> None:
        self.addresses.append(address)

    async def add_service_address(self, name: str, address: Any) -> None:
        self.addresses.append(address)
        self.service_addresses.append(address)

    async def remove_address(self, name: str, address: Any) -> None:
        self.addresses.remove(address)

    async def link_up(self, name: str, mtu: int) -> None:
        self.link = (name, mtu)

    async def set_routes(self, name: str, add: Any, remove: Any) -> None:
        self.route_calls += 1
        self.routes -= set(remove)
        self.routes |= set(add)

    async def local_addresses(self, exclude: str) -> list[Any]:
        return list(self.local)


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> float:
    """Wait (polling) until ``predicate()``; the time it took. AssertionError on timeout."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.005)
    return loop.time() - start


def key_texts(private: bytes) -> list[bytes]:
    """Every spelling of a key that could leak in a request."""
    return [
        base64.b64encode(private),
        base64.urlsafe_b64encode(private),
        base64.urlsafe_b64encode(private).rstrip(b"="),
        base64.b64encode(private).rstrip(b"="),
        private.hex().encode(),
        private.hex().upper().encode(),
        private,
    ]
