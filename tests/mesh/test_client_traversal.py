"""The node's NAT traversal wiring (wgpy.mesh.client.traversal), without a node: what it opens
on an interface with and without a WireGuard port, what it writes to nat.json, and the
keepalives of peers without ICE."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from wgpy.device.memorybind import MemoryBind, MemoryNetwork
from wgpy.log import get_logger
from wgpy.mesh.client.api import NodeClient
from wgpy.mesh.client.candidates import CandidateReporter
from wgpy.mesh.client.state import StateDir
from wgpy.mesh.client.traversal import Traversal
from wgpy.nat.discovery import IceCredentials
from wgpy.nat.lifetime import Lifetime
from wgpy.protocol.crypto import generate_private_key, public_key

from .fakes import FakeHost, FakeInterface


def _key() -> bytes:
    return generate_private_key(os.urandom)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30.0))


class Bound(FakeInterface):
    def __init__(self, network: MemoryNetwork) -> None:
        super().__init__("wgtest0", _key(), 41641)
        self.bind = MemoryBind(network, "192.0.2.10", self.listen_port)


def traversal(iface: FakeInterface, state: StateDir, **options: Any) -> Traversal:
    client = NodeClient("http://127.0.0.1:9", token=None, timeout=1.0)
    log = get_logger(component="mesh")
    events: list[Any] = []
    return Traversal(
        iface,
        public_key=public_key(_key()),
        candidates=CandidateReporter(client, IceCredentials.generate(), log),
        host=FakeHost(),
        state=state,
        ca_cert=None,
        **{"nat_keepalive": 25.0, "measure_lifetime": False, "candidate_interval": 60.0, **options},
        on_peers_changed=lambda: events.append("peers"),
        on_relay_status=events.append,
        on_addresses_changed=lambda: events.append("addresses"),
        log=log,
    )


def test_without_a_wireguard_port_only_the_keepalives_and_the_candidate_loop(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        iface = FakeInterface("wgtest0", _key(), 41641)
        state = StateDir(tmp_path / "state")
        t = traversal(iface, state, nat_keepalive=10.0)
        t.open()
        assert (t.mux, t.paths, t.relays, t.lifetime) == (None, None, None, None)
        assert state.read_nat() == {**_nat(10.0), "keepalive_source": "configured"}
        peer = iface.device.add_peer(public_key(_key()))
        t.keep_alive_without_ice()  # no ICE: WireGuard's keepalive, as wg-quick users set it
        assert peer.persistent_keepalive == 10
        assert t.path_json(peer.public_key) == {}
        loops = t.start()
        assert len(loops) == 1  # the candidate loop; no lifetime watch, no drops to look at
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await t.close()

    run(main())


def test_on_a_wireguard_port_the_mux_takes_the_demux_and_gives_it_back(tmp_path: Path) -> None:
    async def main() -> None:
        iface = Bound(MemoryNetwork())
        state = StateDir(tmp_path / "state")
        t = traversal(iface, state, measure_lifetime=True)
        t.open()
        assert t.mux is not None and iface.bind.demux == t.mux.datagram_received
        assert t.paths is not None and t.lifetime is not None
        assert t.relays is None  # the interface cannot take relayed datagrams (no receive)
        nat = state.read_nat()
        assert nat is not None and nat["keepalive_source"] == "measuring"
        assert nat["drops"] == {}
        t.mux.datagram_received(b"\xff" * 40, ("198.51.100.66", 4444))
        t.look_at_drops(0.0)
        nat = state.read_nat()
        assert nat is not None and nat["drops"] == {"not-stun": 1}
        assert nat["keepalive_source"] == "measuring"  # the rest stays as it was
        loops = t.start()
        assert len(loops) == 3  # candidates, the lifetime watch, the drops
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await t.close()
        assert iface.bind.demux is None and t.mux.closed

    run(main())


def _nat(keepalive: float) -> dict[str, Any]:
    return Lifetime(keepalive).to_json()
