"""Fixtures for the mesh server tests.

- ``async def`` tests run in a fresh event loop each (``asyncio.run``), with a time limit.
- ``postgres``: one throwaway PostgreSQL cluster per session (tests/mesh/pg.py); every test
  that uses ``database`` gets a database of its own in it.
- ``backend``: parametrizes a test over SQLite and PostgreSQL; ``database`` is the matching
  (state_dir, database_url) pair; ``config`` a ServerConfig on 127.0.0.1, any free port, fast
  timers.
- ``Client``, ``MapReader``: a node's or an admin's view of the HTTP API.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wgpy.mesh.server import MeshServer, ServerConfig

from .pg import PostgresCluster, PostgresUnavailable, postgres_cluster

TEST_TIMEOUT = 30.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    # a module that drives a browser may allow itself longer (its own TEST_TIMEOUT)
    limit = getattr(pyfuncitem.module, "TEST_TIMEOUT", TEST_TIMEOUT)
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), limit))
    return True


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    try:
        with postgres_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as e:
        pytest.skip(f"PostgreSQL is not available: {e}")


def new_database(cluster: PostgresCluster) -> str:
    return cluster.dsn_for(cluster.create_database("t_"))


@dataclass(frozen=True)
class Database:
    state_dir: Path | None
    database_url: str | None

    @property
    def kind(self) -> str:
        return "postgresql" if self.database_url else "sqlite"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    kind = request.getfixturevalue("backend") if "backend" in request.fixturenames else "sqlite"
    if kind == "postgresql":
        cluster = request.getfixturevalue("postgres")
        return Database(None, new_database(cluster))
    return Database(tmp_path / "state", None)


FAST = dict(
    host="127.0.0.1",
    port=0,
    ephemeral_grace=0.3,
    keepalive=0.5,
    heartbeat=0.5,
    replica_timeout=2.0,
    shutdown_timeout=1.0,
)


@pytest.fixture
def config(database: Database) -> ServerConfig:
    return ServerConfig(state_dir=database.state_dir, database_url=database.database_url, **FAST)  # type: ignore[arg-type]


def with_(config: ServerConfig, **changes: Any) -> ServerConfig:
    return replace(config, **changes)


def new_public_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class ApiError(AssertionError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Client:
    """HTTP calls against one server with one credential (or none)."""

    session: aiohttp.ClientSession
    url: str
    token: str | None = None

    def using(self, token: str | None) -> Client:
        return Client(self.session, self.url, token)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        expect: int = 200,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.url + "/api/v1" + path, data=data, headers=headers
        ) as response:
            text = await response.text()
            payload = json.loads(text) if text else None
            if response.status != expect:
                raise ApiError(response.status, payload)
            if response.status >= 400:
                assert set(payload) == {"error"}, payload
            return payload

    async def error(
        self, method: str, path: str, body: Any = None, *, status: int, **kw: Any
    ) -> str:
        payload = await self.call(method, path, body, expect=status, **kw)
        message: str = payload["error"]
        return message

    # admin shortcuts
    async def user(self, name: str) -> dict[str, Any]:
        return (await self.call("POST", "/users", {"name": name}))["user"]  # type: ignore[no-any-return]

    async def auth_key(self, user: str, **options: Any) -> str:
        reply = await self.call("POST", "/preauthkeys", {"user": user, **options})
        return reply["preauthkey"]["key"]  # type: ignore[no-any-return]


@dataclass
class Node:
    client: Client
    node: dict[str, Any]
    token: str
    public_key: str

    @property
    def id(self) -> int:
        return int(self.node["id"])


async def register(
    client: Client,
    auth_key: str,
    hostname: str,
    public_key: str | None = None,
    holder: str | None = None,
) -> Node:
    """Register a node; ``holder``: the node token that proves a known key is the caller's."""
    public_key = public_key or new_public_key()
    reply = await client.using(holder).call(
        "POST", "/register", {"auth_key": auth_key, "public_key": public_key, "hostname": hostname}
    )
    return Node(client.using(reply["token"]), reply["node"], reply["token"], public_key)


@dataclass
class MapReader:
    """A node's map stream, applied as a client would: ``peers`` by public key."""

    response: aiohttp.ClientResponse
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    self_node: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    async def read(self, timeout: float = 2.0) -> dict[str, Any] | None:
        line = await asyncio.wait_for(self.response.content.readline(), timeout)
        if not line:
            self.closed = True
            return None
        message: dict[str, Any] = json.loads(line)
        self.messages.append(message)
        kind = message["type"]
        if kind == "full":
            self.self_node = message["self"]
            self.peers = {p["public_key"]: p for p in message["peers"]}
        elif kind == "peer_upsert":
            self.peers[message["peer"]["public_key"]] = message["peer"]
        elif kind == "peer_remove":
            self.peers.pop(message["public_key"], None)
        elif kind == "peer_online":
            self.peers[message["public_key"]]["online"] = message["online"]
        elif kind == "self":
            self.self_node = message["self"]
        return message

    async def until(self, condition: Callable[[MapReader], bool], timeout: float = 1.0) -> float:
        """Read until ``condition`` holds; the seconds it took (AssertionError after timeout)."""
        started = time.monotonic()
        deadline = started + timeout
        while not condition(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not within {timeout} s; last messages: {self.messages[-5:]}")
            try:
                if await self.read(left) is None:
                    raise AssertionError("the stream ended")
            except TimeoutError:
                continue
        return time.monotonic() - started

    def close(self) -> None:
        self.response.close()


async def open_map(node: Node | Client) -> MapReader:
    client = node.client if isinstance(node, Node) else node
    response = await client.session.get(
        client.url + "/api/v1/node/map",
        headers={"Authorization": f"Bearer {client.token}"},
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    )
    assert response.status == 200, await response.text()
    reader = MapReader(response)
    first = await reader.read()
    assert first is not None and first["type"] == "full"
    return reader


@dataclass
class Running:
    server: MeshServer
    admin: Client
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.url


class running:
    """``async with running(config) as r``: a started server, an admin client with a fresh
    API key, and an HTTP session; all stopped on exit."""

    def __init__(self, config: ServerConfig, **server_options: Any) -> None:
        self.server = MeshServer(config, **server_options)

    async def __aenter__(self) -> Running:
        await self.server.start()
        _, key = await self.server.store.api_keys.create(None)
        self.session = aiohttp.ClientSession()
        return Running(self.server, Client(self.session, self.server.url, str(key)), self.session)

    async def __aexit__(self, *_exc: object) -> None:
        await self.session.close()
        await self.server.stop()
