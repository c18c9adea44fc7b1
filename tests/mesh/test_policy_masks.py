"""Policy.masks (the rules arranged as look-ups, policy._Lookup) decides as Policy.may_reach
does, rule by rule, on random policies that mix prefixes of every length with the other
selectors."""

from __future__ import annotations

import ipaddress
import random

from wgpy.mesh.server.policy import parse_policy

from .support import node

USERS = ("alice", "bob")


def random_selector(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        length = rng.choice((10, 16, 24, 30, 31, 32))
        address = ipaddress.IPv4Address(0x64400000 + rng.randrange(1, 40))
        return str(ipaddress.IPv4Network((address, length), strict=False))
    if kind == 1:
        length = rng.choice((48, 64, 120, 126, 127, 128))
        address = ipaddress.IPv6Address("fd7a:115c:a1e0::") + rng.randrange(1, 40)
        return str(ipaddress.IPv6Network((address, length), strict=False))
    if kind == 2:
        return f"user:{rng.choice(USERS)}"
    if kind == 3:
        return "tag:web"
    if kind == 4:
        return f"node:{rng.choice(USERS)}/h{rng.randrange(1, 40)}"
    return "*" if rng.random() < 0.2 else "100.64.0.0/10"


def test_masks_agree_with_may_reach_on_random_policies() -> None:
    rng = random.Random(9)
    nodes = [
        node(i, rng.choice(USERS), hostname=f"h{i}", tags=("tag:web",) if i % 5 == 0 else ())
        for i in range(1, 40)
    ]
    for _ in range(30):
        acls = [
            {
                "action": "accept",
                "src": [random_selector(rng) for _ in range(rng.randrange(1, 6))],
                "dst": [random_selector(rng) for _ in range(rng.randrange(1, 6))],
            }
            for _ in range(rng.randrange(0, 8))
        ]
        policy = parse_policy({"acls": acls, "tagOwners": {"tag:web": ["user:alice"]}})
        masks = {n.id: policy.masks(n) for n in nodes}
        for a in nodes:
            for b in nodes:
                assert (masks[a.id][0] & masks[b.id][1] != 0) == policy.may_reach(a, b), acls
