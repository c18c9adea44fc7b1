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
import base64
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aioice.candidate import Candidate, candidate_priority

from wgpy.device.interface import Interface
from wgpy.nat.ice import new_ufrag, parse_remote
from wgpy.nat.paths import KEEPALIVE_INTERVAL, PathManager
from wgpy.nat.stunmux import StunMux
from wgpy.protocol.crypto import generate_private_key, public_key

WAIT_FOR_PEER = 20.0  # seconds


def write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


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
    write_json(
        directory / f"{me}.json",
        {
            "public_key": base64.b64encode(public_key(key)).decode(),
            "ufrag": ufrag,
            "candidates": [candidate.to_sdp()],
            "inner": inner,
        },
    )
    deadline = loop.time() + WAIT_FOR_PEER
    keys = []
    for name in peer.split(","):
        peer_file = directory / f"{name}.json"
        while not peer_file.exists():
            if loop.time() > deadline:
                raise SystemExit(f"{peer_file} did not appear within {WAIT_FOR_PEER:g} s")
            await asyncio.sleep(0.05)
        other = json.loads(peer_file.read_text())
        keys.append(base64.b64decode(other["public_key"]))
        iface.device.add_peer(keys[-1], allowed_ips=[f"{other['inner']}/32"])
        remote, _ = parse_remote(other["ufrag"], other["candidates"])
        paths.set_remote(keys[-1], remote)
    other_key = keys[0]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            state = paths.path(other_key)
            device_peer = iface.device.peers[other_key]
            endpoint = device_peer.endpoint
            write_json(
                directory / f"{me}.status.json",
                {
                    **state.to_json(),
                    "device_endpoint": None if endpoint is None else list(endpoint[:2]),
                    "roaming": device_peer.roaming,
                    "drops": dict(paths.drops),
                },
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        paths.close()
        mux.close()
        iface.close()


if __name__ == "__main__":
    n, p, h, i, d, s, o = sys.argv[1:8]
    k = float(sys.argv[8]) if len(sys.argv) > 8 else KEEPALIVE_INTERVAL
    asyncio.run(main(n, int(p), h, i, Path(d), s, o, k))
