"""Who may hold a public key, a tag and a name on the coordination server: the review's
attacks (issue 9, item 2) re-run through the real HTTP API on loopback, on SQLite and
PostgreSQL. A node must prove it holds a node before it registers that node's key again; a
pre-auth key cannot hand out a tag its user no longer owns; a node cannot rename itself into
a policy's node selector; low-order keys are refused; a user's nodes are bounded."""

from __future__ import annotations

import base64

import pytest

from wgpy.mesh.server import ServerConfig

from .conftest import register, running

P = 2**255 - 19
LOW_ORDER = [
    0,
    1,
    P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P,  # 0, not reduced
    P + 1,  # 1, not reduced
    1 << 255,  # 0 with the top bit set
    (P - 1) | 1 << 255,
]


def b64(u: int) -> str:
    return base64.b64encode(u.to_bytes(32, "little")).decode()


@pytest.mark.parametrize("u", LOW_ORDER, ids=lambda u: hex(u)[:12])
async def test_low_order_keys_are_refused_at_register_and_login(
    backend: str, config: ServerConfig, u: int
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        body = {"auth_key": key, "public_key": b64(u), "hostname": "zero"}
        message = await r.admin.using(None).error("POST", "/register", body, status=400)
        assert message.startswith('"public_key" is a point of small order on Curve25519')
        node = await register(r.admin, key, "laptop")
        body = {"public_key": b64(u), "hostname": "laptop"}
        assert "small order" in await node.client.error("POST", "/login", body, status=400)
        assert [n["hostname"] for n in (await r.admin.call("GET", "/nodes"))["nodes"]] == ["laptop"]
