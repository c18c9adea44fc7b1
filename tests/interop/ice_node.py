"""One ICE node for namespace tests: a wgpy Interface on a real TUN, a StunMux on its
WireGuard port and a PathManager, with no coordination server: the test hands the two nodes
each other's description through files.

    python ice_node.py NAME PORT HOST INNER DIR SELF PEER [KEEPALIVE]

creates the interface NAME on UDP PORT, writes DIR/SELF.json (its public key, ICE ufrag, its
host candidate HOST:PORT and its tunnel address INNER), waits for DIR/PEER.json, adds that
peer (no endpoint: ICE finds one) and checks; DIR/SELF.status.json then says every 0.1 s what
the path manager chose. PEER may be several names, comma-separated: each is added the same
way, and the status is the first one's. KEEPALIVE: seconds between checks of an idle path
(25 by default). Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from aioice.candidate import Candidate, candidate_priority
from node_files import add_peer, describe, report_until_stopped, wait_node

from wgpy.device.interface import Interface
from wgpy.nat.ice import new_ufrag
from wgpy.nat.paths import KEEPALIVE_INTERVAL, PathManager
from wgpy.nat.stunmux import StunMux
from wgpy.protocol.crypto import generate_private_key, public_key

WAIT_FOR_PEER = 20.0  # seconds


async def main(
    name: str,
    port: int,
    host: str,
    inner: str,
    directory: Path,
    me: str,
    peer: str,
    keepalive: float = KEEPALIVE_INTERVAL,
) -> None:
    loop = asyncio.get_running_loop()
    key = generate_private_key(os.urandom)
    iface = Interface(name, listen_port=port, private_key=key)
    mux = StunMux(iface.bind, loop)
    ufrag = new_ufrag(os.urandom)
    candidate = Candidate(
        foundation="host",
        component=1,
        transport="udp",
        priority=candidate_priority(1, "host"),
        host=host,
        port=iface.listen_port,
        type="host",
    )
    paths = PathManager(
        iface,
        mux,
        public_key=public_key(key),
        ufrag=ufrag,
        local_candidates=lambda: [candidate],
        keepalive_interval=keepalive,
    )
    mux.on_request = paths.handle_request
    describe(directory, me, public_key(key), ufrag, [candidate.to_sdp()], inner)
    deadline = loop.time() + WAIT_FOR_PEER
    keys = []
    for other in peer.split(","):
        node = await wait_node(directory, other, max(0.0, deadline - loop.time()))
        keys.append(add_peer(iface, paths, node))
    other_key = keys[0]

    def status() -> dict[str, Any]:
        state = paths.path(other_key)
        device_peer = iface.device.peers[other_key]
        endpoint = device_peer.endpoint
        return {
            **state.to_json(),
            "device_endpoint": None if endpoint is None else list(endpoint[:2]),
            "roaming": device_peer.roaming,
            "drops": dict(paths.drops),
        }

    try:
        await report_until_stopped(directory / f"{me}.status.json", status)
    finally:
        paths.close()
        mux.close()
        iface.close()


if __name__ == "__main__":
    n, p, h, i, d, s, o = sys.argv[1:8]
    k = float(sys.argv[8]) if len(sys.argv) > 8 else KEEPALIVE_INTERVAL
    asyncio.run(main(n, int(p), h, i, Path(d), s, o, k))
