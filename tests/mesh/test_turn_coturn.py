"""The TURN credentials ``GET /api/v1/node/nat`` hands out, used with aioice's TURN client
against a real coturn (Debian's ``turnserver``, ``use-auth-secret``) on loopback: they make an
allocation over UDP and over TCP; a wrong password and expired credentials are refused.

The coturn here is started by the test itself (by process id, stopped by it; one started by
anyone else is left alone), on free loopback ports with TLS and DTLS off.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aioice import stun as aioice_stun
from aioice import turn as aioice_turn

from wgpy.mesh.server import ServerConfig

from .conftest import register, running
from .support import captured_logs

TURNSERVER = shutil.which("turnserver")
pytestmark = pytest.mark.skipif(TURNSERVER is None, reason="coturn (turnserver) is not installed")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (checked, then released)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free port for coturn")


@contextlib.contextmanager
def coturn(workdir: Path, secret: str) -> Iterator[int]:
    """coturn on 127.0.0.1 with ``secret``; its port, once it answers STUN."""
    port = free_port()
    log = workdir / "turnserver.log"
    assert TURNSERVER is not None
    argv = [
        TURNSERVER, "-n", "--no-cli", "--no-tls", "--no-dtls",
        "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        "--min-port=49152", "--max-port=65535", "--allow-loopback-peers",
        "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=wgpy.test",
        f"--pidfile={workdir / 'turnserver.pid'}", f"--userdb={workdir / 'turndb'}",
        f"--log-file={log}", "--simple-log", "--no-stdout-log",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            while True:
                assert process.poll() is None, f"turnserver exited: {_tail(log)}"
                assert time.monotonic() < deadline, f"turnserver does not answer: {_tail(log)}"
                request = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
                sock.sendto(bytes(request), ("127.0.0.1", port))
                with contextlib.suppress(TimeoutError):
                    if sock.recvfrom(2048):
                        break
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


async def allocate(port: int, username: str, password: str, transport: str) -> tuple[str, int]:
    """A TURN allocation made by aioice's client; the relayed address."""
    turn, _ = await aioice_turn.create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=("127.0.0.1", port),
        username=username,
        password=password,
        transport=transport,
    )
    try:
        relayed: tuple[str, int] = turn.get_extra_info("sockname")
        return relayed
    finally:
        turn.close()


def test_credentials_from_the_server_make_coturn_allocations(
    tmp_path: Path, config: ServerConfig
) -> None:
    secret = secrets.token_urlsafe(24)
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    with coturn(tmp_path, secret) as port:
        urls = (f"turn:127.0.0.1:{port}?transport=udp", f"turn:127.0.0.1:{port}?transport=tcp")
        turn_config = replace(config, turn_urls=urls, turn_secret_file=secret_file, turn_ttl=600)

        async def nat(clock_offset: float, user: str) -> dict[str, object]:
            clock = lambda: time.time() + clock_offset  # noqa: E731
            async with running(turn_config, clock=clock) as r:
                await r.admin.user(user)
                node = await register(r.admin, await r.admin.auth_key(user), "a")
                reply: dict[str, object] = await node.client.call("GET", "/node/nat")
                return reply

        async def main() -> None:
            reply = await nat(0.0, "alice")
            (relay,) = reply["turn"]  # type: ignore[misc]
            assert relay["urls"] == list(urls)
            user, password = relay["username"], relay["password"]
            for transport in ("udp", "tcp"):
                host, relayed_port = await allocate(port, user, password, transport)
                assert host == "127.0.0.1" and relayed_port >= 49152
            with pytest.raises(aioice_stun.TransactionFailed) as e:
                await allocate(port, user, password[:-2] + "x=", "udp")
            assert e.value.response.attributes["ERROR-CODE"][0] == 401
            expired = await nat(-700.0, "bob")  # handed out 700 s ago, valid for 600
            (old,) = expired["turn"]  # type: ignore[misc]
            assert old["expires"] < time.time()
            with pytest.raises(aioice_stun.TransactionFailed) as e:
                await allocate(port, old["username"], old["password"], "udp")
            assert e.value.response.attributes["ERROR-CODE"][0] == 401

        with captured_logs() as logs:
            asyncio.run(asyncio.wait_for(main(), 60))
    assert logs and secret not in repr(logs)  # the server never logs the secret
