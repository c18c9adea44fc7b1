"""wgpy/mesh/client/nameservice.py and hostdns.py: the node's resolver as a service (fed by
the map, answering on its addresses, only to overlay and loopback sources) and the host's
resolver pointed at it and put back (direct mode on a real file; resolvconf and resolved as
the commands they would run, since neither program is on the test host).

The namespace test (tests/interop/test_mesh_dns.py) runs the same through `wgpy up`."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from dnslib import RCODE, DNSRecord

from wgpy.log import get_logger
from wgpy.mesh.client.hostdns import HostDNS, Mode, choose_mode
from wgpy.mesh.client.nameservice import NameService, overlay_or_loopback
from wgpy.mesh.client.netmap import parse_node, parse_peer
from wgpy.mesh.client.state import StateDir

from .fakes import FakeHost

LOG = get_logger(component="test")
SERVICE = ipaddress.ip_address("100.100.100.100")
PREVIOUS = b"# the host's own\nsearch example.com\nnameserver 192.0.2.53\noptions edns0\n"


def key(i: int) -> str:
    return base64.b64encode(bytes([i]) * 32).decode()


NODE = parse_node(
    {"public_key": key(1), "hostname": "laptop", "ipv4": "100.64.0.1",
     "name": "laptop.alice.mesh.internal"}
)  # fmt: skip


def peer(i: int, host: str, user: str = "bob") -> Any:
    return parse_peer(
        {"public_key": key(i), "hostname": host, "user": user,
         "name": f"{host}.{user}.mesh.internal", "addresses": [f"100.64.0.{i}/32"]}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("source", "answered"),
    [
        ("100.64.0.7", True),
        ("100.100.100.100", True),
        ("fd7a:115c:a1e0::9", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:100.64.0.7", True),
        ("10.0.0.2", False),  # the underlay
        ("192.0.2.1", False),
        ("2001:db8::1", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
    ],
)
def test_only_overlay_and_loopback_sources_are_answered(source: str, answered: bool) -> None:
    assert overlay_or_loopback(source) is answered


def test_the_mode_follows_what_the_host_has() -> None:
    stub = "nameserver 127.0.0.53\n"
    plain = "nameserver 192.0.2.1\n"
    assert choose_mode(stub, resolvectl=True, resolvconf_program=True) is Mode.RESOLVED
    assert choose_mode(plain, resolvectl=True, resolvconf_program=True) is Mode.RESOLVCONF
    assert choose_mode(stub, resolvectl=False, resolvconf_program=False) is Mode.DIRECT
    assert choose_mode(plain, resolvectl=True, resolvconf_program=False) is Mode.DIRECT


def host_dns(tmp_path: Path, interface: str = "wgpy0", **options: Any) -> HostDNS:
    options.setdefault("which", lambda program: None)
    return HostDNS(
        interface, StateDir(tmp_path / "state"), LOG, path=tmp_path / "resolv.conf", **options
    )


async def test_direct_mode_writes_the_file_and_puts_it_back_byte_for_byte(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_bytes(PREVIOUS)
    conf.chmod(0o644)
    dns = host_dns(tmp_path)
    assert await dns.apply([SERVICE], ["mesh.internal"]) is Mode.DIRECT
    lines = conf.read_text().splitlines()
    assert lines[1:] == [
        "nameserver 100.100.100.100",
        "search mesh.internal example.com",
        "options edns0",
    ]
    backup = tmp_path / "state" / "resolv.conf.pre-wgpy"
    assert backup.read_bytes() == PREVIOUS and backup.stat().st_mode & 0o777 == 0o600
    await dns.revert()
    assert conf.read_bytes() == PREVIOUS and conf.stat().st_mode & 0o777 == 0o644
    assert not backup.exists()


async def test_after_a_crash_the_next_start_puts_the_file_back(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_bytes(PREVIOUS)
    await host_dns(tmp_path).apply([SERVICE], ["mesh.internal"])  # and never reverted
    again = host_dns(tmp_path)
    await again.recover()
    assert conf.read_bytes() == PREVIOUS
    assert again.read() == PREVIOUS.decode()  # what the resolver forwards to comes from it
    # a file changed by someone else since is theirs: left as it is, the backup dropped
    await host_dns(tmp_path).apply([SERVICE], ["mesh.internal"])
    conf.write_bytes(b"nameserver 198.51.100.1\n")
    await host_dns(tmp_path).recover()
    assert conf.read_bytes() == b"nameserver 198.51.100.1\n"
    assert not (tmp_path / "state" / "resolv.conf.pre-wgpy").exists()


async def test_a_file_another_node_wrote_is_left_alone(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_bytes(PREVIOUS)
    first = host_dns(tmp_path, "wgpy0")
    await first.apply([SERVICE], ["mesh.internal"])
    written = conf.read_bytes()
    second = HostDNS("wgpy1", StateDir(tmp_path / "other"), LOG, path=conf, which=lambda p: None)
    assert await second.apply([SERVICE], ["mesh.internal"]) is None
    await second.revert()
    assert conf.read_bytes() == written
    await first.revert()
    assert conf.read_bytes() == PREVIOUS


class Commands:
    """What the node would run (resolvconf and resolvectl are not on the test host)."""

    def __init__(self) -> None:
        self.ran: list[tuple[list[str], str | None]] = []

    async def __call__(self, argv: list[str], *, stdin: str | None = None) -> str:
        self.ran.append((list(argv), stdin))
        return ""


async def test_resolvconf_and_resolved_modes_as_commands(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_bytes(PREVIOUS)
    run = Commands()
    dns = host_dns(
        tmp_path, run=run, which=lambda p: "/sbin/resolvconf" if p == "resolvconf" else None
    )
    assert await dns.apply([SERVICE], ["mesh.internal"]) is Mode.RESOLVCONF
    await dns.revert()
    assert run.ran == [
        (
            ["resolvconf", "-a", "wgpy0", "-m", "0", "-x"],
            "nameserver 100.100.100.100\nsearch mesh.internal\n",
        ),
        (["resolvconf", "-d", "wgpy0", "-f"], None),
    ]
    assert conf.read_bytes() == PREVIOUS  # resolvconf writes it, not the node
    conf.write_text("nameserver 127.0.0.53\n")
    run.ran.clear()
    dns = host_dns(tmp_path, run=run, which=lambda p: f"/usr/bin/{p}")
    assert await dns.apply([SERVICE], ["mesh.internal"]) is Mode.RESOLVED
    await dns.revert()
    assert [argv for argv, _ in run.ran] == [
        ["resolvectl", "dns", "wgpy0", "100.100.100.100"],
        ["resolvectl", "domain", "wgpy0", "mesh.internal"],
        ["resolvectl", "default-route", "wgpy0", "false"],
        ["resolvectl", "revert", "wgpy0"],
    ]


async def ask(port: int, name: str, host: str = "127.0.0.1") -> DNSRecord:
    query = DNSRecord.question(name)
    data = await asyncio.to_thread(query.send, host, port, timeout=5)
    return DNSRecord.parse(data)


async def test_the_service_answers_from_the_map_and_sets_the_host_up(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_bytes(PREVIOUS)
    host = FakeHost()
    loopback = ipaddress.ip_interface("127.0.0.1/32")
    service = NameService(
        "wgpy0",
        host,
        LOG,
        host_dns=host_dns(tmp_path),
        state=StateDir(tmp_path / "state"),
        port=0,
        service_addresses=[loopback],
    )
    await service.start(NODE, [peer(2, "nas")])
    try:
        assert StateDir(tmp_path / "state").read_dns() == {
            "listening": ["127.0.0.1"],
            "base_domain": "mesh.internal",
            "split_domains": {},
            "accept_dns": True,
            "host": "direct",
            "exit_node_resolver": None,
        }
        assert host.addresses == [loopback]  # the service address, put on the interface
        assert host.service_addresses == [loopback]  # as one that is never a source
        assert service.upstreams == [("192.0.2.53", 53)]  # read before the file was changed
        port = service.listening[0][1]
        assert [str(r.rdata) for r in (await ask(port, "nas.bob.mesh.internal")).rr] == [
            "100.64.0.2"
        ]
        assert (await ask(port, "box.mesh.internal")).header.rcode == RCODE.NXDOMAIN
        service.update(NODE, [peer(2, "nas"), peer(3, "box")])  # a map change
        assert [str(r.rdata) for r in (await ask(port, "box.mesh.internal")).rr] == ["100.64.0.3"]
        assert "nameserver 127.0.0.1" in conf.read_text()
    finally:
        await service.close()
    assert conf.read_bytes() == PREVIOUS
    assert service.servers == []


async def test_accept_dns_false_leaves_the_host_alone(tmp_path: Path) -> None:
    service = NameService(
        "wgpy0",
        FakeHost(),
        LOG,
        host_dns=None,
        port=0,
        service_addresses=[ipaddress.ip_interface("127.0.0.1/32")],
    )
    await service.start(NODE, [])
    try:
        port = service.listening[0][1]
        answer = await ask(port, "laptop.mesh.internal")
        assert [str(r.rdata) for r in answer.rr] == ["100.64.0.1"]
    finally:
        await service.close()


async def test_a_new_base_domain_and_new_addresses_are_taken_up(tmp_path: Path) -> None:
    """The server restarted with another --base-domain: the host searches the new one; the
    node's overlay address changed: the resolver listens there (here: loopback addresses)."""
    conf = tmp_path / "resolv.conf"
    conf.write_bytes(PREVIOUS)
    loopback = ipaddress.ip_interface("127.0.0.1/32")
    service = NameService(
        "wgpy0", FakeHost(), LOG, host_dns=host_dns(tmp_path), port=0, service_addresses=[loopback]
    )
    await service.start(NODE, [])
    try:
        assert "search mesh.internal example.com" in conf.read_text()
        moved = parse_node(
            {"public_key": key(1), "hostname": "laptop", "ipv4": "127.0.0.2",
             "name": "laptop.alice.corp.example"}
        )  # fmt: skip
        service.update(moved, [])
        await service.settled()
        assert "search corp.example example.com" in conf.read_text()
        assert ipaddress.ip_address("127.0.0.2") in {
            ipaddress.ip_address(host) for host, _ in service.listening
        }
        answer = await ask(service.listening[-1][1], "laptop.corp.example", "127.0.0.2")
        assert [str(r.rdata) for r in answer.rr] == ["127.0.0.2"]
    finally:
        await service.close()
    assert conf.read_bytes() == PREVIOUS


async def test_split_domains_from_the_server_are_routed_to_the_node(tmp_path: Path) -> None:
    """With systemd-resolved, the admin's split domains become routing-only domains of the
    link; the resolver sends their names to their own resolvers."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\n")
    run = Commands()

    async def fetch() -> Any:
        return {"base_domain": "mesh.internal", "domains": {"corp.example": ["10.1.0.53"]}}

    service = NameService(
        "wgpy0",
        FakeHost(),
        LOG,
        host_dns=host_dns(tmp_path, run=run, which=lambda p: f"/usr/bin/{p}"),
        fetch=fetch,
        port=0,
        service_addresses=[ipaddress.ip_interface("127.0.0.1/32")],
    )
    await service.start(NODE, [])
    try:
        assert service.split == {"corp.example": [("10.1.0.53", 53)]}
        assert service.servers[0].upstreams_for("db.corp.example") == [("10.1.0.53", 53)]
        assert ["resolvectl", "domain", "wgpy0", "mesh.internal", "~corp.example"] in [
            argv for argv, _ in run.ran
        ]
    finally:
        await service.close()


async def test_a_service_address_a_node_holds_stays_that_nodes(tmp_path: Path) -> None:
    """A node registered before the addresses were reserved may have fd7a:115c:a1e0::53 (its
    index was 83): the resolver does not take it from that peer."""
    host = FakeHost()
    held = parse_peer(
        {"public_key": key(83), "hostname": "old", "user": "bob",
         "name": "old.bob.mesh.internal",
         "addresses": ["100.64.0.83/32", "fd7a:115c:a1e0::53/128"]}
    )  # fmt: skip
    loopback = ipaddress.ip_interface("127.0.0.1/32")
    service = NameService(
        "wgpy0",
        host,
        LOG,
        host_dns=None,
        port=0,
        service_addresses=[loopback, ipaddress.ip_interface("fd7a:115c:a1e0::53/128")],
    )
    await service.start(NODE, [held])
    try:
        assert host.addresses == [loopback]
    finally:
        await service.close()


async def test_other_names_follow_the_exit_node_in_use(tmp_path: Path) -> None:
    """While an exit node is used the names that are not the mesh's go to its resolver (the
    host's may sit on a LAN the exit node does not reach), systemd-resolved sends the link
    every lookup (``~.``, default route), and both go back when it is not used any more."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\n")
    run = Commands()
    service = NameService(
        "wgpy0",
        FakeHost(),
        LOG,
        host_dns=host_dns(tmp_path, run=run, which=lambda p: f"/usr/bin/{p}"),
        state=StateDir(tmp_path / "state"),
        port=0,
        service_addresses=[ipaddress.ip_interface("127.0.0.1/32")],
    )
    await service.start(NODE, [peer(2, "exit")])
    try:
        host_resolvers = service.servers[0].upstreams
        assert host_resolvers == [("127.0.0.53", 53)]
        run.ran.clear()
        service.follow_exit_node(ipaddress.ip_address("100.64.0.2"))
        assert service.servers[0].upstreams_for("example.org") == [("100.64.0.2", 53)]
        assert service.servers[0].upstreams_for("nas.bob.mesh.internal") == [("100.64.0.2", 53)]
        await asyncio.wait_for(asyncio.shield(service._refresh), 5)  # type: ignore[arg-type]
        assert [argv for argv, _ in run.ran] == [
            ["resolvectl", "dns", "wgpy0", "127.0.0.1"],
            ["resolvectl", "domain", "wgpy0", "mesh.internal", "~."],
            ["resolvectl", "default-route", "wgpy0", "true"],
        ]
        assert StateDir(tmp_path / "state").read_dns()["exit_node_resolver"] == "100.64.0.2"
        run.ran.clear()
        service.follow_exit_node(ipaddress.ip_address("100.64.0.2"))  # the same: nothing
        assert run.ran == [] and service._refresh is not None
        service.follow_exit_node(None)
        assert service.servers[0].upstreams == host_resolvers
        await asyncio.wait_for(asyncio.shield(service._refresh), 5)  # type: ignore[arg-type]
        assert ["resolvectl", "default-route", "wgpy0", "false"] in [a for a, _ in run.ran]
        assert StateDir(tmp_path / "state").read_dns()["exit_node_resolver"] is None
    finally:
        await service.close()
