"""ICE connectivity checks (RFC 8445) between this node and one peer, on the WireGuard socket.

aioice's :class:`~aioice.ice.Connection` binds sockets of its own; here the checks must leave
from the WireGuard port itself (the mapping a NAT gives that socket is the one WireGuard
uses), so this module keeps aioice's pieces and drives them over the port's STUN
demultiplexer (:class:`~wgpy.nat.stunmux.StunMux`, any :class:`StunTransport`): aioice's
:class:`~aioice.Candidate`, its STUN :class:`~aioice.stun.Message` (MESSAGE-INTEGRITY and
FINGERPRINT), its priorities (``candidate_priority``, ``candidate_pair_priority``) and its
pair states; the check list, the triggered checks, role conflicts and nomination follow its
``Connection`` and the RFC, with the differences the field notes measured:

- one base per address family: every host and server-reflexive candidate of this node is
  the one WireGuard socket, so a remote candidate makes one pair per local base (RFC 8445
  6.1.2.4, redundant pairs pruned); a relayed local candidate (TURN,
  :mod:`wgpy.nat.relay`, a :class:`RelayedCandidate` naming its link) is a base of its own:
  its pairs' checks, and WireGuard once one is selected, go through the relay, to the key
  ``RelayKey(peer host, peer port, link)`` (:attr:`Pair.key`);
- retransmissions start at :data:`CHECK_RTO` (0.1 s, not aioice's 0.5 s) and pairs with a
  relayed end wait :data:`RELAY_HOLD` (0.5 s): otherwise a relay pair answers before the
  direct pair's first retry; a relay pair that is still the only valid one then is
  nominated (traffic starts there), and the round goes on while direct pairs are checked:
  the controlling side nominates a direct one that succeeds, and it takes over;
- regular nomination (RFC 8445 8.1.1): the controlling side lets better pairs finish for a
  moment after the first success, then nominates the best valid pair;
- both sides start checking when they learn each other's candidates (the map tells both);
  a check that arrives first starts the checks here too (a triggered check punches the hole
  from this side).

The controlling side is the node with the larger public key (both know both keys), so roles
rarely conflict; a conflict is still resolved by the tie-breaker as the RFC says.

Checks are authenticated as ICE requires, with a key per pair of nodes
(:func:`derive_pair_keys`): a request carries ``USERNAME`` = the receiver's ufrag, a colon and
the sender's, and a MESSAGE-INTEGRITY keyed with the receiver's key for this pair; the
response is keyed with the same key (RFC 8445 7.2.2 and 7.3: the receiver's "password").
A node's key for a peer is not published: both nodes derive it (HKDF-SHA256, label
:data:`KEY_LABEL`) from their WireGuard static-static X25519 DH, which only the two of them can
compute, both public keys and both ufrags of the round, one key per direction. So another
peer, which sees both nodes' ufrags in its map, cannot forge a check or an answer in a third
node's name (it could with one password per node that the map hands to every peer). The
server never sees a key. A check (:func:`check_username`, then the pair's key:
:func:`authenticate_request`) that fails is dropped and counted by the caller, never
answered, and never makes a peer-reflexive candidate.

The pure functions (pairing, messages, authentication, roles) take no clock; a
:class:`IceSession` runs one peer's checks with asyncio on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aioice import stun
from aioice.candidate import Candidate, candidate_priority
from aioice.ice import CandidatePair, candidate_pair_priority
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..endpoint import EndpointKey, RelayKey, RelayLink, host_text

__all__ = [
    "CHECK_RETRIES",
    "CHECK_RTO",
    "KEY_LABEL",
    "RELAY_HOLD",
    "ROUND_TIMEOUT",
    "IceError",
    "IceSession",
    "Pair",
    "PairKeys",
    "PairState",
    "RelayedCandidate",
    "RemoteIce",
    "StunTransport",
    "authenticate_request",
    "binding_request",
    "check_ufrag",
    "check_username",
    "derive_pair_keys",
    "error_response",
    "form_pairs",
    "new_ufrag",
    "parse_candidate",
    "parse_remote",
    "role_conflict",
    "success_response",
]

PairState = CandidatePair.State
"""aioice's pair states: FROZEN, WAITING, IN_PROGRESS, SUCCEEDED, FAILED."""

CHECK_RTO = 0.1
"""Seconds before a check's first retransmission (doubling after; aioice waits 0.5 s)."""
CHECK_RETRIES = 3
"""Retransmissions of a check: sent at 0, 0.1, 0.3 and 0.7 s, failed at 1.5 s."""
PACING = 0.02
"""Seconds between two ordinary checks (RFC 8445's Ta; few pairs here)."""
RELAY_HOLD = 0.5
"""Seconds that pairs with a relayed end wait after a round starts (field notes)."""
NOMINATE_WAIT = 0.2
"""Seconds the controlling side lets better pairs finish after the first valid pair."""
ROUND_TIMEOUT = 5.0
"""Seconds a round of checks may take before it fails."""
MAX_CANDIDATES = 16
"""Remote candidates used at most (the server's limit too)."""
MAX_PAIRS = 32
"""Pairs kept at most, peer-reflexive ones included (hostile input cannot grow this)."""
MAX_PEER_REFLEXIVE = 4
"""Addresses learned from a peer's checks per round, at most: an honest peer has one per NAT
mapping; the peer itself, forging the sources of its own checks, cannot make us check (send
to) more third parties than this."""
MAX_CANDIDATE_LENGTH = 256
CREDENTIAL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,64}")
KEY_LABEL = b"wgpy ice v1"
"""HKDF's domain separation for the pair keys: the static-static DH also keys WireGuard's
handshake (through its own KDF); with this label nothing derived here is a key there."""
KEY_LENGTH = 32
ROLE_CONFLICT = 487


class IceError(ValueError):
    """Input from the map or the network that ICE cannot use; ``reason`` is a short key for
    drop counters, the message a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StunTransport(Protocol):
    """STUN on the WireGuard port: what :class:`~wgpy.nat.stunmux.StunMux` offers."""

    async def request(
        self,
        message: stun.Message,
        endpoint: EndpointKey,
        *,
        rto: float = ...,
        retries: int = ...,
        integrity_key: bytes | None = ...,
    ) -> stun.Message: ...

    def send(self, data: bytes, endpoint: EndpointKey) -> None: ...


# ---------------------------------------------------------------------- credentials


def check_ufrag(ufrag: str) -> str:
    """An ICE username fragment (RFC 8445 5.3: ice-chars, 4 at least; wgpy caps it at 64);
    IceError if it is not one."""
    if not isinstance(ufrag, str) or not _UFRAG.fullmatch(ufrag):
        raise IceError("bad_ufrag", "an ICE ufrag is 4 to 64 letters, digits, + or /")
    return ufrag


def new_ufrag(rng: Callable[[int], bytes]) -> str:
    """A fresh ufrag: 8 characters from ``rng`` (os.urandom), 6 bits each."""
    return "".join(CREDENTIAL_CHARS[b & 63] for b in rng(8))


@dataclass(frozen=True, slots=True)
class PairKeys:
    """The MESSAGE-INTEGRITY keys between this node and one peer for one pair of ufrags:
    ``inbound`` keys the checks the peer sends us and our answers, ``outbound`` our checks and
    the peer's answers (each is the receiving side's ICE "password"). Secrets: never logged."""

    inbound: bytes
    outbound: bytes
    local_ufrag: str
    remote_ufrag: str

    def __repr__(self) -> str:
        return f"PairKeys(local_ufrag={self.local_ufrag!r}, remote_ufrag={self.remote_ufrag!r})"


def _pair_key(
    shared: bytes, receiver: bytes, sender: bytes, receiver_ufrag: str, sender_ufrag: str
) -> bytes:
    info = b"".join(
        [KEY_LABEL, receiver, sender]
        + [len(u).to_bytes(1, "big") + u.encode("ascii") for u in (receiver_ufrag, sender_ufrag)]
    )
    return HKDF(hashes.SHA256(), KEY_LENGTH, salt=None, info=info).derive(shared)


def derive_pair_keys(
    shared: bytes,
    *,
    local_public: bytes,
    remote_public: bytes,
    local_ufrag: str,
    remote_ufrag: str,
) -> PairKeys:
    """The keys of the checks between this node and a peer: from ``shared``, the X25519 DH of
    our static private key and the peer's public key (the device's precomputed
    static-static: the peer computes the same from its private key and ours, nobody else
    can), through HKDF-SHA256 with :data:`KEY_LABEL`, the receiver's then the sender's public
    key and ufrag as ``info``. The peer's :attr:`PairKeys.inbound` is our ``outbound`` and
    the other way round; other keys or ufrags give other keys. IceError for an all-zero DH
    (a low-order public key: anybody could compute it)."""
    if len(shared) != KEY_LENGTH or not any(shared):
        raise IceError("no_key", "the peer's public key gives no shared secret for checks")
    check_ufrag(local_ufrag)
    check_ufrag(remote_ufrag)
    return PairKeys(
        inbound=_pair_key(shared, local_public, remote_public, local_ufrag, remote_ufrag),
        outbound=_pair_key(shared, remote_public, local_public, remote_ufrag, local_ufrag),
        local_ufrag=local_ufrag,
        remote_ufrag=remote_ufrag,
    )


@dataclass(frozen=True, slots=True)
class RemoteIce:
    """What the map says about a peer's ICE: its ufrag and candidates."""

    ufrag: str
    candidates: tuple[Candidate, ...]

    def __post_init__(self) -> None:
        check_ufrag(self.ufrag)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteIce):
            return NotImplemented
        return self.ufrag == other.ufrag and [c.to_sdp() for c in self.candidates] == [
            c.to_sdp() for c in other.candidates
        ]

    def __hash__(self) -> int:
        return hash((self.ufrag, tuple(c.to_sdp() for c in self.candidates)))


def parse_candidate(sdp: str) -> Candidate:
    """A remote candidate from its SDP attribute value, as the server checks it: component
    1, UDP, type host, srflx or relay, an IP address literal that a peer can be (not
    unspecified, multicast or broadcast), port 1 to 65535. The host comes back in canonical
    form. IceError says what is wrong."""
    if len(sdp) > MAX_CANDIDATE_LENGTH:
        raise IceError("bad_candidate", "a candidate is longer than 256 characters")
    try:
        candidate = Candidate.from_sdp(sdp)
    except (ValueError, IndexError):
        raise IceError("bad_candidate", "a candidate is not in SDP form") from None
    if candidate.component != 1 or candidate.transport.lower() != "udp":
        raise IceError("bad_candidate", "a candidate is not for UDP component 1")
    if candidate.type not in ("host", "srflx", "relay"):
        raise IceError("bad_candidate", "a candidate's type is not host, srflx or relay")
    try:
        address = ipaddress.ip_address(candidate.host)
    except ValueError:
        raise IceError("bad_candidate", "a candidate's address is not an IP address") from None
    if (
        address.is_unspecified
        or address.is_multicast
        or address == ipaddress.IPv4Address("255.255.255.255")
    ):
        raise IceError("bad_candidate", "a candidate's address is not one a peer can have")
    if not 0 < candidate.port <= 0xFFFF or not 0 < candidate.priority < 2**32:
        raise IceError("bad_candidate", "a candidate's port or priority is out of range")
    candidate.host = host_text(address)
    candidate.transport = "udp"
    return candidate


def parse_remote(ufrag: str, candidates: Sequence[str]) -> tuple[RemoteIce, list[IceError]]:
    """A peer's ICE from the map's fields: IceError for a bad ufrag; bad candidates are
    skipped and returned beside the rest (at most :data:`MAX_CANDIDATES` are used)."""
    check_ufrag(ufrag)
    good: list[Candidate] = []
    errors: list[IceError] = []
    for sdp in candidates[:MAX_CANDIDATES]:
        try:
            good.append(parse_candidate(sdp))
        except IceError as e:
            errors.append(e)
    return RemoteIce(ufrag, tuple(good)), errors


# ---------------------------------------------------------------------- pairs


class RelayedCandidate(Candidate):
    """This node's relayed candidate: an aioice candidate that also names the relay link
    its allocation is on (:class:`wgpy.nat.relay.RelayLink`)."""

    def __init__(self, link: RelayLink, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.link = link


class Pair:
    """A local and a remote candidate, checked together; ``address`` is the peer's address
    the checks go to, ``key`` the core's key for it: ``address`` itself, or for a pair on a
    local relay a :class:`~wgpy.endpoint.RelayKey` through that relay (checks, and WireGuard
    once selected, are sent to ``key``)."""

    __slots__ = (
        "address",
        "key",
        "local",
        "nominated",
        "remote",
        "remote_nominated",
        "rtt",
        "state",
        "task",
    )

    def __init__(self, local: Candidate, remote: Candidate) -> None:
        self.local = local
        self.remote = remote
        self.address: tuple[str, int] = (remote.host, remote.port)
        self.key: EndpointKey = self.address
        if isinstance(local, RelayedCandidate):
            self.key = RelayKey(remote.host, remote.port, local.link)
        self.state = PairState.WAITING
        self.nominated = False
        self.remote_nominated = False  # the controlling side sent USE-CANDIDATE on it
        self.rtt: float | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def relayed(self) -> bool:
        """Whether either end is a TURN relay."""
        return self.local.type == "relay" or self.remote.type == "relay"

    @property
    def relay_name(self) -> str | None:
        """The relay the path goes through: ours by its name, the peer's by its address."""
        if isinstance(self.local, RelayedCandidate):
            return self.local.link.name
        if self.remote.type == "relay":
            return self.remote.host
        return None

    @property
    def base(self) -> str:
        """Which local socket the pair uses: the WireGuard socket of a family, or a relay."""
        if self.local.type == "relay":
            return f"relay {self.local.host}:{self.local.port}"
        return f"ipv{_version(self.local.host)}"

    def priority(self, controlling: bool) -> int:
        return candidate_pair_priority(self.local, self.remote, controlling)

    def __repr__(self) -> str:
        return f"<Pair {self.local.type}->{self.remote.type} {self.address} {self.state.name}>"


def _version(host: str) -> int:
    return ipaddress.ip_address(host).version


def _link(candidate: Candidate) -> RelayLink | None:
    return candidate.link if isinstance(candidate, RelayedCandidate) else None


def form_pairs(
    local: Sequence[Candidate], remote: Sequence[Candidate], controlling: bool
) -> list[Pair]:
    """The check list: each remote candidate with each local base of its address family,
    redundant pairs pruned (every host and server-reflexive candidate of this node is the
    one WireGuard socket of its family: the best of them stands for it), highest priority
    first, at most :data:`MAX_PAIRS`."""
    bases: dict[str, Candidate] = {}
    for candidate in local:
        if candidate.component != 1 or candidate.transport.lower() != "udp":
            continue
        if candidate.type == "relay" and not isinstance(candidate, RelayedCandidate):
            continue  # a relayed address without its link: nothing here can send from it
        base = Pair(candidate, candidate).base
        best = bases.get(base)
        if best is None or candidate.priority > best.priority:
            bases[base] = candidate
    pairs: dict[tuple[str, tuple[str, int]], Pair] = {}
    for r in remote:
        version = _version(r.host)
        for base, candidate in bases.items():
            if _version(candidate.host) != version:
                continue
            pair = Pair(candidate, r)
            old = pairs.get((base, pair.address))
            if old is None or pair.priority(controlling) > old.priority(controlling):
                pairs[(base, pair.address)] = pair
    ordered = sorted(pairs.values(), key=lambda p: p.priority(controlling), reverse=True)
    return ordered[:MAX_PAIRS]


# ---------------------------------------------------------------------- messages


def binding_request(
    *,
    keys: PairKeys,
    controlling: bool,
    tie_breaker: int,
    priority: int,
    nominate: bool = False,
) -> stun.Message:
    """A connectivity check (RFC 8445 7.2.2), signed with the peer's key for this pair."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{keys.remote_ufrag}:{keys.local_ufrag}"
    request.attributes["PRIORITY"] = priority
    if controlling:
        request.attributes["ICE-CONTROLLING"] = tie_breaker
        if nominate:
            request.attributes["USE-CANDIDATE"] = None
    else:
        request.attributes["ICE-CONTROLLED"] = tie_breaker
    request.add_message_integrity(keys.outbound)
    return request


def check_username(message: stun.Message, local_ufrag: str) -> str:
    """The sender's ufrag, if ``message`` (as :func:`aioice.stun.parse_message` read it) is a
    Binding request for ``local_ufrag`` with a PRIORITY, a MESSAGE-INTEGRITY and a
    FINGERPRINT; else IceError (a drop). The integrity is not checked here: the sender's
    ufrag says which peer's key to check it with (:func:`authenticate_request`)."""
    if message.message_method != stun.Method.BINDING:
        raise IceError("not_binding", "the request is not a Binding request")
    username = message.attributes.get("USERNAME")
    if not isinstance(username, str):
        raise IceError("no_username", "the check has no USERNAME")
    ours, colon, theirs = username.partition(":")
    if not colon or ours != local_ufrag or not theirs:
        raise IceError("unknown_ufrag", "the check is not for this node's ufrag")
    if "MESSAGE-INTEGRITY" not in message.attributes or "FINGERPRINT" not in message.attributes:
        raise IceError("unsigned", "the check has no MESSAGE-INTEGRITY or FINGERPRINT")
    if not isinstance(message.attributes.get("PRIORITY"), int):
        raise IceError("no_priority", "the check has no PRIORITY")
    return theirs


def authenticate_request(message: stun.Message, keys: PairKeys) -> None:
    """Whether ``message`` is a check from the peer of ``keys`` to us: the USERNAME names both
    ufrags of the pair (:func:`check_username`) and the MESSAGE-INTEGRITY is keyed with our
    inbound key for that peer (compared in constant time by aioice); else IceError (a drop:
    ``bad_integrity`` for a check in the peer's name by anybody without the key)."""
    if check_username(message, keys.local_ufrag) != keys.remote_ufrag:
        raise IceError("unknown_ufrag", "the check is not from this peer's ufrag")
    if not message.check_message_integrity(keys.inbound):
        raise IceError("bad_integrity", "the check's MESSAGE-INTEGRITY does not match")


def success_response(request: stun.Message, address: tuple[str, int], keys: PairKeys) -> bytes:
    """The answer to an authenticated check: where it came from, signed with the key the
    check was signed with (ours for this peer)."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = address
    response.add_message_integrity(keys.inbound)
    return bytes(response)


def error_response(request: stun.Message, code: int, reason: str, keys: PairKeys) -> bytes:
    response = stun.Message(
        message_method=request.message_method,
        message_class=stun.Class.ERROR,
        transaction_id=request.transaction_id,
    )
    response.attributes["ERROR-CODE"] = (code, reason)
    response.add_message_integrity(keys.inbound)
    return bytes(response)


def role_conflict(controlling: bool, tie_breaker: int, request: stun.Message) -> str | None:
    """RFC 8445 7.3.1.1 for an incoming check: None (no conflict), ``"switch"`` (we change
    role) or ``"reject"`` (we keep it and answer 487)."""
    if controlling and "ICE-CONTROLLING" in request.attributes:
        theirs = request.attributes["ICE-CONTROLLING"]
        return "reject" if tie_breaker >= theirs else "switch"
    if not controlling and "ICE-CONTROLLED" in request.attributes:
        theirs = request.attributes["ICE-CONTROLLED"]
        return "reject" if tie_breaker < theirs else "switch"
    return None


# ---------------------------------------------------------------------- one peer's checks


class IceSession:
    """One peer's checks over ``transport``: rounds of checks (:meth:`start`), answers to the
    peer's checks (:meth:`handle_request`, after the caller authenticated them), and consent
    checks on a selected pair (:meth:`consent`). ``keys()`` gives the pair's keys
    (:class:`PairKeys`, derived once by the caller; None: none can be, checks fail).
    ``on_selected(pair)`` is called when a pair is nominated (again when a later round
    nominates another); ``on_failed()`` when a round ends without one."""

    def __init__(
        self,
        transport: StunTransport,
        *,
        keys: Callable[[], PairKeys | None],
        remote: RemoteIce,
        local_candidates: Callable[[], Sequence[Candidate]],
        controlling: bool,
        tie_breaker: int,
        on_selected: Callable[[Pair], None],
        on_failed: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
        log: Any,
        relay_hold: float = RELAY_HOLD,
    ) -> None:
        self.transport = transport
        self.keys = keys
        self.remote = remote
        self.local_candidates = local_candidates
        self.controlling = controlling
        self.tie_breaker = tie_breaker
        self.on_selected = on_selected
        self.on_failed = on_failed
        self.loop = loop
        self.log = log
        self.relay_hold = relay_hold
        self.pairs: list[Pair] = []
        self.selected: Pair | None = None
        self.rounds = 0
        self.nominations = 0  # pairs selected, the same one again included
        self.role_switches = 0
        self._round: asyncio.Task[None] | None = None
        self._started = 0.0
        self._wake = asyncio.Event()
        self._closed = False
        self._relay_first = False

    @property
    def running(self) -> bool:
        return self._round is not None and not self._round.done()

    # ------------------------------------------------------------------ rounds

    def start(self, *, relay_first: bool = False) -> None:
        """Start a round of checks over fresh pairs (unless one is running). ``relay_first``:
        the direct path just stopped answering, so relayed pairs are not held back and one
        that works is nominated without waiting for the direct ones to fail (a later round
        upgrades to direct again)."""
        if self._closed or self.running:
            return
        self._relay_first = relay_first
        self._cancel_checks()
        # a nomination the controlling peer made stays with its pair across rounds: the
        # controlled side selects it once its own check of the pair succeeds
        nominated = {(p.base, p.address) for p in self.pairs if p.remote_nominated}
        self.pairs = form_pairs(self.local_candidates(), self.remote.candidates, self.controlling)
        for pair in self.pairs:
            pair.remote_nominated = (pair.base, pair.address) in nominated
        self._started = self.loop.time()
        self.rounds += 1
        self._round = self.loop.create_task(self._run())

    def close(self) -> None:
        self._closed = True
        if self._round is not None:
            self._round.cancel()
        self._cancel_checks()

    def _cancel_checks(self) -> None:
        for pair in self.pairs:
            if pair.task is not None:
                pair.task.cancel()
                pair.task = None

    async def _run(self) -> None:
        nominations = self.nominations
        deadline = self._started + ROUND_TIMEOUT
        first_valid: float | None = None
        try:
            while self.loop.time() < deadline:
                now = self.loop.time()
                if self.nominations != nominations:
                    # nominated (by us, or the controlling peer); on a relay while direct
                    # pairs are still checked, the round goes on: one that works takes over
                    selected = self.selected
                    if selected is None or not selected.relayed or not self._direct_pending():
                        return
                    nominations = self.nominations
                pair = self._next_ordinary(now)
                if pair is not None:
                    self._check(pair)
                if self.controlling:
                    valid = [p for p in self.pairs if p.state == PairState.SUCCEEDED]
                    if valid and first_valid is None:
                        first_valid = now
                    if (
                        valid
                        and first_valid is not None
                        and self._ready_to_nominate(now, first_valid)
                    ):
                        best = max(valid, key=lambda p: p.priority(True))
                        if best is not self.selected:
                            await self._nominate(best)
                            continue
                if all(p.state == PairState.FAILED for p in self.pairs) and self.controlling:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PACING)
            if self.nominations != nominations or (
                self.selected is not None and self.selected in self.pairs
            ):
                return  # on the relay this round nominated; no direct pair worked
            self.log.info("ICE checks found no path", pairs=len(self.pairs), round=self.rounds)
            self.on_failed()
        finally:
            self._cancel_checks()

    def _next_ordinary(self, now: float) -> Pair | None:
        for pair in self.pairs:
            if pair.state == PairState.WAITING and pair.task is None:
                if pair.relayed and now < self._started + self.relay_hold and not self._relay_first:
                    continue
                return pair
        return None

    def _ready_to_nominate(self, now: float, first_valid: float) -> bool:
        """Nominate once no better pair is still being checked, or after NOMINATE_WAIT. A
        relayed best pair is nominated after NOMINATE_WAIT too when there is no path yet
        (traffic starts on the relay; a direct pair that succeeds later in the round takes
        over), but waits for the direct ones while a path is selected (a retry round)."""
        valid = [p for p in self.pairs if p.state == PairState.SUCCEEDED]
        best = max(valid, key=lambda p: p.priority(True))
        pending = [
            p
            for p in self.pairs
            if p.state in (PairState.WAITING, PairState.IN_PROGRESS)
            and p.priority(True) > best.priority(True)
        ]
        if not pending:
            return True
        if best.relayed and self._relay_first:
            return True
        if best.relayed and any(not p.relayed for p in pending) and self.selected is not None:
            return False  # already on a path: the relay is not worth a nomination yet
        return now - first_valid >= NOMINATE_WAIT

    def _direct_pending(self) -> bool:
        """Whether a direct pair is still waiting or being checked."""
        return any(
            not p.relayed and p.state in (PairState.WAITING, PairState.IN_PROGRESS)
            for p in self.pairs
        )

    # ------------------------------------------------------------------ checks

    def _check(self, pair: Pair) -> None:
        """Start a check on ``pair`` in a task, unless one runs."""
        if pair.task is None and not self._closed:
            pair.state = PairState.IN_PROGRESS
            pair.task = self.loop.create_task(self._check_task(pair))

    async def _check_task(self, pair: Pair) -> None:
        try:
            rtt = await self._request(pair, nominate=False)
            pair.state = PairState.SUCCEEDED if rtt is not None else PairState.FAILED
            if rtt is not None:
                pair.rtt = rtt
                if pair.remote_nominated and not self.controlling:
                    self._select(pair)
        finally:
            pair.task = None
            self._wake.set()

    async def _nominate(self, pair: Pair) -> bool:
        rtt = await self._request(pair, nominate=True)
        if rtt is None:
            pair.state = PairState.FAILED
            return False
        pair.rtt = rtt
        self._select(pair)
        return True

    async def _request(self, pair: Pair, *, nominate: bool) -> float | None:
        """Send a check on ``pair``; its round-trip time, or None when it failed. A role
        conflict (487) switches our role and checks again, once."""
        keys = self.keys()
        if keys is None:
            return None
        for _ in range(2):
            request = binding_request(
                keys=keys,
                controlling=self.controlling,
                tie_breaker=self.tie_breaker,
                priority=candidate_priority(1, "prflx"),
                nominate=nominate and self.controlling,
            )
            sent = time.monotonic()  # uvloop's loop.time() counts whole milliseconds
            response: stun.Message | None
            try:
                response = await self.transport.request(
                    request,
                    pair.key,
                    rto=CHECK_RTO,
                    retries=CHECK_RETRIES,
                    integrity_key=keys.outbound,
                )
            except stun.TransactionFailed as e:
                response = e.response
            except (TimeoutError, stun.TransactionError, OSError, ValueError):
                return None
            if response is None:
                return None
            if response.message_class == stun.Class.RESPONSE:
                if "MESSAGE-INTEGRITY" not in response.attributes:
                    return None  # unsigned: not the peer
                return time.monotonic() - sent
            code = response.attributes.get("ERROR-CODE", (0, ""))[0]
            if code != ROLE_CONFLICT or "MESSAGE-INTEGRITY" not in response.attributes:
                return None
            self._switch_role(not self.controlling)
        return None

    def _switch_role(self, controlling: bool) -> None:
        self.role_switches += 1
        self.controlling = controlling
        self.pairs.sort(key=lambda p: p.priority(controlling), reverse=True)

    def _select(self, pair: Pair) -> None:
        pair.nominated = True
        self.nominations += 1
        self.selected = pair
        self._wake.set()
        self.on_selected(pair)

    # ------------------------------------------------------------------ the peer's checks

    def handle_request(self, message: stun.Message, key: EndpointKey) -> None:
        """A check from the peer arrived from ``key``, authenticated with this pair's keys by
        the caller (:func:`authenticate_request`): answer it (or 487 on a role conflict we
        win), learn a peer-reflexive candidate, check back (a triggered check) and take a
        nomination."""
        keys = self.keys()
        if self._closed or keys is None:
            return
        address = (str(key[0]), int(key[1]))
        verdict = role_conflict(self.controlling, self.tie_breaker, message)
        if verdict == "reject":
            self.transport.send(error_response(message, ROLE_CONFLICT, "Role Conflict", keys), key)
            return
        if verdict == "switch":
            self._switch_role(not self.controlling)
        self.transport.send(success_response(message, address, keys), key)
        if not self.running and self.selected is None:
            self.start()  # the peer checks: so do we
        pair = self._pair_for(address, message, key)
        if pair is None:
            return
        if pair.state in (PairState.WAITING, PairState.FROZEN, PairState.FAILED):
            pair.state = PairState.WAITING
            self._check(pair)  # triggered: opens our NAT towards the peer at once
        if "USE-CANDIDATE" in message.attributes and not self.controlling:
            pair.remote_nominated = True
            if pair.state == PairState.SUCCEEDED:
                self._select(pair)

    def _pair_for(
        self, address: tuple[str, int], message: stun.Message, key: EndpointKey | None = None
    ) -> Pair | None:
        """The pair the check that arrived from ``key`` belongs to (through a relay: a pair on
        that relay), learning a peer-reflexive one if there is none."""
        link = key[2] if key is not None and type(key) is RelayKey else None
        for pair in self.pairs:
            if pair.address == address and _link(pair.local) is link:
                return pair
        learned = sum(1 for p in self.pairs if p.remote.type == "prflx")
        if len(self.pairs) >= MAX_PAIRS or learned >= MAX_PEER_REFLEXIVE:
            return None
        version = _version(address[0])
        locals_ = [
            c
            for c in self.local_candidates()
            if _link(c) is link
            and (link is not None or c.type != "relay")
            and _version(c.host) == version
        ]
        if not locals_:
            return None
        remote = Candidate(
            foundation="prflx",
            component=1,
            transport="udp",
            priority=int(message.attributes["PRIORITY"]),
            host=address[0],
            port=address[1],
            type="prflx",
        )
        pair = Pair(max(locals_, key=lambda c: c.priority), remote)
        self.pairs.append(pair)
        self.pairs.sort(key=lambda p: p.priority(self.controlling), reverse=True)
        return pair

    # ------------------------------------------------------------------ consent

    async def consent(self, pair: Pair) -> float | None:
        """A check on the selected ``pair`` (RFC 7675 consent, and a keepalive for the NATs
        on the way): its round-trip time, or None when it went unanswered."""
        rtt = await self._request(pair, nominate=False)
        if rtt is not None:
            pair.rtt = rtt
        return rtt
