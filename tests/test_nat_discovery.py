"""Candidates and STUN discovery (wgpy.nat.discovery): priorities and foundations as RFC 8445
computes them, the candidate list, ICE credentials; then discovery through a StunMux on a
MemoryBind (STUN servers playing NATs) and over loopback on a real UdpBind."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from aioice import Candidate
from stun_fakes import MemoryStunServer, UdpStunServer

from wgpy.device.memorybind import MemoryBind, MemoryNetwork
from wgpy.device.udp import UdpBind, sticky_source
from wgpy.endpoint import Endpoint
from wgpy.nat.discovery import (
    MAX_CANDIDATES,
    Discovery,
    IceCredentials,
    StunProbe,
    candidate_list,
    candidate_priority,
    discover,
    host_candidates,
    local_address,
    probe,
    resolve,
)
from wgpy.nat.stunmux import StunMux

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 20))


def ep(text: str) -> Endpoint:
    return Endpoint.parse_address(text)


# ---------------------------------------------------------------------- without I/O


def test_priority_is_rfc_8445s_formula() -> None:
    # RFC 8445 5.1.2.1 with the recommended type preferences (5.1.2.2)
    assert candidate_priority("host", 65535) == 126 * 2**24 + 65535 * 2**8 + 255 == 2130706431
    assert candidate_priority("srflx", 65535) == 1694498815
    assert candidate_priority("relay", 0) == 255
    with pytest.raises(ValueError, match="local preference"):
        candidate_priority("host", 65536)


def test_host_candidates_each_have_their_own_preference_ipv6_first() -> None:
    hosts = host_candidates(["192.0.2.10", "2001:db8::10", "192.0.2.11", "192.0.2.10"], 41641)
    assert [(c.type, c.host, c.port) for c in hosts] == [
        ("host", "192.0.2.10", 41641),
        ("host", "2001:db8::10", 41641),
        ("host", "192.0.2.11", 41641),
    ]
    by_host = {c.host: c.priority for c in hosts}
    assert by_host["2001:db8::10"] > by_host["192.0.2.10"] > by_host["192.0.2.11"]
    assert len({c.foundation for c in hosts}) == 3  # one base each
    for c in hosts:
        assert Candidate.from_sdp(c.to_sdp()).to_sdp() == c.to_sdp()
        assert c.priority >> 24 == 126 and c.component == 1


def test_candidate_list_with_reflexive_ones() -> None:
    discovery = Discovery(
        (
            StunProbe(ep("198.51.100.1:3478"), ep("203.0.113.5:62000"), 0.01, "192.0.2.10"),
            StunProbe(ep("198.51.100.2:3478"), ep("203.0.113.5:62000"), 0.01, "192.0.2.10"),
            StunProbe(ep("[2001:db8:1::1]:3478"), ep("[2001:db8::10]:41641"), 0.01, "2001:db8::10"),
            StunProbe(ep("198.51.100.3:3478"), error="no answer"),
        )
    )
    candidates = candidate_list(["192.0.2.10", "2001:db8::10"], 41641, discovery)
    kinds = [(c.type, c.host, c.port) for c in candidates]
    # highest priority first; the IPv6 mapping is the host address itself: no srflx for it
    assert kinds == [
        ("host", "2001:db8::10", 41641),
        ("host", "192.0.2.10", 41641),
        ("srflx", "203.0.113.5", 62000),
    ]
    srflx = candidates[2]
    assert (srflx.related_address, srflx.related_port) == ("192.0.2.10", 41641)
    assert srflx.priority >> 24 == 100
    assert "raddr 192.0.2.10 rport 41641" in srflx.to_sdp()
    assert discovery.udp
    assert discovery.public(4) == ep("203.0.113.5:62000")
    assert discovery.public(6) == ep("[2001:db8::10]:41641")
    assert discovery.mapping_varies(4) is False
    assert discovery.mapping_varies(6) is None  # one server: cannot be told


def test_mapping_varies_and_limits() -> None:
    probes = tuple(
        StunProbe(ep(f"198.51.100.{i}:3478"), ep(f"203.0.113.5:{62000 + i}"), 0.01, None)
        for i in range(1, 9)
    )
    discovery = Discovery(probes)
    assert discovery.mapping_varies() is True
    many = [f"192.0.2.{i}" for i in range(1, 40)]
    candidates = candidate_list(many, 41641, discovery)
    assert len(candidates) == MAX_CANDIDATES
    srflx = [c for c in candidates if c.type == "srflx"]
    assert len(srflx) == 4  # kept, not crowded out by the host addresses
    assert srflx[0].related_address == "0.0.0.0"  # no base known
    assert len({c.priority for c in candidates}) == len(candidates)
    assert all(len(c.to_sdp()) <= 256 for c in candidates)
    # two probes to the same server address do not tell a hard NAT
    same = Discovery(
        (
            StunProbe(ep("198.51.100.1:3478"), ep("203.0.113.5:1"), 0.01, None),
            StunProbe(ep("198.51.100.1:3478"), ep("203.0.113.5:2"), 0.01, None),
        )
    )
    assert same.mapping_varies() is None
    assert not Discovery().udp


def test_ice_credentials() -> None:
    credentials = IceCredentials.generate(random.Random(1).randbytes)
    assert credentials == IceCredentials.generate(random.Random(1).randbytes)
    assert len(credentials.ufrag) == 8
    assert all(c.isascii() and (c.isalnum() or c in "+/") for c in credentials.ufrag)
    assert not hasattr(credentials, "pwd")  # the checks' keys are per pair, never published
    assert IceCredentials.generate() != IceCredentials.generate()


def test_local_address_from_the_sticky_source() -> None:
    assert local_address(("198.51.100.1", 3478, sticky_source("192.0.2.10"))) == "192.0.2.10"
    assert local_address(("2001:db8::1", 3478, sticky_source("2001:db8::10"))) == "2001:db8::10"
    assert local_address(("198.51.100.1", 3478)) is None
    assert local_address(("198.51.100.1", 3478, (0, 0, b""))) is None


# ---------------------------------------------------------------------- through the mux


def test_discovery_through_the_mux_in_memory() -> None:
    async def scenario() -> None:
        network = MemoryNetwork()
        bind = MemoryBind(network, "192.0.2.10", 41641)
        loop = asyncio.get_running_loop()
        bind.watch(loop, lambda reader: bind.read_batch(reader))
        mux = StunMux(bind, loop)
        easy = [
            MemoryStunServer(network, "198.51.100.1"),
            MemoryStunServer(network, "198.51.100.2"),
        ]
        ports = iter(range(62000, 62100))

        def fully_random(source: tuple[str, int]) -> tuple[str, int]:
            return ("203.0.113.5", next(ports))

        for server in easy:
            server.mapped = lambda source: ("203.0.113.5", 62000)
        servers = [ep("198.51.100.1:3478"), ep("198.51.100.2:3478"), ep("198.51.100.9:3478")]
        found = await discover(mux, servers + servers[:1], rto=0.02, retries=2)
        assert len(found.probes) == 3  # each server once
        assert found.udp and found.public(4) == ep("203.0.113.5:62000")
        assert found.mapping_varies() is False
        silent = found.probes[2]
        assert silent.mapped is None and silent.error is not None
        assert silent.error.startswith("no answer from 198.51.100.9:3478")
        for server in easy:
            server.mapped = fully_random
        found = await discover(mux, servers[:2], rto=0.02, retries=2)
        assert found.mapping_varies() is True
        # a server that answers with the wrong family or no address is not believed
        easy[0].mapped = lambda source: ("2001:db8::5", 1)
        bad = await probe(mux, servers[0], rto=0.02, retries=1)
        assert (
            bad.mapped is None
            and bad.error == "198.51.100.1:3478 answered with an unusable address"
        )

    run(scenario)


def test_discovery_over_loopback_from_the_wireguard_socket() -> None:
    async def scenario() -> None:
        bind = UdpBind(0)
        loop = asyncio.get_running_loop()
        bind.watch(loop, lambda reader: bind.read_batch(reader))
        mux = StunMux(bind, loop)
        hosts = ["127.0.0.1"] + (["::1"] if bind.v6 is not None and _loopback6() else [])
        servers = [await UdpStunServer.start(h) for h in hosts]
        try:
            found = await discover(mux, [Endpoint(*s.key) for s in servers])
            for server, p in zip(servers, found.probes, strict=True):
                assert p.mapped == Endpoint(server.key[0], bind.port)  # the WireGuard port
                assert p.local == server.key[0]  # the answer came to that address
                assert p.rtt is not None and 0 < p.rtt < 1
            candidates = candidate_list([ipaddress.ip_address("192.0.2.10")], bind.port, found)
            assert {c.type for c in candidates} == {"host", "srflx"}
        finally:
            mux.close()
            bind.unwatch(loop)
            bind.close()
            for server in servers:
                server.close()

    run(scenario)


def test_stun_server_names_are_resolved_to_every_address() -> None:
    async def scenario() -> None:
        names = [
            Endpoint("localhost", 3478),
            Endpoint("192.0.2.1", 3478),
            Endpoint("no-such-host.invalid", 3478),
            Endpoint("192.0.2.1", 3478),
        ]
        found, failed = await resolve(names)
        assert Endpoint("127.0.0.1", 3478) in found and Endpoint("192.0.2.1", 3478) in found
        assert len(found) == len(set(found))
        (bad,) = failed
        assert bad.server == Endpoint("no-such-host.invalid", 3478) and bad.mapped is None
        assert bad.error is not None and bad.error.startswith("cannot resolve no-such-host.invalid")

    run(scenario)


def _loopback6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
