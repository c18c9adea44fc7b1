"""``wgpy netcheck`` in-process: STUN servers on loopback (threads answering as coturn does),
found through the node's coordination server (a FakeServer) with its token, or named with
--stun; and the one-sentence errors. tests/interop/test_nat_coturn.py runs it against coturn."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

from stun_fakes import ThreadStunServer

from wgpy.cli import Environment, ExitStatus, main
from wgpy.mesh.client.state import Settings, StateDir

from .fakes import FakeServer, new_keypair


def run(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(list(argv), Environment(stdin=io.BytesIO(), stdout=stdout, stderr=stderr, env={}))
    return status, stdout.getvalue(), stderr.getvalue()


def node_state(tmp_path: Path, server: FakeServer) -> StateDir:
    _, public = new_keypair()
    node = server.add_node("laptop", public, [])
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.write_settings(Settings(server.url, "wgpy0", 41641, "laptop"))
    state.write_token(node.token)
    return state


def closed_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_netcheck_with_the_node_s_server(tmp_path: Path) -> None:
    with FakeServer() as server, ThreadStunServer() as one, ThreadStunServer("127.0.0.2") as two:
        state = node_state(tmp_path, server)
        refused = closed_tcp_port()
        server.set_nat(
            {
                "stun": [f"{one.key[0]}:{one.key[1]}", f"{two.key[0]}:{two.key[1]}"],
                "turn": [
                    {
                        "urls": [
                            f"turn:127.0.0.1:{one.key[1]}?transport=udp",
                            f"turn:127.0.0.1:{refused}?transport=tcp",
                        ],
                        "username": "1767225600:1",
                        "password": "secret",
                        "expires": 1767225600,
                    }
                ],
                "refresh": 600,
            }
        )
        status, out, err = run("netcheck", "--state-dir", str(state.path), "--timeout", "1")
        assert status == ExitStatus.SUCCESS, err
        lines = out.splitlines()
        assert lines[0] == "Report:"
        assert "  UDP: yes" in lines
        ipv4 = next(line for line in lines if line.startswith("  IPv4: "))
        assert ipv4.startswith("  IPv4: yes, 127.0.0.")
        assert "  Mapping varies by destination: no" in lines
        assert any(line.startswith("  Nearest relay: 127.0.0.1 (") for line in lines)
        relay = next(line for line in lines if line.startswith("    127.0.0.1: "))
        assert relay.startswith("    127.0.0.1: udp ") and " ms, tcp Connection refused" in relay
        assert one.requests == 2 and two.requests == 1  # the relay's STUN, then the servers'
        # JSON, for scripts
        status, out, err = run("netcheck", "--state-dir", str(state.path), "--json")
        assert status == ExitStatus.SUCCESS, err
        report = json.loads(out)
        assert report["udp"] is True and report["mapping_varies_by_dest_ip"] is False
        assert report["ipv4"].startswith("127.0.0.")
        assert report["nearest_relay"] == "127.0.0.1"
        transports = report["relays"][0]["transports"]
        assert [t["transport"] for t in transports] == ["udp", "tcp"]
        assert transports[0]["latency_ms"] > 0 and transports[1]["error"] == "Connection refused"
        auth = [r.authorization for r in server.requests_to("GET", "/api/v1/node/nat")]
        assert auth == [f"Bearer {state.read_token()}"] * 2


def test_netcheck_says_what_the_running_node_measured_of_its_mapping_lifetime(
    tmp_path: Path,
) -> None:
    with ThreadStunServer() as one:
        state = StateDir(tmp_path / "state")
        state.ensure()
        stun = ("--stun", f"127.0.0.1:{one.key[1]}", "--state-dir", str(state.path))
        status, out, err = run("netcheck", *stun, "--timeout", "0.5")
        assert status == ExitStatus.SUCCESS, err
        assert "  Mapping lifetime: unknown (a running node measures it: wgpy up)" in out
        state.write_pid(os.getpid())  # what the node's daemon writes, and then:
        state.write_nat(
            {"mapping_lifetime": 4.0, "mapping_lifetime_below": 6.0, "keepalive": 3.2,
             "measurement_seconds": 7.1, "error": None, "keepalive_source": "measured"}
        )  # fmt: skip
        status, out, err = run("netcheck", *stun, "--timeout", "0.5")
        assert status == ExitStatus.SUCCESS, err
        expected = "  Mapping lifetime: at least 4 s (less than 6 s), keepalive every 3.2 s"
        assert expected in out.splitlines()
        status, out, err = run("netcheck", *stun, "--json")
        assert json.loads(out)["node_nat"]["mapping_lifetime"] == 4.0
        state.write_nat(
            {"mapping_lifetime": None, "keepalive": 2, "keepalive_source": "configured"}
        )
        status, out, err = run("netcheck", *stun, "--timeout", "0.5")
        expected = "  Mapping lifetime: not measured (--nat-keepalive given), keepalive every 2 s"
        assert expected in out.splitlines()


def test_netcheck_with_stun_named_and_a_server_that_does_not_answer(tmp_path: Path) -> None:
    with ThreadStunServer() as one:
        one.silent = 1000
        status, out, err = run("netcheck", "--stun", f"localhost:{one.key[1]}", "--timeout", "0.5")
        assert status == ExitStatus.SUCCESS, err
        assert "  UDP: no (no STUN server answered)" in out.splitlines()
        assert "  IPv4: no (no STUN server answered over IPv4)" in out.splitlines()
        assert "  Nearest relay: none configured" in out.splitlines()
        assert one.requests >= 2  # sent again before giving up


def test_netcheck_errors_are_one_sentence(tmp_path: Path) -> None:
    status, _, err = run("netcheck", "--state-dir", str(tmp_path / "none"))
    assert status == ExitStatus.ERROR
    assert err == (
        f"wgpy netcheck: there is no mesh node in {tmp_path / 'none'} to ask its coordination "
        "server for the STUN servers: give --stun HOST:PORT, or --state-dir of a node\n"
    )
    status, _, err = run("netcheck", "--stun", "stun.invalid:3478")
    assert status == ExitStatus.ERROR and err.startswith("wgpy netcheck: --stun: cannot resolve")
    status, _, err = run("netcheck", "--stun", "127.0.0.1:3478", "--ca-cert", "/nonexistent.pem")
    assert (status, err) == (
        ExitStatus.ERROR,
        "wgpy netcheck: the CA certificate /nonexistent.pem does not exist\n",
    )
    status, _, err = run("netcheck", "--stun", "127.0.0.1:3478", "--timeout", "0")
    assert err == "wgpy netcheck: --timeout must be from 0.1 to 60 seconds\n"
    status, _, err = run("netcheck", "--stun", "3478")
    assert status == ExitStatus.ERROR and err.startswith("wgpy netcheck: --stun: expected")
    with FakeServer() as server:
        state = node_state(tmp_path, server)
        server.set_nat(None)  # an older server
        status, _, err = run("netcheck", "--state-dir", str(state.path))
        assert status == ExitStatus.ERROR
        assert err == (
            f"wgpy netcheck: the coordination server at {server.url} has no STUN servers to "
            "tell (it is older than this wgpy); give --stun HOST:PORT\n"
        )
        server.set_nat({"stun": [], "turn": [], "refresh": 600})
        status, _, err = run("netcheck", "--state-dir", str(state.path))
        assert status == ExitStatus.ERROR and "names no STUN server and no relay" in err
        status, _, err = run(
            "netcheck", "--state-dir", str(state.path), "--login-server", "http://127.0.0.1:9"
        )
        assert status == ExitStatus.ERROR
        assert err.startswith(f"wgpy netcheck: the node token in {state.path} is for {server.url}")
