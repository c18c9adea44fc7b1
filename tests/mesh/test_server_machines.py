"""Machine certificates on the server: the machines store (both backends), the admin API
(recorded only when the server's --machine-ca issued them, revoked), `wgpy server
--machine-ca` refusing a bad CA, and `wgpy admin ca init` / `machines issue|list|revoke` /
`wgpy machine csr` against a real server on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509

from wgpy import cli, machinecert
from wgpy.cli.environment import Environment, ExitStatus
from wgpy.mesh.server import MeshServer, ServerConfig
from wgpy.mesh.server.errors import Conflict, Forbidden, NotFound
from wgpy.mesh.server.service import ServerError

from .conftest import Database, running, with_
from .test_server_store import Clock, opened

DAY = 86400.0


def make_ca(directory: Path, now: float) -> tuple[machinecert.SigningKey, x509.Certificate]:
    key, cert = machinecert.create_ca("ops", now=now, lifetime=30 * DAY, serial=7)
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / "ca.crt").write_bytes(machinecert.certificate_pem(cert))
    return key, cert


def device_cert(
    ca: tuple[machinecert.SigningKey, x509.Certificate], name: str, now: float, serial: int
) -> x509.Certificate:
    key = machinecert.new_private_key()
    return machinecert.issue(
        ca[0], ca[1], key.public_key(), name, now=now, lifetime=DAY, serial=serial
    )


async def test_machine_store(backend: str, database: Database) -> None:
    clock = Clock()
    ca = machinecert.create_ca("ops", now=clock.now, lifetime=DAY, serial=1)
    first = device_cert(ca, "laptop", clock.now, 0x10)
    second = device_cert(ca, "laptop", clock.now, 0x11)
    async with opened(database, clock=clock) as store:
        pem = machinecert.certificate_pem(first).decode()
        record = await store.machines.add(machinecert.machine_of(first), pem)
        assert (record.name, record.serial, record.revoked_at) == ("laptop", "10", None)
        assert record.valid(clock.now) and not record.valid(clock.now + 2 * DAY)
        with pytest.raises(Conflict, match="serial 10 is already recorded"):
            await store.machines.add(machinecert.machine_of(first), pem)
        await store.machines.add(
            machinecert.machine_of(second), machinecert.certificate_pem(second).decode()
        )
        found = await store.machines.by_serial("10")
        assert found is not None and found.fingerprint == machinecert.machine_of(first).fingerprint
        assert await store.machines.by_serial("99") is None
        clock.now += 5
        records = await store.machines.revoke("laptop", "11")
        assert [(r.serial, r.revoked_at) for r in records] == [("10", None), ("11", clock.now)]
        clock.now += 5
        records = await store.machines.revoke("laptop")
        assert [r.revoked_at for r in records] == [clock.now, clock.now - 5]  # kept the first
        with pytest.raises(NotFound, match='no machine "desk"'):
            await store.machines.revoke("desk")
        with pytest.raises(NotFound, match="no certificate with serial 12"):
            await store.machines.revoke("laptop", "12")
        assert [m.serial for m in await store.machines.all()] == ["10", "11"]
        assert await store.machines.all("desk") == []


async def test_accept_records_on_first_use_and_refuses_revoked(
    backend: str, database: Database
) -> None:
    clock = Clock()
    ca = machinecert.create_ca("ops", now=clock.now, lifetime=DAY, serial=1)
    cert = device_cert(ca, "ci-runner", clock.now, 0x30)
    machine, pem = machinecert.machine_of(cert), machinecert.certificate_pem(cert).decode()
    async with opened(database, clock=clock) as store:
        first = await store.machines.accept(machine, pem)  # issued elsewhere: recorded now
        assert (first.name, first.serial, first.created_at) == ("ci-runner", "30", clock.now)
        clock.now += 1
        again = await store.machines.accept(machine, pem)
        assert again == first
        # the same serial from another certificate (a CA that reuses serials): refused
        twin = device_cert(ca, "ci-runner", clock.now, 0x30)
        with pytest.raises(Forbidden, match="another certificate with serial 30"):
            await store.machines.accept(
                machinecert.machine_of(twin), machinecert.certificate_pem(twin).decode()
            )
        await store.machines.revoke("ci-runner")
        with pytest.raises(Forbidden, match='machine "ci-runner" is revoked'):
            await store.machines.accept(machine, pem)
        assert len(await store.machines.all()) == 1


async def test_admin_api_records_only_what_its_ca_issued(
    backend: str, database: Database, config: ServerConfig, tmp_path: Path
) -> None:
    now = float(int(time.time()))
    ca = make_ca(tmp_path / "ca", now)
    good = device_cert(ca, "desk-1", now, 0x20)
    stranger = device_cert(
        machinecert.create_ca("ops", now=now, lifetime=DAY, serial=7), "x", now, 5
    )
    async with running(with_(config, machine_ca=tmp_path / "ca" / "ca.crt")) as r:
        pem = machinecert.certificate_pem(good).decode()
        machine = (await r.admin.call("POST", "/machines", {"certificate": pem}))["machine"]
        assert machine["name"] == "desk-1" and machine["serial"] == "20"
        assert (machine["revoked"], machine["expired"]) == (False, False)
        message = await r.admin.error("POST", "/machines", {"certificate": pem}, status=409)
        assert message == "a certificate with serial 20 is already recorded"
        message = await r.admin.error(
            "POST",
            "/machines",
            {"certificate": machinecert.certificate_pem(stranger).decode()},
            status=400,
        )
        assert "not issued by this server's machine CA" in message
        for body in ({"certificate": "hello"}, {"certificate": 5}, {}):
            await r.admin.error("POST", "/machines", body, status=400)
        message = await r.admin.error(
            "POST", "/machines", {"certificate": pem.replace("M", "N", 3)}, status=400
        )
        assert "PEM X.509 certificate" in message or "not issued by" in message
        await r.admin.using(None).error("GET", "/machines", status=401)
        listed = (await r.admin.call("GET", "/machines"))["machines"]
        assert [m["name"] for m in listed] == ["desk-1"]
        revoked = (await r.admin.call("POST", "/machines/desk-1/revoke", {}))["machines"]
        assert revoked[0]["revoked"] is True and revoked[0]["revoked_at"]
        assert (await r.server.store.machines.by_serial("20")).revoked_at is not None  # type: ignore[union-attr]
        await r.admin.error("POST", "/machines/nobody/revoke", {}, status=404)
        await r.admin.error("POST", "/machines/a%20b/revoke", {}, status=400)
        await r.admin.error("POST", "/machines/desk-1/revoke", {"serial": "XYZ"}, status=400)
    # without --machine-ca nothing is recorded, and the answer says how to set one
    async with running(config) as r:
        message = await r.admin.error("POST", "/machines", {"certificate": pem}, status=409)
        assert "start it with --machine-ca CERT" in message


async def test_server_refuses_a_bad_machine_ca(tmp_path: Path) -> None:
    now = float(int(time.time()))
    ca = machinecert.create_ca("ops", now=now, lifetime=DAY, serial=7)
    leaf = tmp_path / "leaf.crt"
    leaf.write_bytes(machinecert.certificate_pem(device_cert(ca, "x", now, 8)))
    junk = tmp_path / "junk.crt"
    junk.write_bytes(b"not a certificate\n")
    base = ServerConfig(host="127.0.0.1", port=0, state_dir=tmp_path / "s", shutdown_timeout=1.0)
    for path, message in [
        (leaf, "not a CA certificate"),
        (junk, "is not a PEM X.509 certificate"),
        (tmp_path / "missing.crt", "cannot read the machine CA"),
    ]:
        with pytest.raises(ServerError, match=message):
            await MeshServer(with_(base, machine_ca=path)).start()


class Run:
    def __init__(self, status: ExitStatus, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err


def wgpy(*args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.BytesIO(b""), stdout=out, stderr=err, env={})
    status = cli.main(list(args), env)
    return Run(status, out.getvalue(), err.getvalue())


def test_admin_cli_ca_issue_csr_revoke(tmp_path: Path) -> None:
    """The whole operator flow on a real server (SQLite) in this process: ca init, the
    server started with --machine-ca, issue with a new key and for a CSR made on the device,
    list, revoke; the files' modes; and the proof of possession with what was issued."""
    ca_dir = tmp_path / "ca"
    r = wgpy("admin", "ca", "init", "--dir", str(ca_dir), "--name", "Example ops")
    assert r.status == 0, r.err
    assert stat.S_IMODE(os.stat(ca_dir / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert "--machine-ca" in r.err
    r = wgpy("admin", "ca", "init", "--dir", str(ca_dir))
    assert r.status == ExitStatus.ERROR and "already exists" in r.err
    r = wgpy("admin", "ca", "init", "--dir", str(tmp_path / "x"), "--expiration", "99999999w")
    assert r.status == ExitStatus.ERROR and "choose a shorter --expiration" in r.err
    assert not (tmp_path / "x").exists()
    ca_cert = machinecert.load_certificate((ca_dir / "ca.crt").read_bytes())
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        state_dir=tmp_path / "server",
        shutdown_timeout=1.0,
        machine_ca=ca_dir / "ca.crt",
    )

    async def main() -> None:
        server = MeshServer(config)
        await server.start()
        try:
            await body(server)
        finally:
            await server.stop()

    async def body(server: MeshServer) -> None:
        _, api_key = await server.store.api_keys.create(None)
        admin = ("admin", "--server", server.url, "--api-key", str(api_key))
        call = asyncio.to_thread
        out = tmp_path / "out"
        r = await call(
            wgpy, *admin, "machines", "issue", "laptop", "--ca-dir", str(ca_dir), "--out", str(out)
        )
        assert r.status == 0, r.err
        assert r.out.split() == [str(out / "laptop.key"), str(out / "laptop.crt")]
        assert stat.S_IMODE(os.stat(out / "laptop.key").st_mode) == 0o600
        key = machinecert.load_private_key((out / "laptop.key").read_bytes())
        cert = machinecert.load_certificate((out / "laptop.crt").read_bytes())
        challenge, node_key = os.urandom(32), os.urandom(32)
        signature = machinecert.sign_proof(key, challenge, node_key)
        now = time.time()
        machine = machinecert.verify_proof(ca_cert, cert, challenge, node_key, signature, now=now)
        assert machine.name == "laptop"
        # the same name again: refused before anything is recorded
        r = await call(
            wgpy, *admin, "machines", "issue", "laptop", "--ca-dir", str(ca_dir), "--out", str(out)
        )
        assert r.status == ExitStatus.ERROR and "already exists" in r.err
        assert len(await server.store.machines.all()) == 1
        # a CSR made on the device: its key stays there
        device = tmp_path / "device"
        r = await call(
            wgpy,
            "machine",
            "csr",
            "build-7",
            "--key",
            str(device / "machine.key"),
            "--out",
            str(device / "build-7.csr"),
        )
        assert r.status == 0, r.err
        assert stat.S_IMODE(os.stat(device / "machine.key").st_mode) == 0o600
        r = await call(
            wgpy,
            *admin,
            "--json",
            "machines",
            "issue",
            "build-7",
            "--ca-dir",
            str(ca_dir),
            "--csr",
            str(device / "build-7.csr"),
            "--out",
            str(out),
        )
        assert r.status == 0, r.err
        assert json.loads(r.out)["files"] == [str(out / "build-7.crt")]
        assert not (out / "build-7.key").exists()
        device_key = machinecert.load_private_key((device / "machine.key").read_bytes())
        cert = machinecert.load_certificate((out / "build-7.crt").read_bytes())
        signature = machinecert.sign_proof(device_key, challenge, node_key)
        machinecert.verify_proof(ca_cert, cert, challenge, node_key, signature, now=now)
        # a second request reuses the device's key
        r = await call(wgpy, "machine", "csr", "build-7", "--key", str(device / "machine.key"))
        assert r.status == 0 and r.out.startswith("-----BEGIN CERTIFICATE REQUEST-----")
        assert "made the machine key" not in r.err
        # list, revoke
        r = await call(wgpy, *admin, "machines", "list")
        lines = r.out.splitlines()
        assert lines[0].split()[:4] == ["ID", "NAME", "SERIAL", "REVOKED"]
        assert [line.split()[1] for line in lines[1:]] == ["laptop", "build-7"]
        r = await call(wgpy, *admin, "machines", "revoke", "laptop")
        assert (r.status, r.out) == (0, "revoked machine laptop\n"), r.err
        r = await call(wgpy, *admin, "machines", "list", "--json")
        assert [m["revoked"] for m in json.loads(r.out)] == [True, False]
        r = await call(wgpy, *admin, "machines", "revoke", "nobody")
        assert r.status == ExitStatus.ERROR and 'no machine "nobody"' in r.err
        # a CA the server does not know: refused, nothing written
        other = tmp_path / "other-ca"
        assert wgpy("admin", "ca", "init", "--dir", str(other)).status == 0
        r = await call(
            wgpy, *admin, "machines", "issue", "rogue", "--ca-dir", str(other), "--out", str(out)
        )
        assert r.status == ExitStatus.ERROR and "not issued by this server's machine CA" in r.err
        assert not (out / "rogue.key").exists() and not (out / "rogue.crt").exists()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_server_command_says_why_a_machine_ca_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    r = wgpy(
        *("server", "--listen", "127.0.0.1:0", "--stun-listen", "off"),
        *("--state-dir", str(tmp_path / "s"), "--machine-ca", str(missing)),
    )
    assert r.status == ExitStatus.ERROR
    assert r.err == (
        f"wgpy server: cannot read the machine CA {missing}: No such file or directory\n"
    )
    assert r.out == ""
