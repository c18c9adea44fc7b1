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
import base64
import contextlib
import json
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from wgpy.device.interface import Interface
from wgpy.endpoint import Endpoint, RelayKey
from wgpy.log import configure
from wgpy.nat.discovery import candidate_list, discover
from wgpy.nat.ice import new_ufrag, parse_remote
from wgpy.nat.paths import PathManager
from wgpy.nat.relay import RelayManager
from wgpy.nat.servers import parse_nat_config
from wgpy.nat.stunmux import StunMux
from wgpy.protocol.crypto import generate_private_key, public_key

WAIT = 20.0  # seconds for the relay and the peer's description


def write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


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
    write_json(
        directory / f"{me}.json",
        {
            "public_key": base64.b64encode(public_key(key)).decode(),
            "ufrag": ufrag,
            "candidates": [c.to_sdp() for c in local()],
            "inner": inner,
        },
    )
    peer_file = directory / f"{peer}.json"
    deadline = loop.time() + WAIT
    while not peer_file.exists():
        if loop.time() > deadline:
            raise SystemExit(f"{peer_file} did not appear within {WAIT:g} s")
        await asyncio.sleep(0.05)
    other = json.loads(peer_file.read_text())
    other_key = base64.b64decode(other["public_key"])
    iface.device.add_peer(other_key, allowed_ips=[f"{other['inner']}/32"])
    remote, _ = parse_remote(other["ufrag"], other["candidates"])
    paths.set_remote(other_key, remote)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            state = paths.path(other_key)
            endpoint = iface.device.peers[other_key].endpoint
            link = relays.link
            write_json(
                directory / f"{me}.status.json",
                {
                    **state.to_json(),
                    "device_endpoint": None
                    if endpoint is None
                    else str(Endpoint(endpoint[0], endpoint[1])),
                    "through_relay": type(endpoint) is RelayKey,
                    "relay_transport": None if link is None else link.url.kind,
                    "relayed": None if link is None else list(link.relayed),
                    "relay_sent": 0 if link is None else link.sent,
                    "relay_received": 0 if link is None else link.received_count,
                    "candidates": [f"{c.type} {c.host}:{c.port}" for c in local()],
                },
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        paths.close()
        await relays.close()
        mux.close()
        iface.close()


if __name__ == "__main__":
    n, p, i, d, s, o, c = sys.argv[1:8]
    asyncio.run(main(n, int(p), i, Path(d), s, o, Path(c)))
