"""``wgpy status`` from a state directory whose daemon is not running (the namespace suite in
tests/interop/test_mesh.py checks it against a live node)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from wgpy.cli import Environment, ExitStatus, main
from wgpy.cli import status as status_module
from wgpy.cli.status import dns_line
from wgpy.keys import key_to_base64
from wgpy.mesh.client.state import Settings, StateDir
from wgpy.uapi.client import DeviceState, PeerState


def run(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(list(argv), Environment(stdin=io.BytesIO(), stdout=stdout, stderr=stderr, env={}))
    return status, stdout.getvalue(), stderr.getvalue()


def populated(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.write_settings(Settings("https://mesh.example", "wgpy0", 41641, "laptop"))
    state.write_node({"hostname": "laptop", "user": "alice", "ipv4": "100.64.0.1",
                      "ipv6": "fd7a:115c:a1e0::1"})  # fmt: skip
    state.write_peers(
        [
            {"public_key": "A" * 43 + "=", "hostname": "pi", "user": "alice",
             "addresses": ["100.64.0.10/32", "fd7a:115c:a1e0::a/128"], "online": False,
             "can_reach": True, "reachable_from": True},
            {"public_key": "B" * 43 + "=", "hostname": "nas", "user": "alice",
             "addresses": ["100.64.0.2/32"], "online": True, "can_reach": False,
             "reachable_from": True},
        ]
    )  # fmt: skip
    return state


def test_a_stopped_node_shows_its_saved_peers(tmp_path: Path) -> None:
    state = populated(tmp_path)
    status, out, err = run("status", "--state-dir", str(state.path))
    assert status == ExitStatus.SUCCESS, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["100.64.0.1", "laptop", "alice"]
    assert "this node: wgpy0, stopped (wgpy up to start), server https://mesh.example" in lines[0]
    # sorted by address; what the server and the policy say of each
    assert lines[1].split()[:3] == ["100.64.0.2", "nas", "alice"]
    assert "online; replies only" in lines[1] and "no handshake yet" in lines[1]
    assert lines[2].split()[:3] == ["100.64.0.10", "pi", "alice"]
    assert "offline; no handshake yet" in lines[2]
    status, out, _ = run("status", "--json", "--state-dir", str(state.path))
    report = json.loads(out)
    assert report["self"] == {"hostname": "laptop", "user": "alice", "name": None,
                              "ipv4": "100.64.0.1",
                              "ipv6": "fd7a:115c:a1e0::1", "interface": "wgpy0",
                              "server": "https://mesh.example", "running": False,
                              "control": None, "problem": None, "expires_at": None,
                              "expiry_warning": None, "nat": None, "dns": None,
                              "relay": None, "relay_problem": None,
                              "advertised_routes": [], "approved_routes": [],
                              "routes_awaiting_approval": [],
                              "accept_routes": True}  # fmt: skip
    assert [p["hostname"] for p in report["peers"]] == ["pi", "nas"]
    assert report["peers"][0]["latest_handshake"] is None
    assert oct((state.path / "peers.json").stat().st_mode & 0o777) == "0o600"


def test_no_node_and_a_damaged_peer_list_are_one_sentence_each(tmp_path: Path) -> None:
    status, _, err = run("status", "--state-dir", str(tmp_path / "none"))
    assert status == ExitStatus.ERROR
    assert err == (
        f"wgpy status: there is no mesh node in {tmp_path / 'none'}: join one with "
        "`wgpy up --login-server URL --auth-key KEY`\n"
    )
    state = populated(tmp_path)
    (state.path / "peers.json").write_text("{not json")
    status, _, err = run("status", "--state-dir", str(state.path))
    assert status == ExitStatus.ERROR
    assert err == (
        f"wgpy status: {state.path / 'peers.json'} is damaged; remove it or run `wgpy logout`\n"
    )
    assert state.forget()  # logout forgets the peer list too
    assert not (state.path / "peers.json").exists()


def relay_control(relays: list[dict[str, object]], in_use: str | None) -> dict[str, object]:
    return {
        "state": "connected",
        "since": time.time() - 5,
        "error": None,
        "relay": {
            "in_use": in_use,
            "transport": "tcp" if in_use else None,
            "relayed": "198.51.100.1:50000" if in_use else None,
            "relays": relays,
        },
    }


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    """A state dir whose daemon runs (this process stands in for it) and whose interface
    answers (its control socket is the one thing not real here: the namespace suite in
    tests/interop/test_mesh_life.py runs it for real)."""
    state = populated(tmp_path)
    state.write_pid(os.getpid())
    monkeypatch.setattr(status_module, "uapi_get", lambda name: DeviceState(name))
    return state


def test_a_running_node_says_what_is_wrong_with_the_control_plane(running: StateDir) -> None:
    path = str(running.path)
    now = time.time()
    running.write_control({"state": "connected", "since": now - 5, "error": None})
    status, out, _ = run("status", "--state-dir", path)
    assert status == 0 and f"running (pid {os.getpid()})" in out and "#" not in out
    # the server went away 3 minutes ago
    since = now - 180
    running.write_control(
        {"state": "unreachable", "since": since, "error": "cannot reach it: Connection refused."}
    )
    status, out, _ = run("status", "--state-dir", path)
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    assert (
        f"# the coordination server https://mesh.example has been unreachable since {at}, "
        "3 min ago (cannot reach it: Connection refused); the peers are kept" in out
    )
    report = json.loads(run("status", "--json", "--state-dir", path)[1])
    assert report["self"]["control"]["state"] == "unreachable"
    assert report["self"]["problem"].startswith("the coordination server https://mesh.example")
    # deleted at the server: its token is refused; no peers, and no word of the policy
    running.write_peers([])
    running.write_control(
        {"state": "refused", "since": now - 2, "error": "The node token is not valid."}
    )
    status, out, _ = run("status", "--state-dir", path)
    assert "# the coordination server no longer accepts this node since " in out
    assert "(The node token is not valid): it was deleted there (by an admin" in out
    assert out.endswith("(no peers)\n") and "policy" not in out
    running.write_control({"state": "expired", "since": now - 2, "error": None})
    status, out, _ = run("status", "--state-dir", path)
    assert "# this node has expired at the coordination server since " in out
    # stopped: what the daemon last saw is not shown as if it were now
    running.remove_pid(os.getpid())
    status, out, _ = run("status", "--state-dir", path)
    assert "stopped (wgpy up to start)" in out and "#" not in out


def test_long_names_keep_the_columns(tmp_path: Path) -> None:
    state = populated(tmp_path)
    peers = state.read_peers()
    peers[0]["hostname"] = "a-very-long-hostname-that-goes-on-and-on-for-ever"
    peers[1]["user"] = "someone-with-a-very-long-user-name"
    state.write_peers(peers)
    status, out, _ = run("status", "--state-dir", str(state.path))
    assert status == 0
    lines = out.splitlines()
    # the descriptions start in one column, however long the names
    words = ("this node:", "online;", "offline;")
    assert len({line.index(word) for line, word in zip(lines, words, strict=True)}) == 1, out
    assert max(len(line.split("  ")[0]) for line in lines) <= 15
    assert "a-very-long-hostname-th…" in out and "a-very-long-hostname-that" not in out
    assert "someone-with-a-…" in out
    report = json.loads(run("status", "--json", "--state-dir", str(state.path))[1])
    assert report["peers"][0]["hostname"] == "a-very-long-hostname-that-goes-on-and-on-for-ever"


def test_each_peer_says_its_path_its_latency_or_why_it_has_none(
    running: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path the node's path manager saved (tests/interop/test_status_ping.py has a real
    one): direct with its address and round-trip time, the relay by name, no path yet
    (checks running) or none found, and a peer without ICE at WireGuard's endpoint."""
    now = time.time()
    keys = {name: bytes([n]) * 32 for n, name in enumerate(("a", "b", "c", "d", "e"), 1)}
    peers = []
    for n, (name, key) in enumerate(keys.items(), 1):
        peers.append({"public_key": key_to_base64(key), "hostname": name, "user": "alice",
                      "addresses": [f"100.64.0.{n + 1}/32"], "online": name != "e",
                      "can_reach": True, "reachable_from": True})  # fmt: skip
    peers[0]["path"] = {"kind": "direct", "endpoint": "203.0.113.5:41641", "rtt_ms": 0.612,
                        "checks": "done"}  # fmt: skip
    peers[1]["path"] = {"kind": "relay", "endpoint": "192.0.2.9:50000", "relay": "relay-fra",
                        "rtt_ms": 12.25, "checks": "failed"}  # fmt: skip
    peers[2]["path"] = {"kind": "none", "endpoint": None, "rtt_ms": None, "checks": "running"}
    peers[3]["path"] = {"kind": "none", "endpoint": None, "rtt_ms": None, "checks": "failed"}
    running.write_peers(peers)
    live = [
        PeerState(keys["a"], endpoint="203.0.113.5:41641", last_handshake_time_sec=int(now) - 3,
                  rx_bytes=2048, tx_bytes=100),
        PeerState(keys["b"], endpoint="192.0.2.9:50000", last_handshake_time_sec=int(now) - 7),
        PeerState(keys["c"]),
        PeerState(keys["d"]),
        PeerState(keys["e"], endpoint="198.51.100.7:41641", last_handshake_time_sec=int(now)),
    ]  # fmt: skip
    monkeypatch.setattr(status_module, "uapi_get", lambda name: DeviceState(name, peers=live))
    monkeypatch.setattr(time, "time", lambda: now)  # no second ticks between here and there
    status, out, err = run("status", "--state-dir", str(running.path))
    assert status == ExitStatus.SUCCESS, err
    lines = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert (
        "online; direct 203.0.113.5:41641, 0.6 ms; handshake 3 s ago; rx 2.0 KiB, tx 100 B"
        in (lines["a"])
    )
    assert "online; relay relay-fra, 12.2 ms; handshake 7 s ago" in lines["b"]
    assert "online; no path yet: ICE checks running; no handshake yet" in lines["c"]
    assert "online; no path: ICE checks found none (retrying about every 30 s)" in lines["d"]
    # no ICE for this peer (an old node): WireGuard's own endpoint, as before
    assert "offline; direct 198.51.100.7:41641; handshake 0 s ago" in lines["e"]
    report = json.loads(run("status", "--json", "--state-dir", str(running.path))[1])
    rows = {p["hostname"]: p for p in report["peers"]}
    assert rows["a"]["path"] == {"kind": "direct", "endpoint": "203.0.113.5:41641",
                                 "relay": None, "rtt_ms": 0.612, "checks": "done"}  # fmt: skip
    assert rows["a"]["problem"] is None and rows["b"]["path"]["relay"] == "relay-fra"
    assert rows["c"]["problem"] == "no path yet: ICE checks running"
    assert rows["d"]["problem"].startswith("no path: ICE checks found none")
    assert rows["e"]["path"] is None
    assert rows["e"]["problem"] == "peer offline: the coordination server has not heard from it"
    # a damaged path entry is no path, not a traceback
    peers[0]["path"] = {"kind": "sideways", "rtt_ms": "fast"}
    peers[1]["path"] = {"kind": "direct", "endpoint": 5, "rtt_ms": True}
    running.write_peers(peers)
    status, out, _ = run("status", "--state-dir", str(running.path))
    assert status == 0 and "direct 203.0.113.5:41641" in out and "direct 192.0.2.9:50000;" in out


def test_a_stopped_node_shows_no_path_it_saved_while_it_ran(tmp_path: Path) -> None:
    state = populated(tmp_path)
    peers = state.read_peers()
    peers[1]["path"] = {"kind": "direct", "endpoint": "203.0.113.5:41641", "rtt_ms": 0.6}
    state.write_peers(peers)
    status, out, _ = run("status", "--state-dir", str(state.path))
    assert status == 0 and "203.0.113.5" not in out and "ms" not in out
    report = json.loads(run("status", "--json", "--state-dir", str(state.path))[1])
    assert [p["path"] for p in report["peers"]] == [None, None]


def test_a_relay_that_does_not_answer_is_said(running: StateDir) -> None:
    path = str(running.path)
    up = {"name": "relay1.example", "reachable": True, "error": None}
    down = {"name": "relay2.example", "reachable": False,
            "error": "turn:relay2.example:3478?transport=udp: no answer in time"}  # fmt: skip
    # all relays answer: nothing to say; --json has the one in use and its transport
    running.write_control(relay_control([up, {**up, "name": "relay2.example"}], "relay1.example"))
    status, out, _ = run("status", "--state-dir", path)
    assert status == 0 and "#" not in out, out
    report = json.loads(run("status", "--json", "--state-dir", path)[1])["self"]
    assert report["relay"]["in_use"] == "relay1.example"
    assert report["relay"]["transport"] == "tcp" and report["relay_problem"] is None
    # one of two does not answer: named, with why in words, and which one is used instead
    running.write_control(relay_control([up, down], "relay1.example"))
    status, out, _ = run("status", "--state-dir", path)
    assert (
        "# relay relay2.example does not answer over UDP (no answer in time); "
        "using relay1.example\n"
    ) in out
    # none answers: peers without a direct path cannot be reached; one line per relay
    running.write_control(relay_control([{**up, "reachable": False, "error": "it stopped "
                                          "answering"}, down], None))  # fmt: skip
    status, out, _ = run("status", "--state-dir", path)
    assert (
        "# no relay answers, so peers without a direct path cannot be reached "
        "(the node keeps trying)\n"
        "# relay relay1.example does not answer (it stopped answering)\n"
        "# relay relay2.example does not answer over UDP (no answer in time)\n"
    ) in out
    report = json.loads(run("status", "--json", "--state-dir", path)[1])["self"]
    assert report["relay"]["in_use"] is None
    assert [r["reachable"] for r in report["relay"]["relays"]] == [False, False]
    assert report["relay_problem"].startswith("no relay answers, so peers without")
    assert report["relay_problem"].endswith("relay2.example does not answer over UDP "
                                            "(no answer in time)")  # fmt: skip
    # not tried yet (reachable null), or a damaged entry: nothing said, nothing raised
    running.write_control(relay_control([{**up, "reachable": None}, {"name": 5}], None))
    status, out, _ = run("status", "--state-dir", path)
    assert status == 0 and "#" not in out
    running.write_control({"state": "connected", "since": time.time(), "relay": "garbage"})
    report = json.loads(run("status", "--json", "--state-dir", path)[1])["self"]
    assert report["relay"] is None and report["relay_problem"] is None


def test_a_relay_error_is_said_in_words_per_transport_and_raw_in_json(running: StateDir) -> None:
    """Each URL's socket error (as wgpy.nat.relay's status lists them) becomes words: one
    sentence per relay, its transports together when they failed alike."""
    path = str(running.path)
    refused = "[Errno 111] Connect call failed ('203.0.113.3', 3478)"
    dead = {
        "name": "203.0.113.3",
        "reachable": False,
        "error": f"turn:203.0.113.3:3478?transport=udp: {refused}",
        "urls": [
            {
                "url": "turn:203.0.113.3:3478?transport=udp",
                "transport": "udp",
                "error": "[Errno 111] Connection refused",
            },
            {"url": "turn:203.0.113.3:3478?transport=tcp", "transport": "tcp", "error": refused},
            {
                "url": "turns:203.0.113.3:443?transport=tcp",
                "transport": "tls",
                "error": "[Errno 111] Connect call failed ('203.0.113.3', 443)",
            },
        ],
    }
    mixed = {
        "name": "relay.example",
        "reachable": False,
        "error": "...",
        "urls": [
            {
                "url": "turn:relay.example:3478?transport=udp",
                "transport": "udp",
                "error": "no answer in time",
            },
            {
                "url": "turns:relay.example:443?transport=tcp",
                "transport": "tls",
                "error": "its TLS certificate is not trusted (self-signed certificate)",
            },
        ],
    }
    creds = {
        "name": "relay3.example",
        "reachable": False,
        "error": "turn:relay3.example:3478?transport=udp: it refused the allocation "
        "(401 Unauthorized)",
    }
    odd = {
        "name": "relay4.example",
        "reachable": False,
        "error": "turn:relay4.example:3478?transport=tcp: [Errno 113] No route to host",
    }
    weird = {"name": "relay5.example", "reachable": False,
             "urls": [{"url": "turn:relay5.example:3478?transport=udp", "transport": "udp",
                       "error": "[Errno 90] Message too long"}]}  # fmt: skip
    running.write_control(relay_control([dead, mixed, creds, odd, weird], None))
    status, out, _ = run("status", "--state-dir", path)
    assert status == 0
    lines = [line for line in out.splitlines() if line.startswith("# relay ")]
    assert lines == [
        "# relay 203.0.113.3 does not answer over UDP, TCP or TLS (connection refused)",
        "# relay relay.example does not answer over UDP or TLS (UDP: no answer in time; "
        "TLS: its TLS certificate is not trusted)",
        "# relay relay3.example does not answer over UDP (it refused this node's credentials)",
        "# relay relay4.example does not answer over TCP (no route to host)",
        "# relay relay5.example does not answer over UDP (Message too long)",
    ], out
    assert "Errno" not in out
    # --json keeps the raw errors
    report = json.loads(run("status", "--json", "--state-dir", path)[1])["self"]
    assert report["relay"]["relays"][0]["error"].endswith(refused)
    assert report["relay_problem"].startswith("no relay answers, so ")


def test_the_nat_line_says_the_mapping_lifetime_keepalive_and_drops(running: StateDir) -> None:
    """nat.json as the node writes it (wgpy.nat.lifetime.Lifetime.to_json, and the STUN
    demultiplexer's drops): one line, the drops only when there are some."""
    path = str(running.path)
    running.write_control({"state": "connected", "since": time.time(), "error": None})
    measured = {"mapping_lifetime": 4.0, "mapping_lifetime_below": 6.0, "keepalive": 3.2,
                "measurement_seconds": 10.0, "error": None, "keepalive_source": "measured",
                "drops": {"malformed": 0}}  # fmt: skip
    running.write_nat(measured)
    status, out, _ = run("status", "--state-dir", path)
    assert status == 0
    notes = [line for line in out.splitlines() if line.startswith("#")]
    assert notes == ["# NAT: mappings last at least 4 s (less than 6 s); keepalive every 3.2 s"]
    running.write_nat({**measured, "mapping_lifetime_below": None,
                       "drops": {"malformed": 12, "bad-integrity": 3, "not-stun": 0,
                                 "something-new": 1, "garbage": "x"}})  # fmt: skip
    notes = [line for line in run("status", "--state-dir", path)[1].splitlines() if "#" in line]
    assert notes == [
        "# NAT: mappings last at least 4 s; keepalive every 3.2 s",
        "# dropped on the WireGuard port: 12 malformed STUN, 3 bad integrity, 1 something new",
    ]
    report = json.loads(run("status", "--json", "--state-dir", path)[1])["self"]
    assert report["nat"]["drops"]["malformed"] == 12
    running.write_nat({"mapping_lifetime": None, "mapping_lifetime_below": None,
                       "keepalive": 25, "measurement_seconds": 0.0, "error": None,
                       "keepalive_source": "measuring"})  # fmt: skip
    out = run("status", "--state-dir", path)[1]
    assert "# NAT: measuring how long mappings last; keepalive every 25 s\n" in out
    running.write_nat({"mapping_lifetime": None, "keepalive": 25, "keepalive_source": "default",
                       "error": "no STUN answer."})  # fmt: skip
    out = run("status", "--state-dir", path)[1]
    assert "# NAT: mapping lifetime not measured (no STUN answer); keepalive every 25 s\n" in out
    # a stopped node: not said (history, not now)
    running.remove_pid(os.getpid())
    assert "NAT" not in run("status", "--state-dir", path)[1]


def test_key_expiry_is_warned_about_in_its_last_week(tmp_path: Path) -> None:
    state = populated(tmp_path)
    node = state.read_node()
    assert node is not None
    path = str(state.path)
    now = time.time()
    for expires_at, says in (
        (None, None),
        (now + 30 * 86400, None),
        (now + 5 * 86400 + 60, "(in 5 days): then its peers are removed until it logs in again"),
        (now + 3 * 3600 + 60, "(in 3 h)"),
        (now - 60, "expired on"),
    ):
        iso = None
        if expires_at is not None:
            iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(expires_at))
        state.write_node({**node, "expires_at": iso})
        status, out, _ = run("status", "--state-dir", path)
        report = json.loads(run("status", "--json", "--state-dir", path)[1])["self"]
        assert status == ExitStatus.SUCCESS and report["expires_at"] == iso
        if says is None:
            assert "#" not in out and report["expiry_warning"] is None
        else:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires_at))
            assert "# this node's key expire" in out and when in out and says in out
            assert says in report["expiry_warning"]
    assert status_module.expiry_warning("not a time", now) is None


def test_json_gives_the_names_the_map_gave(tmp_path: Path) -> None:
    state = populated(tmp_path)
    node = state.read_node()
    assert node is not None
    state.write_node({**node, "name": "laptop.alice.mesh.internal"})
    peers = state.read_peers()
    peers[0]["name"] = "pi.alice.mesh.internal"
    state.write_peers(peers)
    status, out, err = run("status", "--json", "--state-dir", str(state.path))
    assert status == ExitStatus.SUCCESS, err
    report = json.loads(out)
    assert report["self"]["name"] == "laptop.alice.mesh.internal"
    assert {p["hostname"]: p["name"] for p in report["peers"]} == {
        "pi": "pi.alice.mesh.internal",
        "nas": None,  # no name saved (a server before names)
    }


def test_the_table_has_each_dns_name(tmp_path: Path) -> None:
    state = populated(tmp_path)
    state.write_node({"hostname": "laptop", "user": "alice", "ipv4": "100.64.0.1",
                      "name": "laptop.alice.mesh.internal"})  # fmt: skip
    peers = state.read_peers()
    peers[1]["name"] = "nas.alice.mesh.internal"  # pi has none (a server before names)
    state.write_peers(peers)
    status, out, err = run("status", "--state-dir", str(state.path))
    assert status == ExitStatus.SUCCESS, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["100.64.0.1", "laptop", "alice", "laptop.alice.mesh.internal"]
    assert lines[1].split()[:4] == ["100.64.0.2", "nas", "alice", "nas.alice.mesh.internal"]
    assert lines[2].split()[:4] == ["100.64.0.10", "pi", "alice", "-"]
    # from a server without names, no column for them
    state.write_node({"hostname": "laptop", "user": "alice", "ipv4": "100.64.0.1"})
    state.write_peers([{k: v for k, v in p.items() if k != "name"} for p in peers])
    _, out, _ = run("status", "--state-dir", str(state.path))
    assert out.splitlines()[1].split()[:4] == ["100.64.0.2", "nas", "alice", "online;"]


def test_the_resolver_in_one_line() -> None:
    dns = {"listening": ["100.100.100.100", "100.64.0.1"], "base_domain": "mesh.internal",
           "split_domains": {}, "accept_dns": True, "host": "direct"}  # fmt: skip
    assert dns_line(dns) == (
        "DNS: names under mesh.internal answered at 100.100.100.100; /etc/resolv.conf sends "
        "every name here"
    )
    split = {**dns, "split_domains": {"corp.example": ["10.1.0.53"]}, "host": "resolved"}
    assert dns_line(split) == (
        "DNS: names under mesh.internal answered at 100.100.100.100 (also corp.example, "
        "forwarded); systemd-resolved sends them here (split DNS)"
    )
    assert dns_line({**dns, "accept_dns": False, "host": None}) == (
        "DNS: names under mesh.internal answered at 100.100.100.100; the host's DNS left alone "
        "(--accept-dns=false)"
    )
    assert dns_line({**dns, "host": None}).endswith("the host's DNS not changed (see the log)")
    assert dns_line({**dns, "listening": []}) == (
        "DNS: the node's resolver listens nowhere (see the log)"
    )
    assert dns_line(None) is None and dns_line({"listening": "x"}) is None
    assert dns_line({**dns, "exit_node_resolver": "100.64.0.9"}) == (
        "DNS: names under mesh.internal answered at 100.100.100.100, other names by the exit "
        "node's resolver at 100.64.0.9; /etc/resolv.conf sends every name here"
    )


def test_routes_of_peers_and_those_of_this_node_awaiting_approval(tmp_path: Path) -> None:
    state = populated(tmp_path)
    node = state.read_node()
    assert node is not None
    state.write_node(
        {
            **node,
            "advertised_routes": ["10.1.0.0/16", "192.168.1.0/24"],
            "approved_routes": ["192.168.1.0/24"],
        }
    )
    peers = state.read_peers()
    peers[1]["routes"] = ["192.168.9.0/24"]
    state.write_peers(peers)
    status, out, err = run("status", "--state-dir", str(state.path))
    assert status == ExitStatus.SUCCESS, err
    assert "routes 192.168.9.0/24" in next(line for line in out.splitlines() if " nas " in line)
    assert "# routes advertised and approved: 192.168.1.0/24\n" in out
    assert "# routes awaiting approval: 10.1.0.0/16 (an admin approves them with" in out
    status, out, err = run("status", "--json", "--state-dir", str(state.path))
    report = json.loads(out)
    assert report["self"]["routes_awaiting_approval"] == ["10.1.0.0/16"]
    assert {p["hostname"]: p["routes"] for p in report["peers"]} == {
        "pi": [],
        "nas": ["192.168.9.0/24"],
    }
    # a node that refuses routes says the peer's are not used
    state.write_settings(
        Settings("https://mesh.example", "wgpy0", 41641, "laptop", accept_routes=False)
    )
    status, out, err = run("status", "--state-dir", str(state.path))
    assert "routes 192.168.9.0/24 (not used: --accept-routes=false)" in out
