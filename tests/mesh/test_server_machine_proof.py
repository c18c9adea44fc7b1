"""Machine certificates in use on the server (server/machines.py): the stateless challenge,
the proof with registration and key changes, the policy's "machineCertificates" requirement
(403 even with a valid auth key), the certificate's end capping the node's expiry, and
revocation dropping the machine's nodes from their peers' maps within a second; both
database backends, a real server on loopback."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from wgpy import machinecert
from wgpy.mesh.server import ServerConfig, machines
from wgpy.mesh.server.errors import Forbidden
from wgpy.mesh.server.machines import (
    CHALLENGE_LIFETIME,
    CHALLENGE_SIZE,
    UsedChallenges,
    check_challenge,
    machine_required,
    make_challenge,
)
from wgpy.mesh.server.models import iso
from wgpy.mesh.server.policy import PolicyError, parse_policy

from .conftest import Client, Database, new_public_key, open_map, register, running, with_
from .test_server_machines import DAY, make_ca
from .test_server_store import Clock, opened

SECRET = b"s" * 32
NOW = 1_800_000_000.0


# ---------------------------------------------------------------------------- pure parts


def test_challenges_are_the_servers_own_and_short_lived() -> None:
    challenge = make_challenge(SECRET, NOW, b"n" * 16)
    assert len(challenge) == CHALLENGE_SIZE
    assert machinecert.CHALLENGE_MIN <= CHALLENGE_SIZE <= machinecert.CHALLENGE_MAX
    assert check_challenge(SECRET, challenge, NOW + 1) == int(NOW) + CHALLENGE_LIFETIME
    with pytest.raises(Forbidden, match="has expired or was used"):
        check_challenge(SECRET, challenge, NOW + CHALLENGE_LIFETIME)
    with pytest.raises(Forbidden, match="not one this server made"):
        check_challenge(b"t" * 32, challenge, NOW)  # another server's
    for forged in (
        challenge[:-1] + bytes([challenge[-1] ^ 1]),  # tag
        challenge[:1] + b"\xff" * 8 + challenge[9:],  # a later expiry
        challenge[:-1],
        b"",
    ):
        with pytest.raises(Forbidden, match="not one this server made"):
            check_challenge(SECRET, forged, NOW)


def test_a_challenge_is_taken_once(monkeypatch: pytest.MonkeyPatch) -> None:
    used = UsedChallenges()
    assert used.take(b"a", NOW + 60, NOW)
    assert not used.take(b"a", NOW + 60, NOW)
    assert used.take(b"b", NOW + 60, NOW)
    # full: the expired ones go; still full of live ones: refused rather than grown
    monkeypatch.setattr(machines, "MAX_USED", 2)
    assert used.take(b"c", NOW + 120, NOW + 61)  # a and b expired at NOW + 60
    assert set(used.expiries) == {b"c"}
    assert used.take(b"d", NOW + 120, NOW + 62)
    assert not used.take(b"e", NOW + 120, NOW + 63)
    assert set(used.expiries) == {b"c", b"d"}


def test_policy_machine_certificates() -> None:
    document: dict[str, Any] = {
        "acls": [],
        "tagOwners": {"tag:server": ["user:ops"]},
        "machineCertificates": {"require": ["user:alice", "tag:server", "group:eng"]},
    }
    policy = parse_policy(document, users={"alice", "ops"})
    assert machine_required(policy, "alice", [])
    assert machine_required(policy, "ops", ["tag:server"])
    assert not machine_required(policy, "ops", [])
    assert machine_required(policy, "bob", [], groups=["group:eng"])
    assert not machine_required(policy, "bob", [], groups=["group:sales"])
    assert "alice" in policy.users_named()  # deleting alice would leave the rule dangling
    everyone = parse_policy({"acls": [], "machineCertificates": {"require": ["*"]}})
    assert machine_required(everyone, "anyone", [])
    assert not machine_required(parse_policy({"acls": []}), "anyone", [])
    for part, message in [
        ({"require": ["user:carol"]}, 'machineCertificates.require[0]: unknown user "carol"'),
        ({"require": ["tag:db"]}, 'tag "tag:db" is not declared in tagOwners'),
        ({"require": ["node:a/b"]}, 'expected "*", "user:NAME", "tag:NAME" or "group:NAME"'),
        ({"require": [7]}, 'expected "*", "user:NAME", "tag:NAME" or "group:NAME"'),
        ({"require": "*"}, "machineCertificates.require: expected a list"),
        ({"need": []}, 'machineCertificates.need: unknown field; the only one is "require"'),
        ([], 'machineCertificates: expected an object {"require": [...]}'),
    ]:
        with pytest.raises(PolicyError) as e:
            parse_policy({"acls": [], "machineCertificates": part}, users={"alice", "ops"})
        assert message in str(e.value)


# ---------------------------------------------------------------------------- the server


class Device:
    """A machine: its key and the certificate the operator's CA issued for it."""

    def __init__(
        self,
        ca: tuple[machinecert.SigningKey, x509.Certificate],
        name: str,
        now: float,
        serial: int,
        lifetime: float = DAY,
    ) -> None:
        self.key = machinecert.new_private_key()
        self.cert = machinecert.issue(
            ca[0], ca[1], self.key.public_key(), name, now=now, lifetime=lifetime, serial=serial
        )

    async def proof(self, client: Client, public_key: str) -> dict[str, str]:
        """A fresh challenge from the server, signed with the node's key."""
        reply = await client.using(None).call("GET", "/machine/challenge")
        challenge = base64.b64decode(reply["challenge"])
        assert reply["expires_in"] == CHALLENGE_LIFETIME and len(challenge) == CHALLENGE_SIZE
        signature = machinecert.sign_proof(self.key, challenge, base64.b64decode(public_key))
        return {"challenge": reply["challenge"], **machinecert.encode_proof(self.cert, signature)}


POLICY = {
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}],
    "tagOwners": {"tag:secure": ["user:alice"]},
    "machineCertificates": {"require": ["tag:secure"]},
}


async def test_registration_needs_a_proof_where_the_policy_says(
    backend: str, database: Database, config: ServerConfig, tmp_path: Path
) -> None:
    now = float(int(time.time()))
    ca = make_ca(tmp_path / "ca", now)
    laptop = Device(ca, "laptop", now, 0x31, lifetime=DAY)
    async with running(with_(config, machine_ca=tmp_path / "ca" / "ca.crt")) as r:
        admin, anonymous = r.admin, r.admin.using(None)
        await admin.user("alice")
        await admin.call("PUT", "/policy", POLICY)
        secure_key = await admin.auth_key("alice", reusable=True, tags=["tag:secure"])
        plain = await register(admin, await admin.auth_key("alice"), "plain")  # not required
        assert plain.node["machine"] is None

        # a valid auth key, no certificate: refused, nothing registered, the key not used up
        public_key = new_public_key()
        body = {"auth_key": secure_key, "public_key": public_key, "hostname": "secure"}
        message = await anonymous.error("POST", "/register", body, status=403)
        assert message.startswith("a machine certificate is required")
        assert len((await admin.call("GET", "/nodes"))["nodes"]) == 1
        one_off = await admin.auth_key("alice", tags=["tag:secure"])
        once = {"auth_key": one_off, "public_key": new_public_key(), "hostname": "once"}
        await anonymous.error("POST", "/register", once, status=403)
        keys = (await admin.call("GET", "/preauthkeys"))["preauthkeys"]
        assert [k["used"] for k in keys if k["id"] in one_off] == [False]

        # with the proof: registered, the machine recorded, expiry capped by the certificate
        proof = await laptop.proof(admin, public_key)
        reply = await anonymous.call("POST", "/register", {**body, **proof})
        node = reply["node"]
        assert node["machine"] == "laptop" and node["tags"] == ["tag:secure"]
        assert node["expires_at"] == iso(now + DAY) and node["expired"] is False
        machine = (await admin.call("GET", "/machines"))["machines"][0]
        assert (machine["name"], machine["serial"]) == ("laptop", "31")  # recorded on first use

        # the same proof again (a replay), one for another node key, a damaged one
        replay = {**body, **proof}
        assert "was used" in await anonymous.error("POST", "/register", replay, status=403)
        other = await laptop.proof(admin, new_public_key())
        message = await anonymous.error(
            "POST", "/register", {**body, "public_key": new_public_key(), **other}, status=403
        )
        assert "does not verify" in message
        fresh = new_public_key()
        bad = {
            **await laptop.proof(admin, fresh),
            "challenge": base64.b64encode(b"x" * 41).decode(),
        }
        message = await anonymous.error(
            "POST", "/register", {**body, "public_key": fresh, **bad}, status=403
        )
        assert "not one this server made" in message
        partial = {k: v for k, v in proof.items() if k != "machine_signature"}
        message = await anonymous.error("POST", "/register", {**body, **partial}, status=400)
        assert '"machine_signature" is missing' in message

        # a key change of the secure node needs a proof too; the same key does not
        secure = r.admin.using(reply["token"])
        new_key = new_public_key()
        change = {"public_key": new_key, "hostname": "secure"}
        message = await secure.error("POST", "/login", change, status=403)
        assert message.startswith("a machine certificate is required")
        same = await secure.call("POST", "/login", {"public_key": public_key, "hostname": "secure"})
        assert same["node"]["machine"] == "laptop"
        proof = await laptop.proof(admin, new_key)
        changed = await secure.call("POST", "/login", {**change, **proof})
        assert changed["node"]["public_key"] == new_key and changed["node"]["machine"] == "laptop"

        # the audit log says who was refused and why
        events = (await admin.call("GET", "/audit"))["events"]
        refusals = [e["detail"] for e in events if e["result"] == "refused"]
        assert any("a machine certificate is required" in d for d in refusals)
        assert any("machine laptop (serial 31)" in (e["detail"] or "") for e in events)


async def test_revocation_drops_the_machines_nodes_within_a_second(
    backend: str, database: Database, config: ServerConfig, tmp_path: Path
) -> None:
    now = float(int(time.time()))
    ca = make_ca(tmp_path / "ca", now)
    desk = Device(ca, "desk", now, 0x41)
    async with running(with_(config, machine_ca=tmp_path / "ca" / "ca.crt")) as r:
        admin, anonymous = r.admin, r.admin.using(None)
        await admin.user("alice")
        await admin.call("PUT", "/policy", POLICY)
        watcher = await register(admin, await admin.auth_key("alice"), "watcher")
        public_key = new_public_key()
        reply = await anonymous.call(
            "POST",
            "/register",
            {
                "auth_key": await admin.auth_key("alice", tags=["tag:secure"]),
                "public_key": public_key,
                "hostname": "desk",
                **await desk.proof(admin, public_key),
            },
        )
        stream = await open_map(watcher)
        try:
            assert public_key in stream.peers
            await admin.call("POST", "/machines/desk/revoke", {})
            took = await stream.until(lambda m: public_key not in m.peers, timeout=1.0)
            assert took < 1.0
        finally:
            stream.close()
        node = [n for n in (await admin.call("GET", "/nodes"))["nodes"] if n["hostname"] == "desk"]
        assert node[0]["expired"] is True
        # the node cannot log in, and the revoked machine proves nothing any more
        desk_client = admin.using(reply["token"])
        await desk_client.error(
            "POST", "/login", {"public_key": public_key, "hostname": "desk"}, status=403
        )
        key = new_public_key()
        message = await anonymous.error(
            "POST",
            "/register",
            {
                "auth_key": await admin.auth_key("alice"),
                "public_key": key,
                "hostname": "again",
                **await desk.proof(admin, key),
            },
            status=403,
        )
        assert message.startswith('machine "desk" is revoked')


async def test_a_proof_to_a_server_without_a_machine_ca(
    config: ServerConfig, tmp_path: Path
) -> None:
    now = float(int(time.time()))
    device = Device(make_ca(tmp_path / "ca", now), "x", now, 5)
    async with running(config) as r:
        await r.admin.user("alice")
        key = new_public_key()
        body = {
            "auth_key": await r.admin.auth_key("alice"),
            "public_key": key,
            "hostname": "x",
            **await device.proof(r.admin, key),
        }
        message = await r.admin.using(None).error("POST", "/register", body, status=403)
        assert message.startswith("the server has no machine CA")


async def test_an_interactive_login_keeps_the_machine_its_request_proved(
    backend: str, database: Database
) -> None:
    """store.login_requests: a request made with a machine (server/machines.py checked the
    proof at /login/start) is approved under a policy that requires one, the node records
    the machine and expires with its certificate; one made without is refused at approval,
    and nothing is registered."""
    clock = Clock()
    ca = machinecert.create_ca("ops", now=clock.now, lifetime=30 * DAY, serial=1)
    desk = Device(ca, "desk", clock.now, 0x61, lifetime=2 * DAY)
    async with opened(database, clock=clock) as store:
        alice = (await store.users.create("alice")).id
        await store.policy.set({"acls": [], "machineCertificates": {"require": ["user:alice"]}})
        pem = machinecert.certificate_pem(desk.cert).decode()
        machine = await store.machines.accept(machinecert.machine_of(desk.cert), pem)
        proved, _ = await store.login_requests.create(new_public_key(), "desk", machine=machine)
        bare, _ = await store.login_requests.create(new_public_key(), "bare")
        node = await store.login_requests.approve(proved.id, alice, "password")
        assert (node.machine, node.machine_id) == ("desk", machine.id)
        assert node.expires_at == clock.now + 2 * DAY  # the certificate's end, not 180 days
        with pytest.raises(Forbidden, match=r"^a machine certificate is required"):
            await store.login_requests.approve(bare.id, alice, "password")
        assert [n.hostname for n in await store.nodes.all()] == ["desk"]
        await store.machines.revoke("desk")
        again, _ = await store.login_requests.create(new_public_key(), "desk2", machine=machine)
        with pytest.raises(Forbidden, match='machine "desk" is revoked'):
            await store.login_requests.approve(again.id, alice, "password")
        (only,) = await store.nodes.all()
        assert only.expired(clock.now)  # the revoked machine's node expired with it


async def test_hostile_proofs_get_a_clear_4xx(config: ServerConfig, tmp_path: Path) -> None:
    """Malformed fields: 400; a proof that does not hold (a certificate that has ended, one
    from another CA, a signature over something else): 403; never a 500, nothing kept."""
    now = float(int(time.time()))
    ca = make_ca(tmp_path / "ca", now - 3 * DAY)
    ended = Device(ca, "old", now - 3 * DAY, 0x71, lifetime=DAY)
    stranger = Device(
        machinecert.create_ca("evil", now=now, lifetime=DAY, serial=9), "desk", now, 0x72
    )
    good = Device(ca, "good", now - DAY, 0x73, lifetime=3 * DAY)
    async with running(with_(config, machine_ca=tmp_path / "ca" / "ca.crt")) as r:
        await r.admin.user("alice")
        anonymous = r.admin.using(None)
        key = new_public_key()
        base = {"auth_key": await r.admin.auth_key("alice"), "public_key": key, "hostname": "x"}
        proof = await good.proof(r.admin, key)
        signature = base64.b64encode(b"x" * 70).decode()
        pem = "-----BEGIN CERTIFICATE-----\nAA==\n"
        for fields, status, phrase in [
            ({**proof, "challenge": 5}, 400, '"challenge" must be a base64 string'),
            ({**proof, "challenge": "%%%"}, 400, '"challenge" is not valid base64'),
            ({**proof, "challenge": "A" * 500}, 400, '"challenge" must be a base64 string'),
            ({**proof, "machine_certificate": 5}, 400, '"machine_certificate" must be a PEM'),
            ({**proof, "machine_certificate": "x" * 20_000}, 400, "at most 16384 characters"),
            ({**proof, "machine_certificate": pem}, 400, '"machine_certificate"'),
            ({**proof, "machine_signature": ["x"]}, 400, '"machine_signature" must be base64'),
            ({**proof, "machine_signature": ""}, 400, '"machine_signature" is empty'),
            ({**proof, "machine_signature": signature}, 403, "does not verify"),
            (await ended.proof(r.admin, key), 403, 'machine "old" expired'),
            (await stranger.proof(r.admin, key), 403, "not issued by this server's machine CA"),
        ]:
            message = await anonymous.error("POST", "/register", {**base, **fields}, status=status)
            assert phrase in message, (phrase, message)
        assert (await r.admin.call("GET", "/nodes"))["nodes"] == []
        # the good proof is still unused: it registers
        reply = await anonymous.call("POST", "/register", {**base, **proof})
        assert reply["node"]["machine"] == "good"
