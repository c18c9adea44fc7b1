"""wgpy.mesh.client.hostnet: the node's addresses and routes on the host, with a recording
HostNetwork and a real Device (no interface, no ``ip``)."""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Sequence
from typing import Any

import pytest

from wgpy import log
from wgpy.mesh.client.hostnet import HostNet
from wgpy.mesh.client.system import HostNetworkError
from wgpy.protocol.crypto import generate_private_key, public_key
from wgpy.protocol.device import Device

from .fakes import FakeHost

iface = ipaddress.ip_interface
net = ipaddress.ip_network


class FailingHost(FakeHost):
    """Refuses the addresses and routes named in ``refuse``."""

    def __init__(self, refuse: Sequence[Any]) -> None:
        super().__init__()
        self.refuse = set(refuse)

    async def add_address(self, name: str, address: Any) -> None:
        if address in self.refuse:
            raise HostNetworkError(f"cannot add {address}")
        await super().add_address(name, address)

    async def set_routes(self, name: str, add: Any, remove: Any) -> None:
        if self.refuse & set(add):
            raise HostNetworkError("cannot route")
        await super().set_routes(name, add, remove)


def make(host: FakeHost) -> tuple[HostNet, Device]:
    device = Device(generate_private_key(os.urandom), rng=os.urandom, wall_clock=time.time_ns)
    return HostNet("wgtest0", device, host, log.get_logger(component="test")), device


def add_peer(device: Device, *allowed: str) -> bytes:
    key = public_key(generate_private_key(os.urandom))
    device.add_peer(key, allowed_ips=list(allowed))
    return key


async def test_configure_adds_the_addresses_then_brings_the_link_up() -> None:
    host = FakeHost()
    hostnet, _ = make(host)
    wanted = [iface("100.64.0.1/32"), iface("fd7a:115c:a1e0::1/128")]
    await hostnet.configure(wanted, 1380)
    assert host.addresses == wanted == hostnet.addresses
    assert host.link == ("wgtest0", 1380)


async def test_configure_fails_on_ipv4_but_goes_on_without_ipv6() -> None:
    v4, v6 = iface("100.64.0.1/32"), iface("fd7a:115c:a1e0::1/128")
    host = FailingHost([v6])
    hostnet, _ = make(host)
    await hostnet.configure([v4, v6], 1420)
    assert hostnet.addresses == [v4] and host.link == ("wgtest0", 1420)
    host = FailingHost([v4])
    hostnet, _ = make(host)
    with pytest.raises(HostNetworkError):
        await hostnet.configure([v4, v6], 1420)
    assert host.link is None


async def test_set_addresses_removes_the_old_and_keeps_the_rest() -> None:
    host = FakeHost()
    hostnet, _ = make(host)
    old, kept, new = iface("100.64.0.1/32"), iface("fd7a:115c:a1e0::1/128"), iface("100.64.0.2/32")
    await hostnet.configure([old, kept], 1420)
    await hostnet.set_addresses([kept, new])
    assert host.addresses == [kept, new] and hostnet.addresses == [kept, new]


async def test_routes_follow_the_device_peers() -> None:
    host = FakeHost()
    hostnet, device = make(host)
    one = add_peer(device, "100.64.0.2/32")
    add_peer(device, "100.64.0.3/32", "10.1.0.0/16")
    await hostnet.sync_routes(strict=True)
    assert host.routes == {net("100.64.0.2/32"), net("100.64.0.3/32"), net("10.1.0.0/16")}
    calls = host.route_calls
    await hostnet.sync_routes(strict=True)  # nothing changed: no call
    assert host.route_calls == calls
    device.remove_peer(one)
    await hostnet.sync_routes(strict=False)
    assert host.routes == {net("100.64.0.3/32"), net("10.1.0.0/16")} == hostnet.routes


async def test_a_refused_route_raises_when_strict_and_is_tried_again_otherwise() -> None:
    host = FailingHost([net("10.9.0.0/16")])
    hostnet, device = make(host)
    add_peer(device, "10.9.0.0/16")
    with pytest.raises(HostNetworkError):
        await hostnet.sync_routes(strict=True)
    await hostnet.sync_routes(strict=False)  # logged
    assert hostnet.routes == set()
    host.refuse.clear()
    await hostnet.sync_routes(strict=False)
    assert host.routes == {net("10.9.0.0/16")} == hostnet.routes
