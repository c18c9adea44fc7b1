"""Machine certificates end to end in namespaces: `wgpy admin ca init`, `wgpy server
--machine-ca`, `wgpy admin machines issue`, a policy that requires a machine certificate of
user alice's nodes, and nodes joining with `wgpy up --login-server`: one with
`--machine-cert/--machine-key` joins; one without is refused (403, "a machine certificate is
required") although its auth key is right, and nothing is registered for it; `wgpy admin
machines revoke` then takes the machine's node off its peers within a second; and `wgpy admin
audit` tells all of it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .mesh_lab import HUB4, SERVER_PORT, WGPY, Mesh, MeshNode
from .netns import Lab, Process, run, wait_for

pytestmark = pytest.mark.root

REVOKE_DEADLINE = 1.0  # seconds from the revocation to the peers' WireGuard devices (the issue's)


class MachineMesh(Mesh):
    """The lab's mesh with the operator's machine CA: made with `wgpy admin ca init` before
    the server starts with --machine-ca."""

    def start_server(self, replica: int = 0) -> Process:
        ca_dir = self.workdir / "ca"
        if not (ca_dir / "ca.crt").exists():
            run([WGPY, "admin", "ca", "init", "--dir", str(ca_dir), "--name", "lab ops"])
        listen = f"{HUB4}:{SERVER_PORT + replica}"
        process = self.hub.spawn(
            [WGPY, "server", "--listen", listen, *self._database_args(),
             "--machine-ca", str(ca_dir / "ca.crt")],
            log=f"server{replica}",
        )  # fmt: skip
        self.servers[replica] = process
        wait_for(
            lambda: "listening on" in process.output() or not process.alive,
            timeout=30,
            what=f"server replica {replica} to listen",
        )
        if not process.alive:
            raise AssertionError(f"the server did not start:\n{process.output()[-3000:]}")
        return process

    def issue(self, name: str) -> tuple[Path, Path]:
        """`wgpy admin machines issue NAME`: the device's key and certificate."""
        out = self.workdir / "machines"
        self.hub.run(
            [WGPY, "admin", "--server", self.url(), "--api-key", self.api_key, "machines",
             "issue", name, "--ca-dir", str(self.workdir / "ca"), "--out", str(out)],
            timeout=30,
        )  # fmt: skip
        return out / f"{name}.crt", out / f"{name}.key"

    def set_policy(self, document: object) -> None:
        path = self.workdir / "policy.json"
        path.write_text(json.dumps(document))
        self.admin("policy", "set", str(path))

    def up_with_machine(self, node: MeshNode, auth_key: str, cert: Path, key: Path) -> None:
        """`wgpy up` with the machine's certificate and key (then as Mesh.up records it)."""
        result = node.ns.run(
            [
                *self._up_args(node, auth_key),
                "--machine-cert",
                str(cert),
                "--machine-key",
                str(key),
            ],
            check=False,
            timeout=90,
        )
        assert result.returncode == 0, f"wgpy up on {node.name}: {result.stderr}\n{node.log()}"
        node.joined = True
        me = self.server_nodes()[node.name]
        node.public_key, node.id = me["public_key"], me["id"]

    def _up_args(self, node: MeshNode, auth_key: str) -> list[str]:
        return [
            *(WGPY, "up", "--login-server", self.url(), "--state-dir", str(node.state_dir)),
            *("--interface", node.ifname, "--hostname", node.name, "--auth-key", auth_key),
        ]


def test_a_machine_certificate_is_required_proved_and_revoked(lab: Lab) -> None:
    mesh = MachineMesh(lab)
    mesh.admin("users", "create", "alice")
    mesh.admin("users", "create", "ops")
    mesh.set_policy(
        {
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}],
            "machineCertificates": {"require": ["user:alice"]},
        }
    )
    alice_key = mesh.auth_key("alice", "--reusable")
    watcher = mesh.add_node("watch")
    mesh.up(watcher, auth_key=mesh.auth_key("ops"))  # ops needs no certificate

    cert, key = mesh.issue("desk")
    desk = mesh.add_node("desk")
    mesh.up_with_machine(desk, alice_key, cert, key)
    assert mesh.server_nodes()["desk"]["machine"] == "desk"
    table = mesh.hub.run(
        [WGPY, "admin", "--server", mesh.url(), "--api-key", mesh.api_key, "nodes", "list"],
        timeout=30,
    ).stdout.splitlines()
    assert table[0].split()[-1] == "MACHINE"
    assert {line.split()[1]: line.split()[-1] for line in table[1:]} == {
        "watch": "-",
        "desk": "desk",
    }
    mesh.wait_peers(watcher, {desk}, timeout=10)
    mesh.wait_peers(desk, {watcher}, timeout=10)

    # the right auth key, no certificate: refused with the server's sentence, nothing kept
    bare = mesh.add_node("bare")
    result = mesh.up(bare, auth_key=alice_key, check=False)
    assert result.returncode != 0
    assert "a machine certificate is required" in result.stderr, result.stderr
    assert "bare" not in mesh.server_nodes()
    assert bare.daemon_pid() is None

    # revoked: the watcher's WireGuard device loses desk within a second
    command = time.monotonic()
    mesh.admin("machines", "revoke", "desk")  # returns once the server committed it
    started = time.monotonic()
    wait_for(
        lambda: desk.public_key not in watcher.peers(),
        timeout=5,
        interval=0.02,
        what="the watcher to lose desk",
    )
    took = time.monotonic() - started
    print(
        f"\nrevoked machine's node gone from its peer's device {took:.3f} s after the revocation "
        f"({time.monotonic() - command:.3f} s after `wgpy admin machines revoke` started)"
    )
    assert took < REVOKE_DEADLINE
    assert mesh.server_nodes()["desk"]["expired"] is True

    # the audit log has each step, with no secret in it
    events = mesh.admin("audit")
    summary = [(e["event"], e["result"], e["user"]) for e in events]
    assert ("register", "ok", "alice") in summary
    assert ("machines.revoke", "ok", None) in summary
    refused = [e for e in events if e["event"] == "register" and e["result"] == "refused"]
    assert refused and "a machine certificate is required" in refused[-1]["detail"]
    assert alice_key.rsplit("_", 1)[1] not in json.dumps(events)
