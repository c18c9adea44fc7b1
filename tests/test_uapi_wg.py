"""The real ``wg`` (wireguard-tools) against our control socket in /var/run/wireguard.

Each test serves a fake interface (a real protocol Device, no TUN, no UDP) on an asyncio loop
in a background thread, under a name unique to the process, and removes its socket at the end.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from test_uapi import FakeTarget

from wgpy.protocol.crypto import clamp, generate_private_key, public_key
from wgpy.uapi.paths import socket_path
from wgpy.uapi.server import UapiServer, serve_uapi

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for /var/run/wireguard"),
    pytest.mark.skipif(shutil.which("wg") is None, reason="needs wg (wireguard-tools)"),
]

WG = shutil.which("wg") or "/usr/bin/wg"
_numbers = itertools.count()


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class Served:
    """A UAPI server for a FakeTarget on its own event loop in a thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = socket_path(name)
        self.target = FakeTarget()
        self.removed = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> UapiServer:
            return await serve_uapi(name, self.target, on_socket_removed=self.removed.set)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()


@pytest.fixture
def serve() -> Iterator[Callable[[], Served]]:
    """Start servers named wgpyu<pid><n> (15 characters at most, unique in the process);
    close them and unlink their sockets after the test."""
    started: list[Served] = []
    names: list[str] = []

    def start() -> Served:
        name = f"wgpyu{os.getpid() % 100000}{next(_numbers)}"
        names.append(name)
        served = Served(name)
        started.append(served)
        return served

    try:
        yield start
    finally:
        for served in started:
            with suppress(Exception):
                served.close()
        for name in names:
            with suppress(FileNotFoundError):
                os.unlink(socket_path(name))


def wg(*args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run([WG, *args], input=input, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def key_file(tmp_path: Path, key: bytes) -> str:
    path = tmp_path / f"key-{key.hex()[:8]}"
    path.write_text(b64(key) + "\n")
    path.chmod(0o600)
    return str(path)


def conf_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------ show / set


def test_show_of_an_empty_interface(serve: Callable[[], Served]) -> None:
    a = serve()
    assert wg("show", a.name) == f"interface: {a.name}\n"
    assert wg("show", a.name, "dump") == "(none)\t(none)\t0\toff\n"
    assert a.name in wg("show", "interfaces").split()
    assert os.stat(a.path).st_mode & 0o777 == 0o600


def test_set_then_show(serve: Callable[[], Served], tmp_path: Path) -> None:
    a = serve()
    private, peer_private, psk = (
        generate_private_key(os.urandom),
        generate_private_key(os.urandom),
        os.urandom(32),
    )
    peer = public_key(peer_private)
    wg(
        "set", a.name,
        "private-key", key_file(tmp_path, private),
        "listen-port", "51820",
        "fwmark", "0x1234",
        "peer", b64(peer),
        "allowed-ips", "10.0.0.1/24,fd00::/64",
        "endpoint", "192.0.2.1:51820",
        "persistent-keepalive", "25",
        "preshared-key", key_file(tmp_path, psk),
    )  # fmt: skip
    device = a.target.device
    assert device.identity is not None and device.identity.private == private
    assert (a.target.listen_port, a.target.fwmark) == (51820, 0x1234)
    p = device.peers[peer]
    assert p.endpoint == ("192.0.2.1", 51820)
    assert p.preshared_key == psk
    assert p.persistent_keepalive == 25
    assert [str(n) for n in device.allowed_ips.prefixes(p)] == ["10.0.0.0/24", "fd00::/64"]

    interface, peer_line = wg("show", a.name, "dump").splitlines()
    assert interface == f"{b64(private)}\t{b64(public_key(private))}\t51820\t0x1234"
    fields = peer_line.split("\t")
    assert fields[:5] == [b64(peer), b64(psk), "192.0.2.1:51820", "10.0.0.0/24,fd00::/64", "0"]
    assert fields[7] == "25"
    human = wg("show", a.name)
    assert "listening port: 51820" in human and "persistent keepalive: every 25 seconds" in human
    assert wg("show", a.name, "public-key") == b64(public_key(private)) + "\n"

    # change a few things; keepalive off, endpoint IPv6 with a scope
    wg(
        "set", a.name, "fwmark", "0",
        "peer", b64(peer), "persistent-keepalive", "off", "endpoint", "[fe80::1%lo]:7",
        "allowed-ips", "10.9.0.0/16",
    )  # fmt: skip
    assert a.target.fwmark == 0
    assert p.persistent_keepalive == 0
    assert p.endpoint == ("fe80::1%lo", 7)
    assert [str(n) for n in device.allowed_ips.prefixes(p)] == ["10.9.0.0/16"]
    _, peer_line = wg("show", a.name, "dump").splitlines()
    assert peer_line.split("\t")[2:4] == ["[fe80::1%lo]:7", "10.9.0.0/16"]


def test_private_key_reads_back_clamped(serve: Callable[[], Served], tmp_path: Path) -> None:
    a = serve()
    raw = bytes([0xFF]) * 32
    wg("set", a.name, "private-key", key_file(tmp_path, raw))
    assert wg("show", a.name, "private-key") == b64(clamp(raw)) + "\n"
    assert wg("show", a.name, "public-key") == b64(public_key(raw)) + "\n"


def test_remove_a_peer(serve: Callable[[], Served]) -> None:
    a = serve()
    one, two = (
        public_key(generate_private_key(os.urandom)),
        public_key(generate_private_key(os.urandom)),
    )
    wg("set", a.name, "peer", b64(one), "allowed-ips", "10.1.0.0/16", "peer", b64(two))
    assert len(wg("show", a.name, "peers").split()) == 2
    wg("set", a.name, "peer", b64(one), "remove")
    assert wg("show", a.name, "peers").split() == [b64(two)]
    assert len(a.target.device.allowed_ips) == 0


def test_our_private_key_removes_the_peer_with_its_public_key(
    serve: Callable[[], Served], tmp_path: Path
) -> None:
    a = serve()
    peer_private = generate_private_key(os.urandom)
    wg("set", a.name, "peer", b64(public_key(peer_private)), "allowed-ips", "10.0.0.0/8")
    wg("set", a.name, "private-key", key_file(tmp_path, peer_private))
    assert wg("show", a.name, "dump").splitlines() == [
        f"{b64(peer_private)}\t{b64(public_key(peer_private))}\t0\toff"
    ]
    assert not a.target.device.peers


def test_show_of_a_missing_interface_fails(serve: Callable[[], Served]) -> None:
    a = serve()
    missing = a.name[:-1] + "x"
    result = subprocess.run([WG, "show", missing], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    a.close()  # and once its server is gone
    result = subprocess.run([WG, "show", a.name], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


# ------------------------------------------------------------------------------ conf files


def config(private: bytes, peers: list[tuple[bytes, str]], *, port: int = 51820) -> str:
    lines = ["[Interface]", f"PrivateKey = {b64(private)}", f"ListenPort = {port}", "FwMark = 0x20"]
    for key, extra in peers:
        lines += ["", "[Peer]", f"PublicKey = {b64(key)}", extra]
    return "\n".join(lines) + "\n"


def test_setconf_showconf_round_trip(serve: Callable[[], Served], tmp_path: Path) -> None:
    a, b = serve(), serve()
    keys = [public_key(generate_private_key(os.urandom)) for _ in range(3)]
    psk = os.urandom(32)
    text = config(
        generate_private_key(os.urandom),
        [
            (
                keys[0],
                f"PresharedKey = {b64(psk)}\nAllowedIPs = 10.0.0.0/24, fd00::/64\n"
                "Endpoint = 192.0.2.1:51820\nPersistentKeepalive = 25",
            ),
            (keys[1], "AllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = [2001:db8::1]:1234"),
            (keys[2], "AllowedIPs = ::ffff:10.0.0.0/104\nEndpoint = [fe80::1%lo]:51820"),
        ],
    )
    wg("setconf", a.name, conf_file(tmp_path, "a.conf", text))
    shown = wg("showconf", a.name)
    for line in (
        "ListenPort = 51820",
        "FwMark = 0x20",
        f"PresharedKey = {b64(psk)}",
        "AllowedIPs = 10.0.0.0/24, fd00::/64",
        "Endpoint = 192.0.2.1:51820",
        "PersistentKeepalive = 25",
        "AllowedIPs = 0.0.0.0/0, ::/0",
        "Endpoint = [2001:db8::1]:1234",
        "AllowedIPs = ::ffff:10.0.0.0/104",
        "Endpoint = [fe80::1%lo]:51820",
    ):
        assert line in shown.splitlines(), line
    wg("setconf", b.name, conf_file(tmp_path, "b.conf", shown))
    assert wg("showconf", b.name) == shown
    # setconf replaces: peers not in the file go
    wg("setconf", a.name, conf_file(tmp_path, "c.conf", config(b"\x01" * 32, [(keys[1], "")])))
    assert wg("show", a.name, "peers").split() == [b64(keys[1])]
    assert len(a.target.device.allowed_ips) == 0


def test_addconf_adds(serve: Callable[[], Served], tmp_path: Path) -> None:
    a = serve()
    one, two = (
        public_key(generate_private_key(os.urandom)),
        public_key(generate_private_key(os.urandom)),
    )
    private = generate_private_key(os.urandom)
    wg(
        "setconf",
        a.name,
        conf_file(tmp_path, "1", config(private, [(one, "AllowedIPs = 10.1.0.0/16")])),
    )
    wg(
        "addconf",
        a.name,
        conf_file(
            tmp_path,
            "2",
            config(private, [(two, "AllowedIPs = 10.2.0.0/16"), (one, "AllowedIPs = 10.3.0.0/16")]),
        ),
    )
    dump = {
        line.split("\t")[0]: line.split("\t")
        for line in wg("show", a.name, "dump").splitlines()[1:]
    }
    assert dump[b64(one)][3] == "10.3.0.0/16"  # a [Peer] in a file replaces its AllowedIPs
    assert dump[b64(two)][3] == "10.2.0.0/16"


def test_syncconf_keeps_unchanged_peers(serve: Callable[[], Served], tmp_path: Path) -> None:
    a = serve()
    private = generate_private_key(os.urandom)
    one, two, three = (public_key(generate_private_key(os.urandom)) for _ in range(3))
    wg(
        "setconf",
        a.name,
        conf_file(
            tmp_path,
            "1",
            config(private, [(one, "AllowedIPs = 10.1.0.0/16"), (two, "AllowedIPs = 10.2.0.0/16")]),
        ),
    )
    peer_two = a.target.device.peers[two]
    wg(
        "syncconf",
        a.name,
        conf_file(
            tmp_path,
            "2",
            config(
                private,
                [(two, "AllowedIPs = 10.20.0.0/16"), (three, "AllowedIPs = 10.3.0.0/16")],
            ),
        ),
    )
    assert set(a.target.device.peers) == {two, three}
    assert a.target.device.peers[two] is peer_two  # the same peer: its sessions live on
    assert [str(n) for n in a.target.device.allowed_ips.prefixes(peer_two)] == ["10.20.0.0/16"]


# ------------------------------------------------------------------------------ large


def test_large_configurations_through_setconf_and_showconf(
    serve: Callable[[], Served], tmp_path: Path
) -> None:
    a, b = serve(), serve()
    private = generate_private_key(os.urandom)
    big = public_key(generate_private_key(os.urandom))
    prefixes = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32" for i in range(75_000)]
    prefixes += [f"fd00::1:{i >> 16:x}:{i & 0xFFFF:x}/128" for i in range(25_000)]
    text = config(private, [(big, "AllowedIPs = " + ", ".join(prefixes))])
    start = time.perf_counter()
    wg("setconf", a.name, conf_file(tmp_path, "big.conf", text))
    set_time = time.perf_counter() - start
    start = time.perf_counter()
    shown = wg("showconf", a.name)
    show_time = time.perf_counter() - start
    print(f"\nwg setconf 100,000 allowed IPs: {set_time:.2f} s, showconf {show_time:.2f} s")
    allowed = [line for line in shown.splitlines() if line.startswith("AllowedIPs = ")]
    assert allowed == ["AllowedIPs = " + ", ".join(prefixes)]

    peers = [public_key(generate_private_key(os.urandom)) for _ in range(40)]
    text = config(
        private,
        [
            (
                key,
                "AllowedIPs = "
                + ", ".join(
                    [f"10.{n}.{i}.0/24" for i in range(26)]
                    + [f"fd00:{n + 1:x}:{i + 1:x}::/48" for i in range(26)]
                )
                + f"\nEndpoint = 192.0.2.{n + 1}:{51820 + n}",
            )
            for n, key in enumerate(peers)
        ],
    )
    start = time.perf_counter()
    wg("setconf", b.name, conf_file(tmp_path, "forty.conf", text))
    shown = wg("showconf", b.name)
    print(f"wg setconf + showconf 40 x 52: {time.perf_counter() - start:.2f} s")
    assert len(b.target.device.peers) == 40
    assert len(b.target.device.allowed_ips) == 40 * 52
    assert shown.count("[Peer]") == 40
    wg("setconf", a.name, conf_file(tmp_path, "again.conf", shown))
    assert wg("showconf", a.name) == shown


def test_removing_the_socket_is_reported(serve: Callable[[], Served]) -> None:
    a = serve()
    os.unlink(a.path)
    assert a.removed.wait(5)
    assert subprocess.run([WG, "show", a.name], capture_output=True, timeout=30).returncode != 0
