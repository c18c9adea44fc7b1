"""Discovery and `wgpy netcheck` against a real STUN/TURN server: Debian's coturn
(`turnserver`), started here on loopback (two addresses, UDP, TCP and TLS with a throwaway
self-signed certificate) and stopped by its pid, whatever happens.

- A real Interface's WireGuard socket asks coturn where it is, through the StunMux, while a
  handshake and pings flow between it and a second interface on the same sockets.
- `wgpy netcheck --stun ...` (the command, as a user runs it) and the relay checks over UDP,
  TCP and TLS (certificate untrusted, then trusted with --ca-cert).
- `wgpy netcheck` inside a NAT (namespaces, nftables masquerade) against coturn outside on
  two addresses: easy (one mapping), then hard (`fully-random`, a port per destination).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import PipeTun, ipv4_packet

from wgpy.device.interface import Interface
from wgpy.endpoint import Endpoint
from wgpy.nat.discovery import candidate_list, discover
from wgpy.nat.netcheck import netcheck
from wgpy.nat.servers import TurnServer, parse_turn_url
from wgpy.nat.stunmux import StunMux
from wgpy.protocol.crypto import generate_private_key, public_key

from .netns import Lab, make_nat, wait_for

pytestmark = pytest.mark.root

HOSTS = ("127.0.0.1", "127.0.0.2")
SECRET = "coturn-test-secret"


@dataclass
class Coturn:
    udp_port: int  # UDP and TCP
    tls_port: int
    ca_cert: Path
    log: Path


def _free_port() -> int:
    """A port free for UDP and TCP on both loopback addresses (checked, then released)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOSTS[0], 0))
            port = int(u.getsockname()[1])
        try:
            for host in HOSTS:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port on loopback")


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    program = shutil.which("turnserver")
    if program is None:
        pytest.fail("coturn's turnserver is missing (apt-get install coturn)")
    cert, key = _certificate(tmp_path)
    port, tls_port = _free_port(), _free_port()
    log = tmp_path / "turnserver.log"
    argv = [
        program,
        "-n",  # no configuration file
        *(a for h in HOSTS for a in ("--listening-ip", h)),
        "--relay-ip", HOSTS[0],
        "--listening-port", str(port),
        "--tls-listening-port", str(tls_port),
        "--cert", str(cert),
        "--pkey", str(key),
        "--no-dtls",
        "--no-cli",
        "--use-auth-secret",
        "--static-auth-secret", SECRET,
        "--realm", "wgpy.test",
        "--userdb", str(tmp_path / "turndb"),
        "--pidfile", str(tmp_path / "turnserver.pid"),
        "--log-file", str(log),
        "--simple-log",
        "--no-software-attribute",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_listening(process, port, tls_port, log)
        yield Coturn(udp_port=port, tls_port=tls_port, ca_cert=cert, log=log)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_listening(process: subprocess.Popen[bytes], port: int, tls_port: int, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"turnserver exited ({process.returncode}): {text[-2000:]}")
        try:
            for p in (port, tls_port):
                with socket.create_connection((HOSTS[0], p), timeout=0.2):
                    pass
            with socket.create_connection((HOSTS[1], port), timeout=0.2):
                pass
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail("turnserver did not listen within 10 s")


def _relay(c: Coturn) -> TurnServer:
    return TurnServer(
        urls=(
            parse_turn_url(f"turn:127.0.0.1:{c.udp_port}?transport=udp"),
            parse_turn_url(f"turn:127.0.0.1:{c.udp_port}?transport=tcp"),
            parse_turn_url(f"turns:127.0.0.1:{c.tls_port}?transport=tcp"),
        ),
        username="0:test",
        password="unused",
        expires=0,
    )


def test_discovery_from_a_wireguard_socket_against_coturn(coturn: Coturn) -> None:
    async def scenario() -> None:
        key_a, key_b = generate_private_key(os.urandom), generate_private_key(os.urandom)
        tun_a, tun_b = PipeTun("cota"), PipeTun("cotb")
        a = Interface("cota", private_key=key_a, tun=tun_a)  # type: ignore[arg-type]
        b = Interface("cotb", private_key=key_b, tun=tun_b)  # type: ignore[arg-type]
        mux = StunMux(a.bind, asyncio.get_running_loop())
        try:
            a.device.add_peer(
                public_key(key_b),
                endpoint=("127.0.0.1", b.listen_port),
                allowed_ips=["10.0.0.2/32"],
            )
            b.device.add_peer(public_key(key_a), allowed_ips=["10.0.0.1/32"])
            servers = [Endpoint(h, coturn.udp_port) for h in HOSTS]
            pings = [ipv4_packet("10.0.0.1", "10.0.0.2", b"%d" % i) for i in range(20)]

            async def traffic() -> None:
                for ping in pings:
                    tun_a.push([ping])
                    deadline = time.monotonic() + 5
                    while ping not in tun_b.written:
                        assert time.monotonic() < deadline, "a ping was lost"
                        await asyncio.sleep(0.001)

            found, _ = await asyncio.gather(discover(mux, servers), traffic())
            for p in found.probes:  # the kernel sends to 127.0.0.2 from 127.0.0.1 too
                assert p.mapped == Endpoint("127.0.0.1", a.listen_port), p.error
                assert p.local == "127.0.0.1"
            assert found.mapping_varies() is False
            assert tun_b.written == pings
            assert not mux.drops
            kinds = {c.type for c in candidate_list(["192.0.2.10"], a.listen_port, found)}
            assert kinds == {"host", "srflx"}
        finally:
            mux.close()
            a.close()
            b.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_relay_checks_against_coturn(coturn: Coturn) -> None:
    async def check(ca_cert: str | None) -> list[tuple[str, float | None, str | None]]:
        report = await netcheck(
            [Endpoint(HOSTS[0], coturn.udp_port)], [_relay(coturn)], timeout=2, ca_cert=ca_cert
        )
        assert report.discovery.public(4) is not None
        (relay,) = report.relays
        return [(c.url.kind, c.latency, c.error) for c in relay.checks]

    untrusted = asyncio.run(check(None))
    assert [k for k, _, _ in untrusted] == ["udp", "tcp", "tls"]
    assert untrusted[0][1] is not None and untrusted[1][1] is not None
    assert untrusted[2][1] is None and untrusted[2][2] is not None
    assert untrusted[2][2].startswith("its TLS certificate is not trusted")
    trusted = asyncio.run(check(str(coturn.ca_cert)))
    assert all(latency is not None and 0 < latency < 1 for _, latency, _ in trusted), trusted


def test_the_netcheck_command_against_coturn(coturn: Coturn) -> None:
    argv = [
        sys.executable, "-m", "wgpy", "netcheck",
        "--stun", f"{HOSTS[0]}:{coturn.udp_port}",
        "--stun", f"{HOSTS[1]}:{coturn.udp_port}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  UDP: yes" in lines
    assert any(line.startswith("  IPv4: yes, 127.0.0.") for line in lines)
    assert "  Mapping varies by destination: no" in lines
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=30)
    report = json.loads(done.stdout)
    assert [s["mapped"] is not None for s in report["stun"]] == [True, True]


def test_netcheck_behind_an_easy_then_a_hard_nat(lab: Lab, tmp_path: Path) -> None:
    """`wgpy netcheck` inside a NAT (nftables masquerade) against coturn on two addresses
    outside: the public address is the router's; the mapping is the same for both STUN
    servers, until the router maps each destination to a new port (`fully-random`)."""
    nat = make_nat(lab, udp_timeout=30)
    second = nat.wan.b4.rsplit(".", 1)[0] + ".3"
    nat.outside.ip("addr", "add", f"{second}/24", "dev", nat.wan.b_dev)
    program = shutil.which("turnserver")
    assert program is not None, "coturn's turnserver is missing (apt-get install coturn)"
    nat.outside.spawn(
        [
            program, "-n", "--listening-ip", nat.wan.b4, "--listening-ip", second,
            "--listening-port", "3478", "--no-tls", "--no-dtls", "--no-cli",
            "--use-auth-secret", "--static-auth-secret", SECRET, "--realm", "wgpy.test",
            "--userdb", str(tmp_path / "turndb"), "--pidfile", str(tmp_path / "turn.pid"),
            "--log-file", "stdout", "--simple-log",
        ],
        log="coturn",
    )  # fmt: skip
    wait_for(lambda: nat.outside.tcp_listening(3478), timeout=10, what="coturn listening")

    def netcheck_json() -> dict[str, object]:
        argv = [sys.executable, "-m", "wgpy", "netcheck", "--json", "--timeout", "2"]
        argv += ["--stun", f"{nat.wan.b4}:3478", "--stun", f"{second}:3478"]
        done = nat.inside.run(argv, timeout=30)
        report: dict[str, object] = json.loads(done.stdout)
        return report

    easy = netcheck_json()
    assert easy["udp"] is True
    assert str(easy["ipv4"]).rsplit(":", 1)[0] == nat.wan.a4  # the router's WAN address
    assert easy["mapping_varies_by_dest_ip"] is False
    ruleset = (
        "flush chain ip wgpy_nat postrouting\n"
        f'add rule ip wgpy_nat postrouting oifname "{nat.wan.a_dev}" masquerade fully-random\n'
    )
    nat.router.run(["nft", "-f", "-"], input=ruleset, timeout=15)
    hard = netcheck_json()
    assert str(hard["ipv4"]).rsplit(":", 1)[0] == nat.wan.a4
    assert hard["mapping_varies_by_dest_ip"] is True
