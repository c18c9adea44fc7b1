"""Machine certificates in use: the server's challenges and the proof a node sends with it
when it registers, changes its key or starts an interactive login (docs/mesh-api.md).

A challenge is stateless: ``version || expiry || nonce || tag`` where ``tag`` is an HMAC
(SHA-256, cut to 16 bytes) of the rest under a secret that every replica shares (kept in
the database, store.machines.secret), so a node may fetch it from one replica and answer
another. It lives CHALLENGE_LIFETIME seconds and each replica takes it once (a replayed
proof for the same node key is refused; across replicas a replay could only repeat what the
proof's own node key and credential already allow). The proof (wgpy/machinecert.py) signs the
challenge and the node's WireGuard public key with the machine's key.

The policy decides who must prove one (policy.Policy.machine_required, checked inside the
store's transactions); this module checks a proof that came: :func:`machine_of`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wgpy import machinecert

from .errors import BadRequest, Forbidden
from .models import MachineRecord
from .policy import Policy
from .web import Context, context, reply

CHALLENGE_LIFETIME = 60  # seconds
CHALLENGE_VERSION = 1
_LABEL = b"wgpy machine challenge v1\x00"
_HEADER = struct.Struct(">BQ")  # version, expiry (whole seconds since the epoch)
_NONCE = 16
_TAG = 16
CHALLENGE_SIZE = _HEADER.size + _NONCE + _TAG  # 41 bytes: within machinecert's 16..64
SECRET_NAME = "machine_challenge"
MAX_USED = 100_000  # challenges remembered as used at once (each lives CHALLENGE_LIFETIME)
PROOF_FIELDS = ("challenge", "machine_certificate", "machine_signature")

NO_MACHINE_CA = (
    "the server has no machine CA, so it cannot check a machine certificate; start the node "
    "without --machine-cert, or the server with --machine-ca CERT"
)
BAD_CHALLENGE = (
    '"challenge" is not one this server made; fetch a new one (GET /api/v1/machine/challenge)'
)
OLD_CHALLENGE = "the machine challenge has expired or was used; fetch a new one and sign again"


def make_challenge(secret: bytes, now: float, nonce: bytes) -> bytes:
    """A challenge good until ``now + CHALLENGE_LIFETIME``."""
    body = _HEADER.pack(CHALLENGE_VERSION, int(now) + CHALLENGE_LIFETIME) + nonce
    return body + _tag(secret, body)


def check_challenge(secret: bytes, challenge: bytes, now: float) -> float:
    """The challenge's expiry, if this server made it and it has not expired; else
    Forbidden with a sentence."""
    if len(challenge) != CHALLENGE_SIZE:
        raise Forbidden(BAD_CHALLENGE)
    body, tag = challenge[:-_TAG], challenge[-_TAG:]
    if not hmac.compare_digest(tag, _tag(secret, body)):
        raise Forbidden(BAD_CHALLENGE)
    version, expiry = _HEADER.unpack_from(body)
    if version != CHALLENGE_VERSION:
        raise Forbidden(BAD_CHALLENGE)
    if expiry <= now:
        raise Forbidden(OLD_CHALLENGE)
    return float(expiry)


def _tag(secret: bytes, body: bytes) -> bytes:
    return hmac.digest(secret, _LABEL + body, hashlib.sha256)[:_TAG]


@dataclass
class UsedChallenges:
    """Challenges this replica took, until they expire."""

    expiries: dict[bytes, float] = field(default_factory=dict)

    def take(self, challenge: bytes, expiry: float, now: float) -> bool:
        """False when ``challenge`` was taken before."""
        if challenge in self.expiries:
            return False
        if len(self.expiries) >= MAX_USED:
            self.expiries = {c: e for c, e in self.expiries.items() if e > now}
            if len(self.expiries) >= MAX_USED:  # a flood of valid proofs: refuse, not grow
                return False
        self.expiries[challenge] = expiry
        return True


@dataclass
class Challenges:
    """The replica's challenge secret (read from the database on first use) and the
    challenges it took."""

    secret: bytes | None = None
    used: UsedChallenges = field(default_factory=UsedChallenges)
    rng: Callable[[int], bytes] = os.urandom

    async def key(self, ctx: Context) -> bytes:
        if self.secret is None:
            self.secret = await ctx.store.machines.secret(SECRET_NAME)
        return self.secret


CHALLENGES = web.AppKey("wgpy_machine_challenges", Challenges)


def machine_required(
    policy: Policy, user: str, tags: Collection[str], groups: Collection[str] = ()
) -> bool:
    """Whether the policy requires a machine certificate of a node of ``user`` with ``tags``
    (``groups``: the user's, ``group:NAME``)."""
    return policy.machine_required(user, tags, groups)


def _as_sent(name: str, value: Any) -> Any:
    return value  # checked by machine_of


# The optional fields of a body that may carry a proof (schemas.fields).
PROOF_SCHEMA = dict.fromkeys(PROOF_FIELDS, _as_sent)


def has_proof(body: Mapping[str, Any]) -> bool:
    return any(name in body for name in PROOF_FIELDS)


async def machine_of(
    request: web.Request, body: Mapping[str, Any], public_key: str
) -> MachineRecord | None:
    """The machine whose certificate the request's body proves for the node key
    ``public_key`` (base64), recorded (store.machines.accept); None when the body carries no
    proof. Forbidden with a sentence for a proof that does not hold: an unknown, expired or
    reused challenge, a certificate the CA did not issue, expired or revoked, a signature
    that does not verify."""
    if not has_proof(body):
        return None
    missing = [name for name in PROOF_FIELDS if name not in body]
    if missing:
        raise BadRequest(
            f'a machine proof needs "challenge", "machine_certificate" and '
            f'"machine_signature"; "{missing[0]}" is missing'
        )
    ctx = context(request)
    if ctx.machine_ca is None:
        raise Forbidden(NO_MACHINE_CA)
    challenges = request.app[CHALLENGES]
    now = ctx.clock()
    challenge = _base64(body["challenge"], "challenge")
    expiry = check_challenge(await challenges.key(ctx), challenge, now)
    try:
        cert, signature = machinecert.decode_proof(
            body["machine_certificate"], body["machine_signature"]
        )
    except machinecert.MachineCertError as e:
        raise BadRequest(str(e)) from None
    try:
        machine = machinecert.verify_proof(
            ctx.machine_ca, cert, challenge, base64.b64decode(public_key), signature, now=now
        )
    except machinecert.MachineCertError as e:
        raise Forbidden(str(e)) from None
    if not challenges.used.take(challenge, expiry, now):
        raise Forbidden(OLD_CHALLENGE)
    pem = machinecert.certificate_pem(cert).decode()
    return await ctx.store.machines.accept(machine, pem)


def _base64(value: object, name: str) -> bytes:
    if not isinstance(value, str) or len(value) > 128:
        raise BadRequest(f'"{name}" must be a base64 string as the server sent it')
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f'"{name}" is not valid base64') from None


async def challenge(request: web.Request) -> web.Response:
    """``GET /api/v1/machine/challenge``: a fresh challenge to sign (no credential needed:
    it proves nothing by itself)."""
    ctx = context(request)
    challenges = request.app[CHALLENGES]
    value = make_challenge(await challenges.key(ctx), ctx.clock(), challenges.rng(_NONCE))
    return reply({"challenge": base64.b64encode(value).decode(), "expires_in": CHALLENGE_LIFETIME})


def add_routes(app: web.Application, api: str) -> None:
    app[CHALLENGES] = Challenges()
    app.router.add_get(f"{api}/machine/challenge", challenge)
