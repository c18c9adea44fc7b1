"""The STUN responder of a real ``wgpy server`` on loopback, asked by aioice's STUN messages
over a plain UDP socket: answers, hostile datagrams, the command line's flags and errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import stun as aioice_stun

from wgpy.cli import ExitStatus
from wgpy.mesh.server import MeshServer, ServerConfig
from wgpy.mesh.server.stun import MALFORMED, NOT_BINDING, OVERSIZED

from .conftest import with_
from .support import WGPY, captured_logs, run

STUN_LINE = re.compile(r"wgpy server: answering STUN on udp (.+)\n")


def ask(address: tuple[str, int], *, fingerprint: bool = False) -> tuple[str, int]:
    """A Binding request built by aioice from a fresh socket; the XOR-MAPPED-ADDRESS that
    aioice reads in the answer, checked against the socket's own address."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind((address[0], 0))
        request = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
        if fingerprint:
            request.attributes["SOFTWARE"] = "wgpy test"
            request.attributes["FINGERPRINT"] = aioice_stun.message_fingerprint(bytes(request))
        sock.sendto(bytes(request), address)
        data, _ = sock.recvfrom(2048)
        answer = aioice_stun.parse_message(data)
        assert answer.message_class == aioice_stun.Class.RESPONSE
        assert answer.message_method == aioice_stun.Method.BINDING
        assert answer.transaction_id == request.transaction_id
        assert set(answer.attributes) == (
            {"XOR-MAPPED-ADDRESS", "FINGERPRINT"} if fingerprint else {"XOR-MAPPED-ADDRESS"}
        )
        mapped: tuple[str, int] = answer.attributes["XOR-MAPPED-ADDRESS"]
        assert mapped == sock.getsockname()[:2]
        return mapped


def silent(address: tuple[str, int], data: bytes) -> bool:
    """Whether ``data`` sent to ``address`` gets no answer within 0.3 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        sock.sendto(data, address)
        try:
            sock.recvfrom(2048)
        except TimeoutError:
            return True
        return False


@contextlib.contextmanager
def server_process(state: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``wgpy server ARGS`` on loopback, its first line read."""
    process = subprocess.Popen(
        [str(WGPY), "server", "--state-dir", str(state), "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOG_LEVEL": "warning"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("wgpy server: listening on "), first
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def addresses(process: subprocess.Popen[str]) -> list[tuple[str, int]]:
    """Where the server says that STUN listens (its second line)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    match = STUN_LINE.fullmatch(line)
    assert match, line
    out = []
    for text in match[1].split(", "):
        host, _, port = text.rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


pytestmark = pytest.mark.skipif(not WGPY.exists(), reason="the wgpy script is not installed")


def test_the_server_answers_stun_as_aioice_reads_it(tmp_path: Path) -> None:
    args = ("--stun-listen", "127.0.0.1:0", "--stun-listen", "[::1]:0")
    with server_process(tmp_path, *args) as process:
        v4, v6 = addresses(process)
        assert v4[0] == "127.0.0.1" and v6[0] == "::1" and v4[1] and v6[1]
        ask(v4)
        ask(v4, fingerprint=True)
        ask(v6)
        # junk of every kind gets nothing, and the server keeps answering
        junk = [
            b"",
            b"\x01\x00\x00\x00" + os.urandom(144),  # WireGuard-shaped
            bytes(aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE)),
            bytes(aioice_stun.Message(aioice_stun.Method.ALLOCATE, aioice_stun.Class.REQUEST)),
            os.urandom(1400),
            b"\x00\x01\x05\x00\x21\x12\xa4\x42" + os.urandom(12) + bytes(1280),
        ]
        for data in junk:
            assert silent(v4, data)
        ask(v4)
        assert process.poll() is None


def test_the_default_is_port_3478_on_every_address(tmp_path: Path) -> None:
    with server_process(tmp_path) as process:
        assert addresses(process) == [("0.0.0.0", 3478), ("::", 3478)]
        ask(("127.0.0.1", 3478))


def test_stun_off(tmp_path: Path) -> None:
    with server_process(tmp_path, "--stun-listen", "off") as process:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None and process.stdout.read() == ""  # no STUN line


def test_a_port_in_use_is_one_sentence_and_a_failure(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(WGPY), "server", "--state-dir", str(tmp_path), "--listen", "127.0.0.1:0",
             "--stun-listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == ExitStatus.ERROR
    assert result.stdout == ""
    assert result.stderr.endswith(
        f"wgpy server: cannot listen for STUN on udp 127.0.0.1:{port}: Address already in "
        "use (choose another with --stun-listen HOST:PORT, or --stun-listen off)\n"
    ), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--stun-listen", "nonsense"],
        ["--stun-listen", "localhost:3478"],
        ["--stun-listen", "127.0.0.1:65536"],
        ["--stun-listen", "[127.0.0.1]:3478"],
        ["--stun-listen", "::1:3478"],
    ],
)
def test_bad_stun_addresses_are_usage_errors(argv: list[str]) -> None:
    status, out, err = run("server", *argv)
    assert status == ExitStatus.USAGE and out == ""
    assert err == (
        f"wgpy server: --stun-listen {argv[1]!r}: expected HOST:PORT with an IP address, e.g. "
        "192.0.2.1:3478 or [2001:db8::1]:3478, :3478 for every address, or off\n"
    )


def test_off_goes_alone() -> None:
    status, _, err = run("server", "--stun-listen", "off", "--stun-listen", ":3478")
    assert status == ExitStatus.USAGE
    assert err == "wgpy server: --stun-listen off cannot go with other addresses\n"


def test_replicas_on_one_host_share_the_stun_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = ("--stun-listen", f"127.0.0.1:{port}")
    with (
        server_process(tmp_path / "one", *listen) as one,
        server_process(tmp_path / "two", *listen) as two,
    ):
        assert addresses(one) == addresses(two) == [("127.0.0.1", port)]
        for _ in range(4):
            ask(("127.0.0.1", port))


async def test_drops_are_counted_by_reason_and_logged_once(tmp_path: Path) -> None:
    config = ServerConfig(
        host="127.0.0.1", port=0, state_dir=tmp_path, stun_listen=(("127.0.0.1", 0),)
    )
    with captured_logs() as logs:
        async with MeshServer(with_(config, shutdown_timeout=1.0)) as server:
            await _drops(server)
    drops = [e for e in logs if e["event"] == "STUN datagrams dropped"]
    assert len(drops) == 1  # the first drop; the others fall within the 10 s after it
    assert drops[0]["malformed"] == 1 and drops[0]["log_level"] == "warning"


async def _drops(server: MeshServer) -> None:
    (address,) = server.stun_addresses
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ask, address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"junk", address)
        sock.sendto(bytes(2000), address)
        response = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE)
        sock.sendto(bytes(response), address)
        for _ in range(50):
            if sum(server.stun.drops.values()) == 3:
                break
            await asyncio.sleep(0.02)
    assert server.stun.drops == {MALFORMED: 1, OVERSIZED: 1, NOT_BINDING: 1}
    assert server.stun.answered == 1


async def test_a_flood_of_random_and_stun_shaped_datagrams_leaves_it_answering(
    tmp_path: Path,
) -> None:
    """500 datagrams (random bytes, and STUN headers with random attributes, lengths and
    classes) from one socket: each is answered or counted as a drop, and a fresh client is
    still answered afterwards."""
    rng = random.Random(11)
    datagrams = []
    for i in range(500):
        if i % 2:
            datagrams.append(rng.randbytes(rng.randrange(0, 700)))
        else:
            body = rng.randbytes(rng.randrange(0, 64) * 4)
            kind = rng.choice([0x0001, 0x0101, 0x0111, 0x0011, 0x0003, rng.randrange(0x4000)])
            length = len(body) if rng.random() < 0.8 else rng.randrange(0x10000)
            header = struct.pack("!HHI", kind, length, 0x2112A442) + rng.randbytes(12)
            datagrams.append(header + body)
    config = ServerConfig(
        host="127.0.0.1", port=0, state_dir=tmp_path, stun_listen=(("127.0.0.1", 0),)
    )
    async with MeshServer(with_(config, shutdown_timeout=1.0)) as server:
        (address,) = server.stun_addresses
        seen = lambda: server.stun.answered + sum(server.stun.drops.values())  # noqa: E731
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for start in range(0, len(datagrams), 25):  # paced: the kernel's buffer is finite
                for data in datagrams[start : start + 25]:
                    sock.sendto(data, address)
                for _ in range(100):
                    if seen() >= min(start + 25, len(datagrams)):
                        break
                    await asyncio.sleep(0.01)
        assert seen() == len(datagrams)
        assert server.stun.drops[OVERSIZED] and server.stun.drops[NOT_BINDING]
        await asyncio.get_running_loop().run_in_executor(None, ask, address)


def test_response_port_answers_at_another_port_of_the_sender_only(tmp_path: Path) -> None:
    """RFC 5780's RESPONSE-PORT, as binding lifetime discovery uses it: the request from one
    socket, the answer at another socket's port on the same address; the sender gets none."""
    with server_process(tmp_path, "--stun-listen", "127.0.0.1:0") as process:
        (v4,) = addresses(process)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as x,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as y,
        ):
            x.bind(("127.0.0.1", 0))
            y.bind(("127.0.0.1", 0))
            x.settimeout(5)
            y.settimeout(0.3)
            txid = os.urandom(12)
            request = struct.pack("!HHI", 0x0001, 8, 0x2112A442) + txid
            request += struct.pack("!HHHH", 0x0027, 4, x.getsockname()[1], 0)
            y.sendto(request, v4)
            data, source = x.recvfrom(2048)
            assert source == v4
            answer = aioice_stun.parse_message(data)
            assert answer.transaction_id == txid
            # the mapped address is the sender's
            assert answer.attributes["XOR-MAPPED-ADDRESS"] == y.getsockname()
            with pytest.raises(TimeoutError):
                y.recvfrom(2048)
            # port 0 is dropped
            zero = request[:-4] + bytes(4)
            y.sendto(zero, v4)
            with pytest.raises(TimeoutError):
                y.recvfrom(2048)
            ask(v4)
