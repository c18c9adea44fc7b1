"""Who may hold a public key, a tag and a name on the coordination server: the review's
attacks (issue 9, item 2) re-run through the real HTTP API on loopback, on SQLite and
PostgreSQL. A node must prove it holds a node before it registers that node's key again; a
pre-auth key cannot hand out a tag its user no longer owns; a node cannot rename itself into
a policy's node selector; low-order keys are refused; a user's nodes are bounded."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from wgpy.mesh.client.api import ApiError, NodeClient
from wgpy.mesh.server import ServerConfig
from wgpy.mesh.server.auth import parse_credential
from wgpy.mesh.server.store import open_store

from .conftest import ApiError as HttpError
from .conftest import (
    Client,
    Database,
    MapReader,
    Node,
    Running,
    new_public_key,
    open_map,
    register,
    running,
    with_,
)
from .support import captured_logs

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


async def map_of(r: Running, node: Node | Client) -> MapReader:
    """The node's map stream, once the server applied every change made so far."""
    await r.server.hub.flush()
    return await open_map(node)


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


async def test_another_pre_auth_key_cannot_take_over_a_nodes_public_key(
    backend: str, config: ServerConfig
) -> None:
    """The review's attack: Alice's laptop reads node V's public key from its map and
    registers it with another pre-auth key of alice; then logs in with a key of its own."""
    async with running(config) as r:
        await r.admin.user("alice")
        await r.admin.user("bob")
        await r.admin.call(
            "PUT",
            "/policy",
            {
                "acls": [{"action": "accept", "src": ["tag:vault"], "dst": ["*"]}],
                "tagOwners": {"tag:vault": ["user:alice"]},
            },
        )
        victim = await register(r.admin, await r.admin.auth_key("alice", tags=["tag:vault"]), "v")
        laptop = await register(r.admin, await r.admin.auth_key("alice"), "laptop")
        seen = await map_of(r, laptop)
        assert victim.public_key in seen.peers  # what the attacker reads
        seen.close()
        spare = await r.admin.auth_key("alice", reusable=True)
        attack = {"auth_key": spare, "public_key": victim.public_key, "hostname": "laptop2"}
        message = await r.admin.using(None).error("POST", "/register", attack, status=409)
        assert message.startswith(f"this public key belongs to node {victim.id}, and the request")
        # Nor with the attacker's own token, nor a made-up one, nor another user's key.
        for token in (laptop.token, "wgpy_node_" + "0" * 16 + "_" + "A" * 43, "garbage"):
            await r.admin.using(token).error("POST", "/register", attack, status=409)
        bobs = {**attack, "auth_key": await r.admin.auth_key("bob")}
        await r.admin.using(None).error("POST", "/register", bobs, status=409)
        # Nor by switching to it at login with a token of its own.
        body = {"public_key": victim.public_key, "hostname": "laptop"}
        assert "belongs to another node" in await laptop.client.error(
            "POST", "/login", body, status=409
        )
        # V is untouched: its token works, its key, tags and address are its own.
        reply = await victim.client.call(
            "POST", "/login", {"public_key": victim.public_key, "hostname": "v"}
        )
        assert (reply["node"]["id"], reply["node"]["tags"]) == (victim.id, ["tag:vault"])
        assert reply["node"]["ipv4"] == victim.node["ipv4"]
        # The one-off key the refused attempts carried was not used up.
        keys = (await r.admin.call("GET", "/preauthkeys?user=bob"))["preauthkeys"]
        assert [k["used"] for k in keys] == [False]


async def test_the_holder_of_a_node_registers_its_key_again(
    backend: str, config: ServerConfig
) -> None:
    """`wgpy up --auth-key` on a node that has a token sends it: the same node, its name and
    addresses, a new token; also after an admin expired the node. An admin who deletes the
    node releases the key."""
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        node = await register(r.admin, key, "laptop")
        body = {"auth_key": key, "public_key": node.public_key, "hostname": "laptop"}
        again = await node.client.call("POST", "/register", body)
        assert (again["node"]["id"], again["node"]["hostname"]) == (node.id, "laptop")
        assert again["node"]["ipv4"] == node.node["ipv4"]
        await node.client.error("POST", "/node/endpoints", {"endpoints": []}, status=401)
        token = again["token"]
        await r.admin.call("POST", f"/nodes/{node.id}/expire")
        back = await r.admin.using(token).call("POST", "/register", body)
        assert (back["node"]["id"], back["node"]["expired"]) == (node.id, False)
        await r.admin.call("POST", f"/nodes/{node.id}/expire")
        await r.admin.using(back["token"]).call("POST", "/logout", {})  # the token is gone
        await r.admin.using(back["token"]).error("POST", "/register", body, status=409)
        await r.admin.call("DELETE", f"/nodes/{node.id}")  # the admin releases the key
        fresh = await r.admin.using(None).call("POST", "/register", body)
        assert fresh["node"]["id"] != node.id and fresh["node"]["hostname"] == "laptop"


async def test_the_node_client_registers_its_key_again_with_its_stored_token(
    backend: str, config: ServerConfig
) -> None:
    """What `wgpy up --auth-key` does on a node that registered before: its client starts
    with the stored token, which goes with the registration as the proof."""
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        public = new_public_key()
        async with NodeClient(r.url) as client:
            first, token = await client.register(key, public, "laptop")
        async with NodeClient(r.url, token=token) as client:
            again, _ = await client.register(key, public, "laptop")
            assert (again["id"], again["hostname"]) == (first["id"], "laptop")
            assert (await client.login(public, "laptop"))["id"] == first["id"]
        async with NodeClient(r.url) as client:  # without the token: refused, said why
            with pytest.raises(ApiError) as e:
                await client.register(key, public, "laptop")
            assert e.value.status == 409 and "send the node's token" in e.value.message


async def test_a_users_nodes_are_bounded(backend: str, config: ServerConfig) -> None:
    """The review registered 900 nodes with one reusable key in 1.8 s: a user's nodes stop at
    the quota (--max-nodes-per-user), also when registrations race; a known node's
    re-registration is not a new node, and deleting one makes room."""
    with captured_logs() as logs:
        async with running(with_(config, max_nodes_per_user=5, auth_burst=100)) as r:
            await r.admin.user("alice")
            await r.admin.user("bob")
            key = await r.admin.auth_key("alice", reusable=True)
            results = await asyncio.gather(
                *(register(r.admin, key, f"n{i}") for i in range(12)), return_exceptions=True
            )
            nodes = [n for n in results if not isinstance(n, BaseException)]
            refused = [e for e in results if isinstance(e, HttpError)]
            assert (len(nodes), len(refused)) == (5, 7), results
            assert {e.status for e in refused} == {403}
            assert refused[0].body["error"] == (
                'user "alice" already has 5 nodes, the most this server allows per user; delete '
                "unused nodes (wgpy admin nodes delete ID), or ask the server's operator to raise "
                "--max-nodes-per-user"
            )
            assert len((await r.admin.call("GET", "/nodes?user=alice"))["nodes"]) == 5
            await register(r.admin, key, "n0", nodes[0].public_key, nodes[0].token)  # the same node
            await register(r.admin, await r.admin.auth_key("bob"), "b")  # another user's room
            await r.admin.call("DELETE", f"/nodes/{nodes[1].id}")
            await register(r.admin, key, "n5")
            body = {"auth_key": key, "public_key": new_public_key(), "hostname": "n6"}
            await r.admin.using(None).error("POST", "/register", body, status=403)
    # a valid key asking for more than its user may have is no failed authentication
    assert [e for e in logs if e["event"] == "node registered"]
    assert not [e for e in logs if e["event"] == "authentication failed"], logs


async def test_a_tag_follows_the_policy_in_force(backend: str, config: ServerConfig) -> None:
    """A pre-auth key made before tagOwners restricted a tag no longer hands it out; nodes
    that carry a tag their user no longer owns lose it when the policy changes, and their
    peers hear of it."""
    async with running(config) as r:
        await r.admin.user("alice")
        await r.admin.user("bob")
        old_key = await r.admin.auth_key("alice", tags=["tag:prod"], reusable=True)
        tagged = await register(r.admin, old_key, "web")  # no policy: any tag
        both = await register(
            r.admin, await r.admin.auth_key("alice", tags=["tag:prod", "tag:dev"]), "both"
        )
        watcher = await register(r.admin, await r.admin.auth_key("alice"), "watcher")
        seen = await map_of(r, watcher)
        assert seen.peers[tagged.public_key]["tags"] == ["tag:prod"]
        policy = {
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}],
            "tagOwners": {"tag:prod": ["user:bob"], "tag:dev": ["user:alice"]},
        }
        reply = await r.admin.call("PUT", "/policy", policy)
        assert reply["tags_removed"] == [
            {"node": tagged.id, "name": "alice/web", "tags": ["tag:prod"]},
            {"node": both.id, "name": "alice/both", "tags": ["tag:prod"]},
        ]
        await seen.until(lambda m: m.peers[tagged.public_key]["tags"] == [])
        await seen.until(lambda m: m.peers[both.public_key]["tags"] == ["tag:dev"])
        seen.close()
        nodes = {n["hostname"]: n["tags"] for n in (await r.admin.call("GET", "/nodes"))["nodes"]}
        assert nodes == {"web": [], "both": ["tag:dev"], "watcher": []}
        # The old key no longer hands the tag out, neither to a new node nor to its own.
        body = {"auth_key": old_key, "public_key": new_public_key(), "hostname": "web2"}
        message = await r.admin.using(None).error("POST", "/register", body, status=403)
        assert message == (
            'the auth key carries tags that the policy no longer allows (user "alice" may '
            'not use tag "tag:prod": tagOwners lists user:bob); ask an admin for a new key'
        )
        again = {**body, "public_key": tagged.public_key, "hostname": "web"}
        await r.admin.using(tagged.token).error("POST", "/register", again, status=403)
        assert len((await r.admin.call("GET", "/nodes"))["nodes"]) == 3
        # A policy that changes nothing for tags removes nothing.
        assert (await r.admin.call("PUT", "/policy", policy))["tags_removed"] == []


def login_body(node: Node, hostname: str) -> dict[str, str]:
    return {"public_key": node.public_key, "hostname": hostname}


async def test_node_selectors_follow_the_node_not_its_name(
    backend: str, config: ServerConfig
) -> None:
    """`node:USER/HOSTNAME` means the node of that name when the policy is set: a node that
    renames itself at /login cannot take a name the policy names, and a rename does not move
    the selector."""
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        server = await register(r.admin, key, "server")
        laptop = await register(r.admin, key, "laptop")
        intruder = await register(r.admin, key, "x")
        policy = {"acls": [{"action": "accept", "src": ["node:alice/laptop"], "dst": ["*"]}]}
        assert 'there is no node "alice/nobody"' in await r.admin.error(
            "PUT",
            "/policy",
            {"acls": [{"action": "accept", "src": ["node:alice/nobody"], "dst": ["*"]}]},
            status=400,
        )
        await r.admin.call("PUT", "/policy", policy)
        seen = await map_of(r, server)
        assert set(seen.peers) == {laptop.public_key}
        # The laptop renames itself (its OS hostname changed): its rights stay with it...
        reply = await laptop.client.call("POST", "/login", login_body(laptop, "laptop2"))
        assert reply["node"]["hostname"] == "laptop2"
        await seen.until(lambda m: m.peers[laptop.public_key]["hostname"] == "laptop2")
        # ...and the intruder cannot take the name the policy names, nor its rights.
        reply = await intruder.client.call("POST", "/login", login_body(intruder, "laptop"))
        assert reply["node"]["hostname"] == "laptop-1"
        reply = await intruder.client.call(
            "POST", "/register", {"auth_key": key, **login_body(intruder, "laptop")}
        )
        assert reply["node"]["hostname"] == "laptop-1"
        intruder = Node(
            intruder.client.using(reply["token"]),
            reply["node"],
            reply["token"],
            intruder.public_key,
        )
        theirs = await map_of(r, intruder)
        assert set(theirs.peers) == {laptop.public_key}  # reached by the laptop, as every node
        assert theirs.peers[laptop.public_key]["reachable_from"] is True
        assert theirs.peers[laptop.public_key]["can_reach"] is False
        theirs.close()
        assert set(seen.peers) == {laptop.public_key}
        seen.close()
        # The laptop may take its old name back: the name the policy gave it.
        reply = await laptop.client.call("POST", "/login", login_body(laptop, "laptop"))
        assert reply["node"]["hostname"] == "laptop"


async def test_the_same_node_coming_back_keeps_its_name_and_its_selector(
    backend: str, config: ServerConfig
) -> None:
    """Down and up (stream closed, login again with the token; or registering again with the
    token, also after an admin expired it) keep the name, so `node:alice/laptop` keeps
    matching; laptop -> laptop-1 -> laptop-2 no more."""
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        laptop = await register(r.admin, key, "laptop")
        other = await register(r.admin, key, "other")
        await r.admin.call(
            "PUT",
            "/policy",
            {"acls": [{"action": "accept", "src": ["node:alice/laptop"], "dst": ["*"]}]},
        )
        token = laptop.token
        for cycle in range(3):
            stream = await map_of(r, laptop.client.using(token))
            assert set(stream.peers) == {other.public_key}, cycle
            stream.close()  # down
            reply = await laptop.client.using(token).call(
                "POST", "/login", login_body(laptop, "laptop")
            )
            assert (reply["node"]["id"], reply["node"]["hostname"]) == (laptop.id, "laptop")
            await r.admin.call("POST", f"/nodes/{laptop.id}/expire")
            reply = await laptop.client.using(token).call(
                "POST", "/register", {"auth_key": key, **login_body(laptop, "laptop")}
            )
            assert (reply["node"]["id"], reply["node"]["hostname"]) == (laptop.id, "laptop")
            token = reply["token"]
        names = sorted(n["hostname"] for n in (await r.admin.call("GET", "/nodes"))["nodes"])
        assert names == ["laptop", "other"]
        stream = await map_of(r, other)
        assert stream.peers[laptop.public_key]["reachable_from"] is True
        stream.close()


async def test_a_policy_stored_before_resolution_gets_its_node_ids_at_start(
    backend: str, database: Database
) -> None:
    """A database whose policy was set by a wgpy that matched node selectors by name: the
    next start resolves them to the nodes of those names, once."""
    store = await open_store(
        state_dir=database.state_dir, database_url=database.database_url, replica="r1"
    )
    try:
        await store.users.create("alice")
        _, key = await store.preauth_keys.create(
            "alice", reusable=True, ephemeral=False, tags=(), lifetime=3600.0
        )
        auth = parse_credential(str(key), "auth")
        laptop, _ = await store.nodes.register(auth, new_public_key(), "laptop")
        other, _ = await store.nodes.register(auth, new_public_key(), "other")
        document = {"acls": [{"action": "accept", "src": ["node:alice/laptop"], "dst": ["*"]}]}
        async with store.db.transaction() as tx:  # as schema 1 left it
            await tx.execute(
                "UPDATE policy SET version = 1, document = ?, node_ids = NULL WHERE id = 1",
                json.dumps(document),
            )
    finally:
        await store.close()
    store = await open_store(
        state_dir=database.state_dir, database_url=database.database_url, replica="r2"
    )
    try:
        await store.nodes.rename(laptop.id, "renamed")
        await store.nodes.rename(other.id, "laptop")
        _, policy = await store.policy.current()
        renamed, impostor = await store.nodes.get(laptop.id), await store.nodes.get(other.id)
        assert policy.may_reach(renamed, impostor)
        assert not policy.may_reach(impostor, renamed)
    finally:
        await store.close()


async def test_a_node_that_logged_out_gives_its_name_to_the_next_one(
    backend: str, config: ServerConfig
) -> None:
    """`wgpy logout` then `wgpy up --auth-key` is a new node (a new key): it gets the name,
    and the departed node, which can never come back, takes a suffix; it keeps its policy
    rights only until the policy is set again."""
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        other = await register(r.admin, key, "other")
        first = await register(r.admin, key, "laptop")
        policy = {"acls": [{"action": "accept", "src": ["node:alice/laptop"], "dst": ["*"]}]}
        await r.admin.call("PUT", "/policy", policy)
        ids = [first.id]
        node = first
        for _ in range(3):
            await node.client.call("POST", "/logout", {})
            node = await register(r.admin, key, "laptop")
            assert node.node["hostname"] == "laptop"
            ids.append(node.id)
        nodes = {n["id"]: n for n in (await r.admin.call("GET", "/nodes"))["nodes"]}
        assert [nodes[i]["hostname"] for i in ids] == ["laptop-1", "laptop-2", "laptop-3", "laptop"]
        assert [nodes[i]["expired"] for i in ids] == [True, True, True, False]
        seen = await map_of(r, other)
        assert node.public_key not in seen.peers  # the selector meant the first laptop
        await r.admin.call("PUT", "/policy", policy)  # set again: the laptop of now
        await seen.until(lambda m: node.public_key in m.peers)
        assert seen.peers[node.public_key]["reachable_from"] is True
        seen.close()


async def test_racing_for_one_key_leaves_it_with_one_node(
    backend: str, config: ServerConfig
) -> None:
    """Several nodes log in with the same new key while others register it: exactly one
    node ends up with it, every other request is refused with 409, and no node lost its own
    key to the race."""
    async with running(with_(config, auth_burst=100)) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        nodes = [await register(r.admin, key, f"n{i}") for i in range(6)]
        contested = new_public_key()
        body = {"auth_key": key, "public_key": contested, "hostname": "new"}
        results = await asyncio.gather(
            *(
                n.client.call(
                    "POST", "/login", login_body(n, n.node["hostname"]) | {"public_key": contested}
                )
                for n in nodes
            ),
            *(r.admin.using(None).call("POST", "/register", body) for _ in range(4)),
            return_exceptions=True,
        )
        won = [x for x in results if not isinstance(x, BaseException)]
        lost = [x for x in results if isinstance(x, BaseException)]
        assert len(won) == 1, results
        assert all(isinstance(x, HttpError) and x.status == 409 for x in lost), lost
        listed = (await r.admin.call("GET", "/nodes"))["nodes"]
        holders = [n["id"] for n in listed if n["public_key"] == contested]
        assert holders == [won[0]["node"]["id"]]
        kept = {n.id: n.public_key for n in nodes if n.id not in holders}
        assert all(n["public_key"] == kept[n["id"]] for n in listed if n["id"] in kept)
