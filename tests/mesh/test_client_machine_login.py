"""The node's machine proof against the real server (SQLite, in one process, fake
interfaces): a node configured with its machine certificate registers under a policy that
requires one and logs in again with a fresh proof; one without is refused although its auth
key is right; the daemon options and settings keep the certificate's paths; `wgpy up`
checks the pair before anything starts."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import pytest

from wgpy import machinecert
from wgpy.cli.environment import CommandError
from wgpy.cli.mesh import _machine_identity
from wgpy.mesh.client.daemon import DaemonOptions
from wgpy.mesh.client.node import MeshError, NodeConfig
from wgpy.mesh.client.state import Settings
from wgpy.mesh.server import MeshServer, ServerConfig

from .test_client_real_server import Node, run
from .test_server_machines import DAY

NOW = float(int(time.time())) - 60  # the certificates' start


def write_device(tmp_path: Path, name: str, serial: int) -> tuple[Path, Path]:
    """A machine key (0600) and certificate issued by the CA in tmp_path/ca."""
    ca_key, ca_cert = machinecert.create_ca("ops", now=NOW, lifetime=30 * DAY, serial=1)
    key = machinecert.new_private_key()
    cert = machinecert.issue(
        ca_key, ca_cert, key.public_key(), name, now=NOW, lifetime=DAY, serial=serial
    )
    (tmp_path / "ca").mkdir(mode=0o700, exist_ok=True)
    (tmp_path / "ca" / "ca.crt").write_bytes(machinecert.certificate_pem(ca_cert))
    key_path, cert_path = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(machinecert.private_key_pem(key))
    cert_path.write_bytes(machinecert.certificate_pem(cert))
    return key_path, cert_path


def test_a_node_proves_its_machine_where_the_policy_requires_one(tmp_path: Path) -> None:
    key_path, cert_path = write_device(tmp_path, "desk", 0x51)
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        state_dir=tmp_path / "server",
        keepalive=0.5,
        shutdown_timeout=1.0,
        machine_ca=tmp_path / "ca" / "ca.crt",
    )

    async def main() -> None:
        server = MeshServer(config)
        await server.start()
        try:
            await body(server)
        finally:
            await server.stop()

    async def body(server: MeshServer) -> None:
        store = server.store
        await store.users.create("alice")
        await store.policy.set(
            {
                "acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}],
                "machineCertificates": {"require": ["user:alice"]},
            }
        )
        _, key = await store.preauth_keys.create(
            "alice", reusable=True, ephemeral=False, tags=(), lifetime=3600.0
        )
        proven = Node(server.url, tmp_path, "a", str(key))
        proven.config = dataclasses.replace(
            proven.config, machine_cert=str(cert_path), machine_key=str(key_path)
        )
        bare = Node(server.url, tmp_path, "b", str(key))
        node = await proven.start()
        try:
            assert node.self_node is not None
            nodes = await store.nodes.all()
            assert [(n.hostname, n.machine) for n in nodes] == [("a", "desk")]
            assert nodes[0].expires_at == NOW + DAY  # the certificate's end
            with pytest.raises(MeshError, match="a machine certificate is required"):
                await bare.start()
            assert len(await store.nodes.all()) == 1
        finally:
            await proven.stop()
            if bare.node is not None:
                await bare.node.client.close()
        # again, with the stored token and a fresh proof (a new challenge)
        proven.config = dataclasses.replace(proven.config, auth_key=None)
        await proven.start()
        await proven.stop()
        events = await store.audit.list()
        logins = [e for e in events if e.event == "login" and e.result == "ok"]
        assert logins and "machine desk" in (logins[-1].detail or "")

    run(main())


def test_the_daemon_and_settings_keep_the_machine_paths(tmp_path: Path) -> None:
    node = NodeConfig("wg0", 1, "h", machine_cert="/m/desk.crt", machine_key="/m/desk.key")
    options = DaemonOptions(state_dir=tmp_path, server_url="https://x", node=node)
    again = DaemonOptions.from_json(options.to_json())
    assert (again.node.machine_cert, again.node.machine_key) == ("/m/desk.crt", "/m/desk.key")
    settings = Settings("https://x", "wg0", 1, "h", None, "/m/desk.crt", "/m/desk.key")
    assert Settings.from_json(dataclasses.asdict(settings)) == settings
    old = {"server_url": "https://x", "interface": "wg0", "listen_port": 1, "hostname": "h"}
    assert Settings.from_json(old).machine_cert is None  # settings written before


def test_up_checks_the_machine_pair_first(tmp_path: Path) -> None:
    key_path, cert_path = write_device(tmp_path, "desk", 0x52)
    (tmp_path / "other").mkdir()
    other_key, _ = write_device(tmp_path / "other", "lap", 0x53)

    def args(cert: object, key: object) -> argparse.Namespace:
        return argparse.Namespace(machine_cert=cert, machine_key=key)

    assert _machine_identity(args(None, None), None) == (None, None)
    assert _machine_identity(args(str(cert_path), str(key_path)), None) == (
        str(cert_path),
        str(key_path),
    )
    kept = Settings("https://x", "wg0", 1, "h", None, str(cert_path), str(key_path))
    assert _machine_identity(args(None, None), kept) == (str(cert_path), str(key_path))
    with pytest.raises(CommandError, match="together"):
        _machine_identity(args(str(cert_path), None), None)
    with pytest.raises(CommandError, match="is not for the key"):
        _machine_identity(args(str(cert_path), str(other_key)), None)
    os.chmod(key_path, 0o644)
    with pytest.raises(CommandError, match="can be read by others"):
        _machine_identity(args(str(cert_path), str(key_path)), None)
    with pytest.raises(CommandError, match="cannot read"):
        _machine_identity(args(str(tmp_path / "nope.crt"), str(key_path)), None)
