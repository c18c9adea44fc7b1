"""A real TURN/STUN relay for tests: Debian's coturn (`turnserver`) with a generated config.

    relay = start_coturn(lab)                          # on loopback, free ports
    relay = start_coturn(lab, ns=nat.relay.ns,         # in a lab namespace, on 3478 and 443
                         addresses=[...], allowed_peers=LAB_PEER_RANGES)
    relay = nat.coturn()                               # the same, on the NAT lab's relay host

What a test gets (a `Coturn`):
- `relay.secret`: the static `use-auth-secret` secret; `relay.write_secret(path)` writes it to
  a file of mode 0600 (what `wgpy server --turn-secret FILE` reads).
- `relay.credentials(name, ttl=...)`: (username, password) by coturn's REST scheme: username
  `EXPIRY_UNIX_TIME:NAME`, password base64(HMAC-SHA1(secret, username)) (`rest_credentials`).
- `relay.urls(host=None)`: `turn:H:P?transport=udp`, `turn:H:P?transport=tcp`,
  `turns:H:TLS?transport=tcp` (what `wgpy server --turn URL` takes); `relay.stun()`:
  `H:P` of each listening address (coturn answers STUN Binding requests too).
- `relay.port` (UDP and TCP), `relay.tls_port`, `relay.addresses` (listening IPs; the first
  is the main one), `relay.realm`, `relay.ca_file` (the self-signed certificate, made with
  `cryptography` for the listening IPs and `relay.server_name`), `relay.ssl_context()` that
  trusts it, `relay.log_path` and `relay.log()` (its output, shown when a lab test fails).

The config (`coturn_config`) is the production one, examples/coturn.conf, with only the
addresses, ports, secret, certificate, logging and files replaced (`OVERRIDDEN`): the tests
run what the example ships, its `denied-peer-ip` ranges (RFC 6890's special-purpose ranges,
without which a TURN server is an open proxy into private networks) included. A lab relay
must still reach the lab's own "public" addresses, which are documentation and benchmarking
ranges, so the NAT lab passes them as `allowed_peers` (`LAB_PEER_RANGES`; in coturn allowed
wins over denied); the node LANs' private ranges stay denied, as on the internet (without
that coturn relays towards a peer's private host candidate, fails, and closes the whole
allocation). On loopback the relay also allows loopback peers (`allow-loopback-peers`, for
testing only). A relay whose log shows a configuration line it ignored or refused fails to
start (`CONFIG_ERRORS`).

It is started in the foreground in its own session and stopped by process id when the lab
closes (`Process`), never by name: a coturn started by someone else is left alone.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import ipaddress
import os
import secrets
import shutil
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .netns import PYTHON, Lab, Namespace, Process, run, tail, wait_for

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TURNSERVER = "turnserver"
PROBE = Path(__file__).resolve().parent / "nat_probe.py"
REALM = "wgpy.test"
SERVER_NAME = "relay.wgpy.test"

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "coturn.conf"
# Settings of the example that a test relay replaces with its own (addresses, ports, secret,
# certificate, logging, files, and the user to drop to: the tests run it as root).
OVERRIDDEN = frozenset(
    {
        "listening-port", "tls-listening-port", "listening-ip", "relay-ip", "external-ip",
        "static-auth-secret", "realm", "cert", "pkey", "syslog", "log-file", "simple-log",
        "pidfile", "userdb", "proc-user", "proc-group",
    }
)  # fmt: skip
# The NAT lab's public addresses (nat_lab.py: documentation and benchmarking ranges, which a
# production relay denies), allowed as peers on a lab relay.
LAB_PEER_RANGES: tuple[str, ...] = ("203.0.113.0/24", "198.18.0.0/15", "2001:db8::/32")
LOOPBACK_PEER_RANGES: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
# What coturn logs when it ignores or refuses part of its configuration.
CONFIG_ERRORS = ("Bad configuration format", "Wrong address format", "CONFIG ERROR")


def settings(text: str) -> list[tuple[str, str | None]]:
    """A turnserver.conf's settings in order: (name, value or None for a flag)."""
    out: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        out.append((name.strip(), value.strip() if sep else None))
    return out


def peer_ranges(text: str, setting: str = "denied-peer-ip") -> list[tuple[IPAddress, IPAddress]]:
    """The (first, last) address ranges of a turnserver.conf's `denied-peer-ip` lines."""
    ranges = []
    for name, value in settings(text):
        if name == setting and value:
            first, _, last = value.partition("-")
            ranges.append((ipaddress.ip_address(first), ipaddress.ip_address(last or first)))
    return ranges


class CoturnFailed(AssertionError):
    """coturn did not start or does not answer."""


def coturn_range(cidr: str) -> str:
    """A network as coturn's `denied-peer-ip`/`allowed-peer-ip` take it: `FIRST-LAST`, or one
    address (coturn reads no prefix lengths)."""
    network = ipaddress.ip_network(cidr)
    if network.num_addresses == 1:
        return str(network.network_address)
    return f"{network.network_address}-{network.broadcast_address}"


def rest_credentials(
    secret: str, name: str, *, ttl: int = 86400, now: float | None = None
) -> tuple[str, str]:
    """coturn's time-limited credentials (`use-auth-secret`, the "TURN REST API"): username
    `EXPIRY_UNIX_TIME:NAME`, password base64(HMAC-SHA1(secret, username))."""
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{name}"
    digest = hmac.digest(secret.encode(), username.encode(), "sha1")
    return username, base64.b64encode(digest).decode()


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_certificate(
    directory: Path, *, server_name: str, addresses: Sequence[str]
) -> tuple[Path, Path]:
    """A self-signed certificate for `server_name` and `addresses` (valid one day); returns
    (certificate, key) PEM paths, the key of mode 0600."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(server_name)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Its own trust anchor: a CA certificate that may also serve TLS (what strict
        # verifiers ask of a self-signed one).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def coturn_config(
    *,
    addresses: Sequence[str],
    port: int,
    tls_port: int,
    secret: str,
    cert: Path,
    key: Path,
    workdir: Path,
    allowed_peers: Sequence[str] = (),
    loopback_peers: bool = False,
    example: str | None = None,
) -> str:
    """turnserver.conf for a test relay: examples/coturn.conf with its addresses, ports,
    secret, certificate, logging and files replaced, and `allowed_peers` added."""
    text = EXAMPLE.read_text() if example is None else example
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    kept = [name if value is None else f"{name}={value}" for name, value in settings(text)
            if name not in OVERRIDDEN]  # fmt: skip
    lines = [
        "# Generated by tests/interop/coturn.py from examples/coturn.conf.",
        *kept,
        f"listening-port={port}",
        f"tls-listening-port={tls_port}",
        *(f"listening-ip={a}" for a in addresses),
        # One relay address per family: the first listening address of each.
        *(f"relay-ip={a}" for a in [*v4[:1], *v6[:1]]),
        f"static-auth-secret={secret}",
        f"realm={REALM}",
        f"cert={cert}",
        f"pkey={key}",
        *(f"allowed-peer-ip={coturn_range(r)}" for r in allowed_peers),
        *(["allow-loopback-peers"] if loopback_peers else []),
        "log-file=stdout",
        "simple-log",
        "verbose",
        f"pidfile={workdir / 'turnserver.pid'}",
        f"userdb={workdir / 'turndb'}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(eq=False)
class Coturn:
    """A running coturn; see the module docstring for what tests use."""

    ns: Namespace | None
    addresses: list[str]
    port: int
    tls_port: int
    secret: str
    workdir: Path
    ca_file: Path
    config_path: Path
    process: Process
    realm: str = REALM
    server_name: str = SERVER_NAME

    def __repr__(self) -> str:
        where = self.ns.name if self.ns else "loopback"
        return f"Coturn({host_port(self.addresses[0], self.port)} in {where})"

    @property
    def log_path(self) -> Path:
        return self.process.log

    def log(self, lines: int = 80) -> str:
        return tail(self.process.log, lines)

    def urls(self, host: str | None = None) -> list[str]:
        """TURN URLs (RFC 7065) for UDP, TCP and TLS at `host` (default: the first address)."""
        h = host or self.addresses[0]
        h = f"[{h}]" if ":" in h else h
        return [
            f"turn:{h}:{self.port}?transport=udp",
            f"turn:{h}:{self.port}?transport=tcp",
            f"turns:{h}:{self.tls_port}?transport=tcp",
        ]

    def stun(self) -> list[str]:
        """Where it answers STUN Binding requests: `HOST:PORT` per listening address."""
        return [host_port(a, self.port) for a in self.addresses]

    def credentials(self, name: str, *, ttl: int = 86400) -> tuple[str, str]:
        return rest_credentials(self.secret, name, ttl=ttl)

    def write_secret(self, path: Path) -> Path:
        """The shared secret in a file of mode 0600 (for `wgpy server --turn-secret`)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.secret + "\n")
        return path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this relay's certificate (and only it)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def alive(self) -> bool:
        return self.process.alive

    def stop(self) -> int | None:
        return self.process.stop()

    def command(self, cmd: Sequence[str]) -> list[str]:
        """`cmd` as run where the relay runs (its namespace, or this one)."""
        return self.ns.exec_args(cmd) if self.ns else list(cmd)


def free_port(hosts: Sequence[str] = ("127.0.0.1",), *, udp_too: bool = True) -> int:
    """A port free right now for TCP (and UDP) on every one of `hosts` (the kernel picks it
    on the first; it is released before coturn binds it)."""
    for _ in range(50):
        sockets: list[socket.socket] = []
        try:
            for host in hosts:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                kinds = (
                    (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp_too else (socket.SOCK_STREAM,)
                )
                for kind in kinds:
                    sock = socket.socket(family, kind)
                    sockets.append(sock)
                    sock.bind((host, sockets[0].getsockname()[1] if sockets[:-1] else 0))
            port: int = sockets[0].getsockname()[1]
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise OSError(f"found no port free for TCP and UDP on {', '.join(hosts)}")


def start_coturn(
    lab: Lab,
    *,
    ns: Namespace | None = None,
    addresses: Sequence[str] = ("127.0.0.1",),
    port: int | None = None,
    tls_port: int | None = None,
    secret: str | None = None,
    allowed_peers: Sequence[str] = (),
    startup_timeout: float = 15,
    example: str | None = None,
) -> Coturn:
    """Start coturn owned by `lab` (stopped when it closes) and wait until it answers STUN
    over UDP and listens on TCP and TLS.

    In a namespace the ports default to 3478 and 443 (the namespace is the test's own); on
    loopback (ns=None) to free ports, with loopback peers allowed. `example` replaces the
    text of examples/coturn.conf that the config is made from.
    """
    if shutil.which(TURNSERVER) is None:
        raise CoturnFailed(f"{TURNSERVER} is not installed; `make setup` installs coturn.")
    loopback = ns is None
    if port is None:
        port = free_port(addresses) if loopback else 3478
    if tls_port is None:
        tls_port = free_port(addresses, udp_too=False) if loopback else 443
    workdir = lab.workdir / f"coturn-{port}-{time.monotonic_ns()}"
    workdir.mkdir(mode=0o700, parents=True)
    cert, key = make_certificate(workdir, server_name=SERVER_NAME, addresses=addresses)
    secret = secret or secrets.token_urlsafe(24)
    config = coturn_config(
        addresses=addresses,
        port=port,
        tls_port=tls_port,
        secret=secret,
        cert=cert,
        key=key,
        workdir=workdir,
        allowed_peers=[*allowed_peers, *(LOOPBACK_PEER_RANGES if loopback else ())],
        loopback_peers=loopback,
        example=example,
    )
    config_path = workdir / "turnserver.conf"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(config)
    args = [TURNSERVER, "-c", str(config_path)]
    if ns is not None:
        process = ns.spawn(args, log=f"coturn-{port}")
    else:
        process = Process(args, lab.workdir / f"coturn-{port}.log")
    relay = Coturn(ns, list(addresses), port, tls_port, secret, workdir, cert, config_path, process)
    lab.callback(relay.stop)
    try:
        wait_ready(relay, startup_timeout)
    except BaseException:
        relay.stop()
        raise
    return relay


def wait_ready(relay: Coturn, timeout: float) -> None:
    """Until coturn answers a STUN Binding request on its first address and listens on its
    TCP and TLS ports (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    probe = relay.command(
        [PYTHON, str(PROBE), "stun", "--to", relay.stun()[0], "--timeout", "0.5",
         "--wait", f"{timeout:g}"]
    )  # fmt: skip
    result = run(probe, check=False, timeout=timeout + 10)
    if not relay.alive:
        raise CoturnFailed(
            f"turnserver exited with status {relay.process.returncode}; output:\n{relay.log()}"
        )
    refused = [
        line for line in relay.log(400).splitlines() if any(e in line for e in CONFIG_ERRORS)
    ]
    if refused:
        raise CoturnFailed(f"turnserver did not take its whole configuration: {refused}")
    if '"mapped": [null' in result.stdout or result.returncode != 0:
        raise CoturnFailed(
            f"{relay} did not answer STUN within {timeout:g} s ({result.stderr.strip()}); "
            f"output:\n{relay.log()}"
        )

    def listening() -> bool:
        ss = run(relay.command(["ss", "-Hltn"]), timeout=10).stdout
        return all(f":{p} " in ss for p in (relay.port, relay.tls_port))

    wait_for(
        listening,
        timeout=max(deadline - time.monotonic(), 1),
        interval=0.05,
        what=f"{relay} to listen on TCP {relay.port} and {relay.tls_port}",
    )
