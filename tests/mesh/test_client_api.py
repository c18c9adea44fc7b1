"""The HTTP client on its own: errors as sentences, the NDJSON stream, TLS pinning; and the
parsing of the server's NODE and PEER objects and of ``ip -json address``."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wgpy.mesh.client import api
from wgpy.mesh.client.api import (
    ApiError,
    NodeClient,
    ServerUnreachable,
    StreamError,
    check_server_url,
)
from wgpy.mesh.client.netmap import MapError, parse_node, parse_peer, parse_time
from wgpy.mesh.client.system import parse_ip_addresses

KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(
    routes: dict[str, Handler], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ errors


def test_errors_are_the_servers_sentence_or_a_plain_one() -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "The pre-auth key has expired."}, status=403)

    async def crash(request: web.Request) -> web.Response:
        return web.Response(status=500, text="<html>oops</html>", content_type="text/html")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://elsewhere.example/")

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def main() -> None:
        routes = {
            "/api/v1/register": refuse,
            "/api/v1/login": crash,
            "/api/v1/logout": moved,
            "/api/v1/node/endpoints": not_json,
        }
        async with serve(routes) as url, NodeClient(url, token="t") as client:
            with pytest.raises(ApiError) as e:
                await client.register("k", KEY, "h")
            assert (e.value.status, e.value.message) == (403, "The pre-auth key has expired.")
            assert e.value.unauthorized
            with pytest.raises(ApiError) as e:
                await client.login(KEY, "h")
            assert e.value.message == "the server answered 500 Internal Server Error"
            with pytest.raises(ApiError) as e:  # not followed: the token stays here
                await client.logout()
            assert e.value.status == 302
            with pytest.raises(ApiError, match="is not JSON"):
                await client.report_endpoints([])
        # nothing listens there any more
        async with NodeClient(url) as client:
            with pytest.raises(ServerUnreachable) as unreachable:
                await client.logout()
            message = unreachable.value.message
            assert message.startswith(f"cannot reach the coordination server at {url}: ")
            assert "refused" in message.lower()

    run(main())


def test_server_urls() -> None:
    assert check_server_url("https://mesh.example/") == "https://mesh.example"
    assert check_server_url("http://[::1]:8080") == "http://[::1]:8080"
    for bad in ("mesh.example", "ftp://x", "https://", "https://x/?a=1"):
        with pytest.raises(ValueError):
            check_server_url(bad)


# ------------------------------------------------------------------ the stream


def test_the_map_stream_reassembles_lines_from_any_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = [
        {"type": "full", "version": 1, "self": {}, "peers": [], "note": "héllo ✓"},
        {"type": "keepalive"},
        {"type": "peer_remove", "public_key": KEY},
    ]
    data = b"".join(json.dumps(m, ensure_ascii=False).encode() + b"\n" for m in messages)
    data = data.replace(b"\n", b"\n\n", 1)  # a blank line is skipped

    async def stream(request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == "Bearer tok"
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(0, len(data), 3):  # 3 bytes at a time, splitting UTF-8 too
            await response.write(data[i : i + 3])
            await asyncio.sleep(0)
        if request.query.get("then") == "junk":
            await response.write(b"[1, 2]\n")
        return response

    async def junk(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"type": "keepalive"}\nnot json\n')
        return response

    async def long_line(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x" * 5000)
        await asyncio.sleep(5)
        return response

    async def main() -> None:
        async with serve({"/api/v1/node/map": stream}) as url, NodeClient(url, token="tok") as c:
            got = [m async for m in c.map_stream()]
            assert got == messages
        async with serve({"/api/v1/node/map": junk}) as url, NodeClient(url, token="t") as c:
            received = []
            with pytest.raises(StreamError, match="not JSON"):
                async for m in c.map_stream():
                    received.append(m)
            assert received == [{"type": "keepalive"}]
        monkeypatch.setattr(api, "MAX_LINE", 1000)
        async with serve({"/api/v1/node/map": long_line}) as url, NodeClient(url, token="t") as c:
            with pytest.raises(StreamError, match="too long"):
                async with aclosing(c.map_stream()) as s:
                    async for _ in s:
                        pass

    run(main())


def test_a_refused_stream_is_an_api_error() -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.json_response({"error": "The node has been deleted."}, status=401)

    async def main() -> None:
        async with serve({"/api/v1/node/map": gone}) as url, NodeClient(url, token="t") as c:
            with pytest.raises(ApiError) as e:
                async for _ in c.map_stream():
                    pass
            assert e.value.unauthorized and e.value.message == "The node has been deleted."

    run(main())


# ------------------------------------------------------------------ TLS


def _certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA, and a certificate for 127.0.0.1 that it signed; the CA's file and a server
    context."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wgpy test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file)
    return ca_file, context


def test_a_pinned_ca_is_trusted_and_the_system_store_is_not(tmp_path: Path) -> None:
    ca_file, context = _certificates(tmp_path)

    async def logout(request: web.Request) -> web.Response:
        return web.json_response({})

    async def main() -> None:
        async with serve({"/api/v1/logout": logout}, context) as url:
            async with NodeClient(url, token="t", ca_cert=str(ca_file)) as client:
                await client.logout()
            async with NodeClient(url, token="t") as client:
                with pytest.raises(ServerUnreachable, match="TLS certificate is not trusted"):
                    await client.logout()
            async with NodeClient(url, token="t", ca_cert=str(tmp_path / "nope.pem")) as client:
                with pytest.raises(ServerUnreachable, match="cannot load the CA certificate"):
                    await client.logout()

    run(main())


# ------------------------------------------------------------------ NODE and PEER


def test_parse_peer() -> None:
    peer = parse_peer(
        {
            "public_key": KEY,
            "hostname": "b",
            "user": "alice",
            "addresses": ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"],
            "endpoints": ["b.example:1", "[2001:db8::2]:41641", "192.0.2.2:41641"],
            "tags": ["tag:web"],
            "online": True,
            "can_reach": True,
            "reachable_from": False,
            "something_new": 1,
        }
    )
    assert [str(n) for n in peer.allowed_ips] == ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"]
    assert peer.endpoint == ("2001:db8::2", 41641)  # the first usable one
    assert (peer.can_reach, peer.reachable_from) == (True, False)
    minimal = parse_peer({"public_key": KEY, "addresses": ["100.64.0.2/32"]})
    assert minimal.endpoint is None
    assert (minimal.can_reach, minimal.reachable_from) == (False, False)  # missing: denied
    for bad, message in [
        ([], "not a JSON object"),
        ({"addresses": []}, "'public_key' is missing"),
        ({"public_key": "abc"}, "not a valid WireGuard key"),
        ({"public_key": KEY, "addresses": "100.64.0.2/32"}, "wrong type"),
        ({"public_key": KEY, "addresses": ["::/0"]}, "default route"),
        ({"public_key": KEY, "addresses": ["100.64.0.300/32"]}, "not a network"),
        ({"public_key": KEY, "endpoints": [1]}, "not a list of strings"),
        ({"public_key": KEY, "reachable_from": "yes"}, "wrong type"),
    ]:
        with pytest.raises(MapError, match=message):
            parse_peer(bad)


def test_parse_node_and_expiry() -> None:
    node = parse_node(
        {
            "id": 1,
            "public_key": KEY,
            "hostname": "a",
            "ipv4": "100.64.0.1",
            "ipv6": "fd7a:115c:a1e0::1",
            "expires_at": "2030-01-01T00:00:00.000Z",
            "expired": False,
            "ephemeral": True,
        }
    )
    assert [str(a) for a in node.addresses] == ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"]
    assert node.ephemeral
    assert not node.expired(parse_time("2029-12-31T23:59:59Z") or 0)
    assert node.expired(parse_time("2030-01-01T00:00:00Z") or 0)
    assert parse_node({"expired": True}).expired(0)
    assert parse_node({"expires_at": None}).expires_at is None
    assert parse_time(1700000000) == 1700000000.0
    assert parse_time("2026-01-01T00:00:00") == parse_time("2026-01-01T00:00:00+00:00")
    with pytest.raises(MapError):
        parse_node({"ipv4": "fd7a::1"})
    with pytest.raises(MapError):
        parse_time("soon")


def test_local_addresses_from_ip_json() -> None:
    links = [
        {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [
            {"family": "inet", "local": "127.0.0.1", "scope": "host"}]},
        {"ifname": "eth0", "flags": ["BROADCAST", "UP", "LOWER_UP"], "addr_info": [
            {"family": "inet6", "local": "2001:db8::5", "scope": "global"},
            {"family": "inet6", "local": "fe80::1", "scope": "link"},
            {"family": "inet", "local": "192.0.2.5", "scope": "global"},
            {"family": "inet6", "local": "2001:db8::6", "scope": "global", "tentative": True}]},
        {"ifname": "wgpy0", "flags": ["UP"], "addr_info": [
            {"family": "inet", "local": "100.64.0.1", "scope": "global"}]},
        {"ifname": "other", "flags": ["UP"], "addr_info": [
            {"family": "inet", "local": "100.64.0.9", "scope": "global"},
            {"family": "inet", "local": "198.51.100.1", "scope": "global"}]},
        {"ifname": "down0", "flags": ["BROADCAST"], "addr_info": [
            {"family": "inet", "local": "203.0.113.1", "scope": "global"}]},
    ]  # fmt: skip
    addresses = parse_ip_addresses(json.dumps(links), "wgpy0")
    assert [str(a) for a in addresses] == ["192.0.2.5", "198.51.100.1", "2001:db8::5"]
    assert parse_ip_addresses("garbage", "x") == []
