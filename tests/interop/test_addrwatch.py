"""A real netlink socket in a namespace announces what the node must notice at once: an
address added to or removed from eth0, a new default route; the mesh interface's own
changes are left out (wgpy.mesh.client.addrwatch)."""

from __future__ import annotations

import time

import pytest

from .netns import PYTHON, Lab, wait_for

pytestmark = pytest.mark.root

WATCHER = """
import asyncio, sys
from wgpy.mesh.client.addrwatch import AddressWatch

async def main():
    loop = asyncio.get_running_loop()
    watch = AddressWatch(lambda: print("changed", flush=True), loop, exclude="mesh0")
    assert watch.open() is None
    print("ready", flush=True)
    await asyncio.sleep(20)

asyncio.run(main())
"""


def test_address_and_route_changes_are_announced_mesh_ones_are_not(lab: Lab) -> None:
    ns = lab.namespace("watch")
    for scope in ("all", "default"):  # no IPv6 link-local addresses appearing at random
        ns.sysctl(f"net.ipv6.conf.{scope}.disable_ipv6", 1)
    for dev in ("eth0", "mesh0"):
        ns.ip("link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
        ns.ip("link", "set", f"{dev}p", "up")
        ns.ip("link", "set", dev, "up")
    watcher = ns.spawn([PYTHON, "-c", WATCHER], log="watcher")
    wait_for(lambda: "ready" in watcher.output() or not watcher.alive, timeout=10, what="ready")
    assert watcher.alive, watcher.output()

    def changes() -> int:
        return watcher.output().count("changed")

    ns.ip("addr", "add", "100.64.0.1/32", "dev", "mesh0")  # the node's own overlay address
    ns.ip("route", "add", "100.64.0.2/32", "dev", "mesh0")
    ns.ip("addr", "add", "192.168.7.10/24", "dev", "eth0")  # readdressed: seen
    wait_for(lambda: changes() >= 1, timeout=5, interval=0.05, what="the new address")
    seen = changes()
    ns.ip("route", "add", "default", "via", "192.168.7.1")
    wait_for(lambda: changes() > seen, timeout=5, interval=0.05, what="the new route")
    seen = changes()
    ns.ip("addr", "del", "192.168.7.10/24", "dev", "eth0")
    wait_for(lambda: changes() > seen, timeout=5, interval=0.05, what="the address gone")
    time.sleep(0.5)  # its routes go with it, announced a little later
    seen = changes()
    ns.ip("addr", "add", "100.64.0.3/32", "dev", "mesh0")
    ns.ip("route", "add", "100.64.0.4/32", "dev", "mesh0")
    time.sleep(0.5)
    assert changes() == seen, watcher.output()  # the mesh interface's own: not announced
    ns.ip("addr", "add", "192.168.8.10/24", "dev", "eth0")  # but the underlay's still are
    wait_for(lambda: changes() > seen, timeout=5, interval=0.05, what="the last address")
