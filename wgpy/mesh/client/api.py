"""HTTP clients for the coordination server (docs/mesh-api.md): the node's (here) and the
admin's (:mod:`wgpy.mesh.client.admin`).

Both speak JSON over one aiohttp session. A failure is one of three exceptions, each with a
sentence for the user: :class:`ApiError` (the server answered, and refused: its own
``{"error": ...}`` sentence), :class:`ServerUnreachable` (no answer: connection, TLS, timeout)
and :class:`StreamError` (the map stream broke mid-way). TLS uses the system's CA store, or
only the CA in ``ca_cert`` when one is given. Redirects are not followed: a token goes only
to the URL it was given for.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import ssl
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp

from ... import machinecert
from ...nat.servers import NatConfig, parse_nat_config

__all__ = [
    "ApiError",
    "Client",
    "MeshClientError",
    "NodeClient",
    "ServerUnreachable",
    "StreamError",
    "check_server_url",
]

REQUEST_TIMEOUT = 15.0  # seconds for one request and its answer
STREAM_IDLE_TIMEOUT = 45.0  # seconds without a line (keepalives come every 15 s)
MAX_LINE = 32 * 1024 * 1024  # bytes: one map line (a full map of a large mesh)
MAX_REPLY = 16 * 1024 * 1024  # bytes: one JSON answer


class MeshClientError(Exception):
    """A request that did not succeed; ``message`` is one sentence."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(MeshClientError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unauthorized(self) -> bool:
        return self.status in (401, 403)


class ServerUnreachable(MeshClientError):
    """No answer: the connection, TLS or a timeout failed."""


class StreamError(MeshClientError):
    """The map stream broke or carried something that is not a message."""


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError if it is not an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} has a query or fragment; give the server's base URL")
    return url.rstrip("/")


def _ssl_context(ca_cert: str | None) -> ssl.SSLContext | bool:
    if ca_cert is None:
        return True  # the system's store
    try:
        return ssl.create_default_context(cafile=ca_cert)
    except (OSError, ssl.SSLError) as e:
        raise ServerUnreachable(f"cannot load the CA certificate {ca_cert}: {e}") from None


def _reason(e: BaseException) -> str:
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return f"its TLS certificate is not trusted ({e.certificate_error})"
    if isinstance(e, aiohttp.ClientSSLError):
        return f"TLS failed ({e})"
    if isinstance(e, aiohttp.ClientConnectorError):
        error = e.os_error
        if isinstance(error, socket.gaierror):
            return f"cannot resolve {e.host} ({error.strerror})"
        if error.errno and error.errno > 0:
            return os.strerror(error.errno)  # "Connection refused", not asyncio's wording
        return error.strerror or str(error) or "the connection failed"
    if isinstance(e, TimeoutError):
        return "it did not answer in time"
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e) or type(e).__name__


def _error_sentence(status: int, reason: str, body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"]:
        return str(data["error"])
    return f"the server answered {status} {reason}".rstrip()


class Client:
    """One aiohttp session against ``base_url``; use as ``async with``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ca_cert: str | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.base_url = check_server_url(base_url)
        self.token = token
        self.ca_cert = ca_cert
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=_ssl_context(self.ca_cert))
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _unreachable(self, e: BaseException) -> ServerUnreachable:
        return ServerUnreachable(
            f"cannot reach the coordination server at {self.base_url}: {_reason(e)}"
        )

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Send ``body`` (JSON, if not None) and return the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        headers = self._headers()
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._get_session().request(
                method,
                self.base_url + path,
                data=data,
                params=params,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                content = await resp.content.read(MAX_REPLY + 1)
                status, reason = resp.status, resp.reason or ""
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise self._unreachable(e) from None
        if len(content) > MAX_REPLY:
            raise ApiError(status, f"the server's answer to {method} {path} is too large")
        if not 200 <= status < 300:
            raise ApiError(status, _error_sentence(status, reason, content))
        if not content.strip():
            return {}
        try:
            return json.loads(content)
        except ValueError:
            raise ApiError(status, f"the server's answer to {method} {path} is not JSON") from None

    async def machine_challenge(self) -> bytes:
        """A fresh challenge from the server for a machine proof (wgpy/machinecert.py)."""
        reply = await self.request("GET", "/api/v1/machine/challenge")
        text = reply.get("challenge") if isinstance(reply, dict) else None
        try:
            challenge = base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            challenge = b""
        if not machinecert.CHALLENGE_MIN <= len(challenge) <= machinecert.CHALLENGE_MAX:
            raise ApiError(200, "the server's machine challenge is unusable")
        return challenge


class NodeClient(Client):
    """The node endpoints; ``token`` is the node token (None before registration)."""

    async def register(
        self,
        auth_key: str,
        public_key: str,
        hostname: str,
        *,
        proof: dict[str, str] | None = None,
    ) -> tuple[Any, str]:
        """Register with a pre-auth key (and a machine ``proof``: the fields of
        MachineIdentity.prove plus "challenge"); the node record and the new node token."""
        reply = await self.request(
            "POST",
            "/api/v1/register",
            {"auth_key": auth_key, "public_key": public_key, "hostname": hostname, **(proof or {})},
        )
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiError(200, "the server's answer to the registration holds no node token")
        self.token = token
        return reply.get("node"), token

    async def login(
        self, public_key: str, hostname: str, *, proof: dict[str, str] | None = None
    ) -> Any:
        """Log in again with the stored token (and a machine ``proof``); the node record."""
        reply = await self.request(
            "POST",
            "/api/v1/login",
            {"public_key": public_key, "hostname": hostname, **(proof or {})},
        )
        return reply.get("node") if isinstance(reply, dict) else None

    async def report_endpoints(self, endpoints: list[str]) -> None:
        await self.request("POST", "/api/v1/node/endpoints", {"endpoints": endpoints})

    async def report_routes(self, routes: list[str]) -> None:
        """The subnet routes this node advertises (both default routes: an exit node),
        replacing the last list (``POST /api/v1/node/routes``)."""
        await self.request("POST", "/api/v1/node/routes", {"routes": routes})

    async def report_candidates(self, ice_ufrag: str, candidates: list[str]) -> None:
        """This node's ICE ufrag and candidates (as ``Candidate.to_sdp()`` writes them, at
        most 16), for its peers' maps. No password: the checks' keys are per pair of nodes,
        derived by the two (:func:`wgpy.nat.ice.derive_pair_keys`), never sent."""
        await self.request(
            "POST",
            "/api/v1/node/candidates",
            {"ice_ufrag": ice_ufrag, "candidates": candidates},
        )

    async def nat_config(self) -> NatConfig:
        """Where the server's STUN responder is, and TURN relays with fresh credentials."""
        reply = await self.request("GET", "/api/v1/node/nat")
        try:
            return parse_nat_config(reply)
        except ValueError as e:
            raise ApiError(200, f"the server's NAT settings are unusable: {e}") from None

    async def logout(self) -> None:
        await self.request("POST", "/api/v1/logout", {})

    async def map_stream(
        self, idle_timeout: float = STREAM_IDLE_TIMEOUT
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The messages of one map stream, until the server ends it. Wrap it in
        ``contextlib.aclosing`` to close the connection when leaving early."""
        headers = self._headers()
        headers["Accept"] = "application/x-ndjson"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=idle_timeout
        )
        path = "/api/v1/node/map"
        try:
            async with self._get_session().get(
                self.base_url + path, headers=headers, allow_redirects=False, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    content = await resp.content.read(MAX_REPLY)
                    raise ApiError(
                        resp.status, _error_sentence(resp.status, resp.reason or "", content)
                    )
                buffer = bytearray()
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    start = 0
                    while (end := buffer.find(b"\n", start)) >= 0:
                        line = bytes(buffer[start:end])
                        start = end + 1
                        if line.strip():
                            yield _decode_line(line)
                    del buffer[:start]
                    if len(buffer) > MAX_LINE:
                        raise StreamError("a map line from the server is too long")
        except aiohttp.ConnectionTimeoutError as e:
            raise self._unreachable(e) from None
        except TimeoutError:
            raise StreamError(
                f"the map stream from {self.base_url} was silent for {idle_timeout:g} seconds"
            ) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as e:
            raise StreamError(f"the map stream from {self.base_url} broke: {_reason(e)}") from None
        except (aiohttp.ClientError, OSError) as e:
            raise self._unreachable(e) from None


def _decode_line(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        raise StreamError("the server sent a map line that is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise StreamError("the server sent a map line that is not a message")
    return message
