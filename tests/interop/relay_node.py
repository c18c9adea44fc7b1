"""One node with a TURN relay for namespace tests: a wgpy Interface on a real TUN, ICE on its
WireGuard port, and a relay allocation (wgpy.nat.relay), with no coordination server: the test
hands the nodes each other's description through files.

    python relay_node.py NAME PORT INNER DIR SELF PEER CONFIG

CONFIG is a JSON file: ``{"turn": {"urls": [...], "username", "password", "expires"},
"ca_file": PATH, "host": ADDRESS or null, "stun": ["H:P", ...]}``. The node creates the
interface NAME on UDP PORT, allocates on the relay (waiting up to 10 s), asks the STUN servers
where it is, writes DIR/SELF.json (its public key, ICE credentials, its candidates: host,
server-reflexive and relayed, and its tunnel address INNER), waits for DIR/PEER.json, adds that
peer and checks; DIR/SELF.status.json then says every 0.1 s what the path manager chose and
which relay transport carries it. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from node_files import add_peer, describe, report_until_stopped, wait_node

from wgpy.device.interface import Interface
from wgpy.endpoint import Endpoint, RelayKey
from wgpy.log import configure
from wgpy.nat.discovery import candidate_list, discover
from wgpy.nat.ice import new_ufrag
from wgpy.nat.paths import PathManager
from wgpy.nat.relay import RelayManager
from wgpy.nat.servers import parse_nat_config
from wgpy.nat.stunmux import StunMux
from wgpy.protocol.crypto import generate_private_key, public_key

WAIT = 20.0  # seconds for the relay and the peer's description


async def main(
    name: str, port: int, inner: str, directory: Path, me: str, peer: str, config: Path
) -> None:
    configure("info")
    loop = asyncio.get_running_loop()
    settings = json.loads(config.read_text())
    nat = parse_nat_config({"stun": settings.get("stun", []), "turn": [settings["turn"]]})
    key = generate_private_key(os.urandom)
    iface = Interface(name, listen_port=port, private_key=key)
    mux = StunMux(iface.bind, loop)
    relays = RelayManager(
        iface.receive, ssl_context=ssl.create_default_context(cafile=settings["ca_file"])
    )
    relays.update(nat.turn)
    deadline = loop.time() + WAIT
    while relays.link is None:
        if loop.time() > deadline:
            raise SystemExit(f"no relay allocation within {WAIT:g} s: {relays.attempts}")
        await asyncio.sleep(0.05)
    discovery = await discover(mux, nat.stun) if nat.stun else None
    hosts = [settings["host"]] if settings.get("host") else []

    def local() -> list[Any]:
        found: list[Any] = candidate_list(hosts, iface.listen_port, discovery)
        return found + relays.candidates()

    ufrag = new_ufrag(os.urandom)
    paths = PathManager(
        iface,
        mux,
        public_key=public_key(key),
        ufrag=ufrag,
        local_candidates=local,
        retry_interval=float(settings.get("retry", 30.0)),
    )
    mux.on_request = paths.handle_request
    candidates = [c.to_sdp() for c in local()]
    describe(directory, me, public_key(key), ufrag, candidates, inner)
    other_key = add_peer(iface, paths, await wait_node(directory, peer, WAIT))

    def status() -> dict[str, Any]:
        state = paths.path(other_key)
        endpoint = iface.device.peers[other_key].endpoint
        link = relays.link
        return {
            **state.to_json(),
            "device_endpoint": None if endpoint is None else str(Endpoint(*endpoint[:2])),
            "through_relay": type(endpoint) is RelayKey,
            "relay_transport": None if link is None else link.url.kind,
            "relayed": None if link is None else list(link.relayed),
            "relay_sent": 0 if link is None else link.sent,
            "relay_received": 0 if link is None else link.received_count,
            "candidates": [f"{c.type} {c.host}:{c.port}" for c in local()],
        }

    try:
        await report_until_stopped(directory / f"{me}.status.json", status)
    finally:
        paths.close()
        await relays.close()
        mux.close()
        iface.close()


if __name__ == "__main__":
    n, p, i, d, s, o, c = sys.argv[1:8]
    asyncio.run(main(n, int(p), i, Path(d), s, o, Path(c)))
