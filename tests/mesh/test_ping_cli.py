"""``wgpy ping``: the ICMP messages, finding the peer, and its errors (the namespace test in
tests/interop/test_status_ping.py pings a real peer behind a NAT)."""

from __future__ import annotations

import io
import os
import select
import time
from pathlib import Path
from typing import Any

import pytest

from wgpy.cli import Environment, ExitStatus, main
from wgpy.cli import ping as ping_module
from wgpy.cli.environment import CommandError
from wgpy.cli.icmp import EchoSocket, checksum, echo_request, parse_echo_reply
from wgpy.cli.ping import Pinger, find_peer
from wgpy.keys import key_from_base64
from wgpy.mesh.client.state import Settings, StateDir
from wgpy.uapi.client import DeviceState, PeerState


def run(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(list(argv), Environment(stdin=io.BytesIO(), stdout=stdout, stderr=stderr, env={}))
    return status, stdout.getvalue(), stderr.getvalue()


def test_the_echo_request_carries_the_rfc_1071_checksum() -> None:
    # RFC 1071 section 3's example: 0x0001 0xf203 0xf4f5 0xf6f7 sums to 0xddf2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    message = echo_request(4, 0x1234, 7, b"hello")
    assert message[0] == 8 and message[4:8] == bytes.fromhex("12340007")
    assert checksum(message) == 0  # a message with its checksum sums to zero
    assert echo_request(6, 1, 2, b"x")[:4] == bytes([128, 0, 0, 0])  # the kernel's to fill in


def test_only_echo_replies_are_read_and_nothing_else_raises() -> None:
    reply = bytes([0]) + echo_request(4, 5, 9, b"pay")[1:]
    assert parse_echo_reply(4, reply, ip_header=False) == (5, 9, b"pay")
    ip_header = bytes([0x45]) + bytes(19)
    assert parse_echo_reply(4, ip_header + reply, ip_header=True) == (5, 9, b"pay")
    assert parse_echo_reply(4, echo_request(4, 5, 9, b""), ip_header=False) is None  # a request
    assert parse_echo_reply(6, bytes([129, 0, 0, 0, 0, 1, 0, 2]), ip_header=False) == (1, 2, b"")
    for junk in (b"", b"\x00", bytes([0x45]) * 20, bytes([0x4F]) + bytes(30), os.urandom(64)):
        for version in (4, 6):
            parse_echo_reply(version, junk, ip_header=True)
            parse_echo_reply(version, junk, ip_header=False)


def test_an_echo_socket_pings_loopback() -> None:
    sock = EchoSocket("127.0.0.1")
    try:
        sock.send(1234, 1, b"wgpy-test")
        for _ in range(10):
            ready, _, _ = select.select([sock], [], [], 1.0)
            assert ready, "no echo reply from 127.0.0.1"
            reply = sock.receive()
            if reply is not None:
                break
        assert reply is not None and reply[1:] == (1, b"wgpy-test")
    finally:
        sock.close()


PEERS: list[dict[str, Any]] = [
    {"public_key": "AbCdA" + "A" * 38 + "=", "hostname": "b", "addresses": ["100.64.0.2/32",
     "fd7a:115c:a1e0::2/128"]},
    {"public_key": "AbCdB" + "B" * 38 + "=", "hostname": "c", "addresses": ["100.64.0.3/32"]},
    {"public_key": "Zzzz" + "C" * 39 + "=", "hostname": "twin", "addresses": ["100.64.0.4/32"]},
    {"public_key": "Yyyy" + "D" * 39 + "=", "hostname": "twin", "addresses": ["100.64.0.5/32"]},
]  # fmt: skip


def test_a_peer_is_found_by_name_mesh_address_or_key_start() -> None:
    assert find_peer(PEERS, "b") is PEERS[0]
    assert find_peer(PEERS, "100.64.0.3") is PEERS[1]
    assert find_peer(PEERS, "fd7a:115c:a1e0::2") is PEERS[0]
    assert find_peer(PEERS, "AbCdB") is PEERS[1]
    assert find_peer(PEERS, "Yyyy") is PEERS[3]
    errors = {
        "nobody": "this node has no peer called nobody (a hostname, mesh address or public key "
        "start): see `wgpy status`",
        "AbC": "this node has no peer called AbC (a hostname, mesh address or public key "
        "start): see `wgpy status`",  # too short to be a key's start
        "100.64.0.99": "no peer of this node has the mesh address 100.64.0.99: see `wgpy status`",
        "AbCd": "2 peers' public keys start with AbCd: give more of the key",
        "twin": "2 peers are called twin: name one by its mesh address instead",
    }
    for wanted, message in errors.items():
        with pytest.raises(CommandError) as e:
            find_peer(PEERS, wanted)
        assert e.value.message == message


def node_state(tmp_path: Path, *, running: bool) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.write_settings(Settings("https://mesh.example", "wgpyping0", 41641, "laptop"))
    state.write_node({"hostname": "laptop", "user": "alice", "ipv4": "100.64.0.1"})
    state.write_peers(PEERS)
    if running:
        state.write_pid(os.getpid())  # this process stands in for the daemon
    return state


def test_ping_errors_are_one_sentence(tmp_path: Path) -> None:
    status, out, err = run("ping", "b", "--state-dir", str(tmp_path / "none"))
    assert status == ExitStatus.ERROR and out == ""
    assert err == (
        f"wgpy ping: there is no mesh node in {tmp_path / 'none'}: join one with "
        "`wgpy up --login-server URL --auth-key KEY`\n"
    )
    state = node_state(tmp_path, running=False)
    status, _, err = run("ping", "b", "--state-dir", str(state.path))
    assert status == ExitStatus.ERROR
    assert err == "wgpy ping: this mesh node (wgpyping0) is not running: start it with `wgpy up`\n"
    state.write_pid(os.getpid())
    status, _, err = run("ping", "nobody", "--state-dir", str(state.path))
    assert status == ExitStatus.ERROR and err.startswith("wgpy ping: this node has no peer called")
    # its daemon "runs" (this process) but no interface of that name answers
    status, _, err = run("ping", "b", "--state-dir", str(state.path))
    assert status == ExitStatus.ERROR
    assert err == (
        "wgpy ping: this mesh node's interface wgpyping0 does not answer: is it up? "
        "(`wgpy status`)\n"
    )
    status, _, err = run("ping", "b", "-c", "0", "--state-dir", str(state.path))
    assert status == ExitStatus.ERROR and err == "wgpy ping: -c must be at least 1\n"


def test_a_peer_the_policy_does_not_let_us_reach_is_not_pinged(tmp_path: Path) -> None:
    state = node_state(tmp_path, running=True)
    peers = state.read_peers()
    peers[1]["can_reach"] = False
    state.write_peers(peers)
    status, out, err = run("ping", "c", "--state-dir", str(state.path))
    assert status == ExitStatus.ERROR and out == ""
    assert err == (
        "wgpy ping: the policy does not let this node reach c (only answer it): there is "
        "nothing to ping\n"
    )


def test_the_path_of_a_pong_is_the_one_the_node_uses_at_that_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the running node says when a pong arrives: the interface's endpoint for the peer
    (its control socket, the one thing not real here) and the path manager's saved path,
    read again while the two disagree; and why a ping went unanswered."""
    state = node_state(tmp_path, running=True)
    key = PEERS[0]["public_key"]
    endpoint = {"now": "203.0.113.5:41641"}

    def device(name: str) -> DeviceState:
        peer = PeerState(key_from_base64(key), endpoint=endpoint["now"])
        return DeviceState(name, peers=[peer])

    monkeypatch.setattr(ping_module, "uapi_get", device)
    pinger = Pinger(state, "wgpyping0", key)

    def save(path: dict[str, Any] | None) -> None:
        peers = [dict(p) for p in PEERS]
        if path is not None:
            peers[0]["path"] = path
        state.write_peers(peers)

    save({"kind": "direct", "endpoint": "203.0.113.5:41641", "rtt_ms": 0.5})
    assert pinger.path_now() == ("direct", "direct 203.0.113.5:41641")
    save({"kind": "relay", "endpoint": "203.0.113.5:41641", "relay": "relay-fra"})
    assert pinger.path_now() == ("relay", "relay relay-fra")
    # no ICE for this peer: where WireGuard sends (roaming moved it to the pong's source)
    save(None)
    assert pinger.path_now() == ("direct", "direct 203.0.113.5:41641")
    # the interface moved to a new path the node has not saved yet: the saved one is read
    # again until it agrees (here: never, so after a second the saved kind is said)
    save({"kind": "relay", "endpoint": "192.0.2.7:3000", "relay": "relay-fra"})
    started = time.monotonic()
    assert pinger.path_now() == ("relay", "relay relay-fra")
    assert 0.9 < time.monotonic() - started < 3.0
    # why a ping went unanswered
    save({"kind": "none", "endpoint": None, "checks": "running"})
    online = dict(PEERS[0], online=True)
    assert pinger.no_pong_reason(online) == ": no path yet: ICE checks running"
    assert pinger.no_pong_reason(dict(PEERS[0], online=False)) == ": peer offline"
    state.write_control({"state": "unreachable", "since": time.time(), "error": None})
    assert pinger.no_pong_reason(online) == ": the coordination server is unreachable"


NAMED: list[dict[str, Any]] = [
    {"public_key": "N" * 43 + "=", "hostname": "laptop", "user": "alice",
     "name": "laptop.alice.mesh.internal", "addresses": ["100.64.0.7/32"]},
    {"public_key": "M" * 43 + "=", "hostname": "laptop", "user": "bob",
     "name": "laptop.bob.mesh.internal", "addresses": ["100.64.0.8/32"]},
    {"public_key": "L" * 43 + "=", "hostname": "nas", "user": "bob",
     "name": "nas.bob.mesh.internal", "addresses": ["100.64.0.9/32"]},
]  # fmt: skip


def test_a_peer_is_found_by_its_dns_name_as_the_resolver_answers_it() -> None:
    """Full name, HOST.USER, or the short HOST (of two users' hosts, this node's user's)."""
    assert find_peer(NAMED, "laptop.bob.mesh.internal") is NAMED[1]
    assert find_peer(NAMED, "Laptop.Bob.Mesh.Internal.") is NAMED[1]
    assert find_peer(NAMED, "laptop.alice") is NAMED[0]
    assert find_peer(NAMED, "nas") is NAMED[2]
    assert find_peer(NAMED, "laptop", "alice") is NAMED[0]
    assert find_peer(NAMED, "laptop", "bob") is NAMED[1]
    with pytest.raises(CommandError, match="2 peers are called laptop"):
        find_peer(NAMED, "laptop", "carol")
    with pytest.raises(CommandError, match=r"no peer called laptop\.carol"):
        find_peer(NAMED, "laptop.carol")
