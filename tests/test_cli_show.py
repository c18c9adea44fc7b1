"""`wgpy show` and `wgpy showconf` (and the control-socket client under them), checked against
what `wg show` and `wg showconf` print for the same interfaces.

The formatting and the client are tested in-process against a fake control socket; the root
tests run wireguard-go interfaces in network namespaces of their own (see test_cli_quick.py
for the helpers) and compare the two programs' output byte for byte.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_quick import (
    Netns,
    canonical,
    needs_root,
    new_key,
    public_of,
    unique_name,
    write_conf,
)

from wgpy import keys
from wgpy.cli import Environment, ExitStatus, main
from wgpy.cli import show as show_module
from wgpy.protocol import crypto
from wgpy.uapi import client as uapi_client
from wgpy.uapi import paths
from wgpy.uapi.client import DeviceState, PeerState, UapiError

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
K3 = bytes(range(64, 96))
B = {k: keys.key_to_base64(k) for k in (K1, K2, K3)}


def plain(text: str) -> str:
    return show_module._strip_colors(text)


# ----------------------------------------------------------------------------------------
# Formatting


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "1 minute"),
        (62, "1 minute, 2 seconds"),
        (3600, "1 hour"),
        (86400 + 1, "1 day, 1 second"),
        (2 * 365 * 86400 + 3 * 86400 + 4 * 3600 + 5 * 60 + 6,
         "2 years, 3 days, 4 hours, 5 minutes, 6 seconds"),
        (25, "25 seconds"),
    ],
)  # fmt: skip
def test_pretty_time(seconds: int, text: str) -> None:
    assert show_module.pretty_time(seconds, plain) == text


def test_ago() -> None:
    assert show_module.ago(100, 100, plain) == "Now"
    assert show_module.ago(100, 162, plain) == "1 minute, 2 seconds ago"
    assert show_module.ago(100, 99, plain) == (
        "(System clock wound backward; connection problems may ensue.)"
    )
    assert show_module.ago(100, 99, lambda text: text) == (
        "(\x1b[31mSystem clock wound backward; connection problems may ensue.\x1b[0m)"
    )
    assert show_module.ago(0, 3600, lambda text: text) == "1 \x1b[36mhour\x1b[0m ago"


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1260, "1.23 KiB"),
        (4669, "4.56 KiB"),
        (1024**2 - 1, "1024.00 KiB"),  # as printf("%.2f") rounds it
        (5 * 1024**2, "5.00 MiB"),
        (3 * 1024**3 + 1024**3 // 2, "3.50 GiB"),
        (7 * 1024**4, "7.00 TiB"),
        (2**64 - 1, "16777216.00 TiB"),
    ],
)
def test_human_bytes(count: int, text: str) -> None:
    assert show_module.human_bytes(count, plain) == text


def peer(key: bytes, handshake: int = 0, nsec: int = 0, **kwargs: object) -> PeerState:
    return PeerState(
        key, last_handshake_time_sec=handshake, last_handshake_time_nsec=nsec, **kwargs
    )  # type: ignore[arg-type]


def test_sort_peers_most_recent_handshake_first_then_never() -> None:
    peers = [peer(K1), peer(K2, 100), peer(K3, 200), peer(K1, 200, 5), peer(K2)]
    ordered = show_module.sort_peers(peers)
    assert ordered == [peers[3], peers[2], peers[1], peers[0], peers[4]]


def sample_state() -> DeviceState:
    return DeviceState(
        name="wg0",
        private_key=K1,
        public_key=K2,
        listen_port=51820,
        fwmark=0xCA6C,
        peers=[
            PeerState(
                public_key=K2,
                endpoint="[2001:db8::1]:51820",
                allowed_ips=[ipaddress.ip_network("::/0")],
                persistent_keepalive_interval=25,
            ),
            PeerState(
                public_key=K3,
                preshared_key=K1,
                endpoint="192.0.2.1:51820",
                allowed_ips=[
                    ipaddress.ip_network("10.0.0.0/24"),
                    ipaddress.ip_network("::ffff:1.2.3.4/128"),
                ],
                last_handshake_time_sec=1000,
                last_handshake_time_nsec=5,
                rx_bytes=1260,
                tx_bytes=4669,
            ),
        ],
    )


def test_pretty() -> None:
    assert show_module.pretty(sample_state(), now=1062) == (
        "interface: wg0\n"
        f"  public key: {B[K2]}\n"
        "  private key: (hidden)\n"
        "  listening port: 51820\n"
        "  fwmark: 0xca6c\n"
        "\n"
        f"peer: {B[K3]}\n"
        "  preshared key: (hidden)\n"
        "  endpoint: 192.0.2.1:51820\n"
        "  allowed ips: 10.0.0.0/24, ::ffff:1.2.3.4/128\n"
        "  latest handshake: 1 minute, 2 seconds ago\n"
        "  transfer: 1.23 KiB received, 4.56 KiB sent\n"
        "\n"
        f"peer: {B[K2]}\n"
        "  endpoint: [2001:db8::1]:51820\n"
        "  allowed ips: ::/0\n"
        "  persistent keepalive: every 25 seconds\n"
    )


def test_pretty_with_keys_and_colors() -> None:
    state = DeviceState(
        "wg1", private_key=K1, public_key=K2, peers=[PeerState(K3, preshared_key=K2)]
    )
    text = show_module.pretty(state, now=0, color=True, show_keys=True)
    assert text == (
        "\x1b[0m"
        "\x1b[32m\x1b[1minterface\x1b[0m: \x1b[32mwg1\x1b[0m\n"
        f"  \x1b[1mpublic key\x1b[0m: {B[K2]}\n"
        f"  \x1b[1mprivate key\x1b[0m: {B[K1]}\n"
        "\n"
        f"\x1b[33m\x1b[1mpeer\x1b[0m: \x1b[33m{B[K3]}\x1b[0m\n"
        f"  \x1b[1mpreshared key\x1b[0m: {B[K2]}\n"
        "  \x1b[1mallowed ips\x1b[0m: (none)\n"
    )


def test_pretty_of_a_bare_device() -> None:
    assert show_module.pretty(DeviceState("wg2"), now=0) == "interface: wg2\n"


def test_dump_and_fields() -> None:
    state = sample_state()
    assert show_module.dump(state, with_interface=False) == (
        f"{B[K1]}\t{B[K2]}\t51820\t0xca6c\n"
        f"{B[K2]}\t(none)\t[2001:db8::1]:51820\t::/0\t0\t0\t0\t25\n"
        f"{B[K3]}\t{B[K1]}\t192.0.2.1:51820\t10.0.0.0/24,::ffff:1.2.3.4/128\t1000\t1260\t4669\toff\n"
    )
    assert show_module.ugly(state, "allowed-ips", with_interface=True) == (
        f"wg0\t{B[K2]}\t::/0\nwg0\t{B[K3]}\t10.0.0.0/24 ::ffff:1.2.3.4/128\n"
    )
    assert show_module.ugly(state, "fwmark", with_interface=False) == "0xca6c\n"
    assert show_module.ugly(DeviceState("x"), "fwmark", with_interface=False) == "off\n"
    assert show_module.ugly(DeviceState("x"), "private-key", with_interface=False) == "(none)\n"
    assert show_module.ugly(state, "persistent-keepalive", with_interface=False) == (
        f"{B[K2]}\t25\n{B[K3]}\toff\n"
    )
    assert show_module.ugly(state, "endpoints", with_interface=False) == (
        f"{B[K2]}\t[2001:db8::1]:51820\n{B[K3]}\t192.0.2.1:51820\n"
    )


def test_showconf() -> None:
    assert show_module.showconf(sample_state()) == (
        "[Interface]\n"
        "ListenPort = 51820\n"
        "FwMark = 0xca6c\n"
        f"PrivateKey = {B[K1]}\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {B[K2]}\n"
        "AllowedIPs = ::/0\n"
        "Endpoint = [2001:db8::1]:51820\n"
        "PersistentKeepalive = 25\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {B[K3]}\n"
        f"PresharedKey = {B[K1]}\n"
        "AllowedIPs = 10.0.0.0/24, ::ffff:1.2.3.4/128\n"
        "Endpoint = 192.0.2.1:51820\n"
    )
    assert show_module.showconf(DeviceState("x")) == "[Interface]\n\n"


# ----------------------------------------------------------------------------------------
# The control-socket client, against a fake daemon


class FakeDaemon:
    """Serves NAME.sock in a directory: answers each request with the next canned reply."""

    def __init__(self, directory: Path, name: str, replies: list[bytes]) -> None:
        self.path = directory / f"{name}.sock"
        self.replies = replies
        self.requests: list[bytes] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue  # only a check that someone serves the socket
                self.requests.append(data)
                conn.sendall(self.replies.pop(0))

    def close(self) -> None:
        self.server.close()
        self.thread.join(2)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "run"
    directory.mkdir()
    monkeypatch.setattr(paths, "SOCKET_DIR", directory)
    yield directory


GET_REPLY = (
    f"private_key={K1.hex()}\n"
    "listen_port=51820\n"
    "fwmark=0\n"
    f"public_key={K2.hex()}\n"
    f"preshared_key={'0' * 64}\n"
    "protocol_version=1\n"
    "endpoint=[::ffff:192.0.2.1]:51820\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=10\n"
    "rx_bytes=20\n"
    "persistent_keepalive_interval=0\n"
    "allowed_ip=10.0.0.0/24\n"
    f"public_key={K3.hex()}\n"
    f"preshared_key={K1.hex()}\n"
    "endpoint=192.0.2.9:7\n"
    "allowed_ip=::102:304/128\n"
    "some_future_key=1\n"
    "errno=0\n\n"
).encode()


def test_uapi_get(run_dir: Path) -> None:
    daemon = FakeDaemon(run_dir, "wgf0", [GET_REPLY])
    try:
        state = uapi_client.uapi_get("wgf0")
    finally:
        daemon.close()
    assert daemon.requests == [b"get=1\n\n"]
    assert state == DeviceState(
        name="wgf0",
        private_key=K1,
        public_key=crypto.public_key(K1),
        listen_port=51820,
        fwmark=0,
        peers=[
            PeerState(
                public_key=K2,
                endpoint="[::ffff:192.0.2.1]:51820",
                allowed_ips=[ipaddress.ip_network("10.0.0.0/24")],
                rx_bytes=20,
                tx_bytes=10,
                protocol_version=1,
            ),
            PeerState(
                public_key=K3,
                preshared_key=K1,
                endpoint="192.0.2.9:7",
                allowed_ips=[ipaddress.ip_network("::1.2.3.4/128")],
            ),
        ],
    )


def test_uapi_set_and_errno(run_dir: Path) -> None:
    daemon = FakeDaemon(run_dir, "wgf1", [b"errno=0\n\n", b"errno=-98\n\n", b"errno=22\n\n"])
    try:
        uapi_client.uapi_set("wgf1", "set=1\nlisten_port=1\n")
        with pytest.raises(UapiError) as info:
            uapi_client.uapi_set("wgf1", "set=1\nlisten_port=2\n\n")
        assert info.value.errno == errno.EADDRINUSE
        assert info.value.message == (
            "the WireGuard interface `wgf1' refused to change its configuration: "
            "Address already in use"
        )
        with pytest.raises(UapiError) as info:
            uapi_client.uapi_set("wgf1", "set=1\nbogus=1\n\n")
        assert info.value.errno == errno.EINVAL
    finally:
        daemon.close()
    assert daemon.requests == [
        b"set=1\nlisten_port=1\n\n",
        b"set=1\nlisten_port=2\n\n",
        b"set=1\nbogus=1\n\n",
    ]


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"errno=0\n",
        b"listen_port=1\n\n",
        b"private_key=zz\nerrno=0\n\n",
        b"listen_port=70000\nerrno=0\n\n",
        b"garbage\nerrno=0\n\n",
        f"public_key={K2.hex()}\nallowed_ip=10.0.0.0/40\nerrno=0\n\n".encode(),
        f"public_key={K2.hex()}\nendpoint=nohost\nerrno=0\n\n".encode(),
        b"errno=-5\n\n",
    ],
)
def test_uapi_get_rejects_bad_replies(run_dir: Path, reply: bytes) -> None:
    daemon = FakeDaemon(run_dir, "wgf2", [reply])
    try:
        with pytest.raises(UapiError):
            uapi_client.uapi_get("wgf2")
    finally:
        daemon.close()


def test_missing_and_stale_sockets(run_dir: Path) -> None:
    with pytest.raises(UapiError) as info:
        uapi_client.uapi_get("wgf3")
    assert info.value.errno == errno.ENODEV
    assert info.value.message == (
        f"there is no WireGuard interface named `wgf3' (no control socket {run_dir}/wgf3.sock)"
    )
    # A socket nobody serves any more is removed, as wg does.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run_dir / "wgf4.sock"))
    stale.close()
    (run_dir / "wgf5.sock").write_text("not a socket")
    live = FakeDaemon(run_dir, "wgf6", [GET_REPLY])
    try:
        assert uapi_client.list_interfaces() == ["wgf6"]
        assert not (run_dir / "wgf4.sock").exists()
        with pytest.raises(UapiError, match="is not a socket"):
            uapi_client.uapi_get("wgf5")
        assert not uapi_client.has_interface("../x")
    finally:
        live.close()


def run_main(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    environment = Environment(stdin=io.BytesIO(), stdout=stdout, stderr=stderr, env=env or {})
    status = main(list(argv), environment)
    return status, stdout.getvalue(), stderr.getvalue()


def test_show_command_in_process(run_dir: Path) -> None:
    daemon = FakeDaemon(run_dir, "wgf7", [GET_REPLY] * 4)
    try:
        status, out, err = run_main("show", "wgf7")
        assert (status, err) == (0, "")
        assert out.startswith("interface: wgf7\n")
        assert "  transfer: 20 B received, 10 B sent\n" in out
        assert run_main("show", "interfaces") == (0, "wgf7\n", "")
        status, out, _ = run_main("show", "all", "listen-port")
        assert (status, out) == (0, "wgf7\t51820\n")
        status, out, _ = run_main("showconf", "wgf7")
        assert out.startswith("[Interface]\nListenPort = 51820\nPrivateKey = ")
        status, out, _ = run_main("show", "wgf7", "private-key")
        assert (status, out) == (0, B[K1] + "\n")
    finally:
        daemon.close()
    assert run_main("show", "interfaces") == (0, "", "")
    assert run_main("show") == (0, "", "")


def test_missing_interface_is_one_sentence(run_dir: Path) -> None:
    sentence = (
        "cannot access interface nowg: there is no WireGuard interface named `nowg' "
        f"(no control socket {run_dir}/nowg.sock)\n"
    )
    assert run_main("show", "nowg") == (ExitStatus.ERROR, "", f"wgpy show: {sentence}")
    assert run_main("showconf", "nowg") == (ExitStatus.ERROR, "", f"wgpy showconf: {sentence}")


def test_usage_errors(run_dir: Path) -> None:
    status, _, err = run_main("show", "wg0", "bogus")
    assert status == ExitStatus.USAGE and "invalid choice" in err
    status, _, err = run_main("show", "interfaces", "peers")
    assert (status, err) == (ExitStatus.USAGE, "wgpy show: `show interfaces' takes no FIELD\n")


# ----------------------------------------------------------------------------------------
# Against `wg`, on real interfaces


FIELDS = show_module.FIELDS


def same_output(ns: Netns, *argv: str, env: dict[str, str] | None = None, tries: int = 5) -> str:
    """Run `wgpy ARGV` and `wg ARGV` until they print the same, but for the order of peers
    that wireguard-go itself changes (see canonical), as a second may tick between them;
    return what `wg` printed."""
    for attempt in range(tries):
        if attempt:  # start again just after a second ticks: both then read the same second
            time.sleep(1.02 - time.time() % 1)
        ours = ns.wgpy(*argv, env=env)
        theirs = ns.run("wg", *argv, env=env)
        if (canonical(ours.stdout), ours.returncode) == (
            canonical(theirs.stdout),
            theirs.returncode,
        ):
            assert theirs.returncode == 0, theirs.stderr
            return theirs.stdout
    assert canonical(ours.stdout) == canonical(theirs.stdout), argv
    assert ours.returncode == theirs.returncode
    return ours.stdout


def section_of(shown: str, name: str) -> str:
    """One interface's part of `show all` (interfaces and peers are separated alike)."""
    section: list[str] = []
    for block in shown.rstrip("\n").split("\n\n"):
        if block.startswith("interface: "):
            if section:
                break
            if block.startswith(f"interface: {name}\n"):
                section.append(block)
        elif section:
            section.append(block)
    return "\n\n".join(section) + "\n"


@pytest.fixture
def quiet_interface(tmp_path: Path) -> Iterator[tuple[Netns, str]]:
    """A wireguard-go interface configured with `wg setconf` and left down, so that no
    handshake and no packet changes what it shows: three peers, all kinds of values."""
    ns = Netns()
    name = unique_name("wgs")
    ns.interfaces.add(name)
    try:
        result = ns.run("wireguard-go", name)
        assert result.returncode == 0, result.stderr
        private, psk = new_key(), keys.key_to_base64(os.urandom(32))
        text = (
            f"[Interface]\nPrivateKey = {private}\nListenPort = 51850\nFwMark = 0x1f\n"
            f"[Peer]\nPublicKey = {public_of(new_key())}\nAllowedIPs = 10.0.0.0/24, fd00::/64\n"
            "Endpoint = 192.0.2.1:51820\nPersistentKeepalive = 25\n"
            f"[Peer]\nPublicKey = {public_of(new_key())}\nPresharedKey = {psk}\n"
            "AllowedIPs = ::ffff:1.2.3.4/128, ::102:304/128, 0.0.0.0/0\n"
            "Endpoint = [2001:db8::1]:4500\nPersistentKeepalive = 3725\n"
            f"[Peer]\nPublicKey = {public_of(new_key())}\n"
        )
        path = write_conf(tmp_path, "setconf", text)
        result = ns.run("wg", "setconf", name, str(path))
        assert result.returncode == 0, result.stderr
        yield ns, name
    finally:
        ns.close()


@needs_root
@pytest.mark.root
def test_show_equals_wg_show(quiet_interface: tuple[Netns, str]) -> None:
    ns, name = quiet_interface
    shown = same_output(ns, "show", name)
    assert "  persistent keepalive: every 1 hour, 2 minutes, 5 seconds\n" in shown
    assert "  preshared key: (hidden)\n" in shown
    assert "  allowed ips: ::ffff:1.2.3.4/128, ::1.2.3.4/128, 0.0.0.0/0\n" in shown
    assert "  fwmark: 0x1f\n" in shown
    for field in FIELDS:
        same_output(ns, "show", name, field)
    same_output(ns, "showconf", name)
    same_output(ns, "show", name, env={"WG_HIDE_KEYS": "never"})
    colored = same_output(ns, "show", name, env={"WG_COLOR_MODE": "always"})
    assert "\x1b[" in colored


@needs_root
@pytest.mark.root
def test_show_all_and_interfaces(quiet_interface: tuple[Netns, str]) -> None:
    ns, name = quiet_interface
    # Other interfaces may come and go (the socket directory is shared), so only ours is
    # compared.
    names = ns.wgpy("show", "interfaces").stdout.split()
    assert name in names
    single = canonical(ns.wgpy("show", name).stdout)
    for argv in (["show"], ["show", "all"]):
        everything = ns.wgpy(*argv)
        assert canonical(section_of(everything.stdout, name)) == single, everything.stderr
    dump = ns.wgpy("show", "all", "dump").stdout
    ours = [line for line in dump.splitlines() if line.startswith(f"{name}\t")]
    assert len(ours) == 4
    theirs = [
        line
        for line in ns.wg("show", "all", "dump").stdout.splitlines()
        if line.startswith(f"{name}\t")
    ]
    assert ours[0] == theirs[0]  # the interface, then its peers in any order (see canonical)
    assert sorted(ours) == sorted(theirs)


@needs_root
@pytest.mark.root
def test_missing_interface_on_the_real_system(tmp_path: Path) -> None:
    ns = Netns()
    try:
        name = unique_name("wgm")
        for command in ("show", "showconf"):
            result = ns.wgpy(command, name)
            assert result.returncode == ExitStatus.ERROR
            assert result.stdout == ""
            assert result.stderr == (
                f"wgpy {command}: cannot access interface {name}: there is no WireGuard "
                f"interface named `{name}' (no control socket /var/run/wireguard/{name}.sock)\n"
            )
            assert ns.wg(command, name).returncode == 1
    finally:
        ns.close()


@needs_root
@pytest.mark.root
def test_handshake_and_transfer_as_wg_shows_them(tmp_path: Path) -> None:
    """Two namespaces joined by a veth pair, an interface in each brought up by `wgpy up`:
    after a ping, `latest handshake` and `transfer` lines appear, the peer that had the
    handshake is listed first, and everything is as `wg show` prints it."""
    left, right = Netns(), Netns()
    try:
        veth_l, veth_r = unique_name("vl"), unique_name("vr")
        left.ip(
            "link",
            "add",
            veth_l,
            "type",
            "veth",
            "peer",
            "name",
            veth_r,
            "netns",
            right.name,
            check=True,
        )
        left.ip("address", "add", "192.168.77.1/24", "dev", veth_l, check=True)
        right.ip("address", "add", "192.168.77.2/24", "dev", veth_r, check=True)
        left.ip("link", "set", veth_l, "up", check=True)
        right.ip("link", "set", veth_r, "up", check=True)
        key_l, key_r = new_key(), new_key()
        name_l, name_r = unique_name("wgl"), unique_name("wgr")
        silent = public_of(new_key())
        conf_l = (
            f"[Interface]\nPrivateKey = {key_l}\nListenPort = 51861\nAddress = 10.88.0.1/24\n"
            f"[Peer]\nPublicKey = {silent}\nAllowedIPs = 10.88.1.0/24\n"
            f"[Peer]\nPublicKey = {public_of(key_r)}\nAllowedIPs = 10.88.0.2/32\n"
            "Endpoint = 192.168.77.2:51862\n"
        )
        conf_r = (
            f"[Interface]\nPrivateKey = {key_r}\nListenPort = 51862\nAddress = 10.88.0.2/24\n"
            f"[Peer]\nPublicKey = {public_of(key_l)}\nAllowedIPs = 10.88.0.1/32\n"
        )
        (tmp_path / "l").mkdir(mode=0o700)
        (tmp_path / "r").mkdir(mode=0o700)
        result = left.wgpy("up", write_conf(tmp_path / "l", name_l, conf_l))
        assert result.returncode == 0, result.stderr
        result = right.wgpy("up", write_conf(tmp_path / "r", name_r, conf_r))
        assert result.returncode == 0, result.stderr
        ping = left.run("ping", "-c", "3", "-i", "0.2", "-W", "5", "10.88.0.2")
        assert ping.returncode == 0, ping.stdout + ping.stderr
        time.sleep(1.1)  # "latest handshake: Now" until the next second

        shown = same_output(left, "show", name_l)
        blocks = shown.split("\n\n")
        assert blocks[1].startswith(f"peer: {public_of(key_r)}\n")  # had a handshake: first
        assert "\n  latest handshake: " in blocks[1] and " ago\n" in blocks[1]
        assert "\n  transfer: " in blocks[1] and " received, " in blocks[1]
        assert blocks[2] == f"peer: {silent}\n  allowed ips: 10.88.1.0/24\n"
        same_output(right, "show", name_r)
        for field in ("dump", "latest-handshakes", "transfer", "endpoints"):
            same_output(left, "show", name_l, field)
            same_output(right, "show", name_r, field)
        # The responder learnt its peer's endpoint from the handshake.
        assert same_output(right, "show", name_r, "endpoints").endswith("\t192.168.77.1:51861\n")
    finally:
        left.close()
        right.close()
