"""``wgpy status`` from a state directory whose daemon is not running (the namespace suite in
tests/interop/test_mesh.py checks it against a live node)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from wgpy.cli import Environment, ExitStatus, main
from wgpy.mesh.client.state import Settings, StateDir


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
    assert report["self"] == {"hostname": "laptop", "user": "alice", "ipv4": "100.64.0.1",
                              "ipv6": "fd7a:115c:a1e0::1", "interface": "wgpy0",
                              "server": "https://mesh.example", "running": False}  # fmt: skip
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
