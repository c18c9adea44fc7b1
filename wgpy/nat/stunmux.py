"""STUN and TURN ChannelData on the WireGuard port (RFC 8489, RFC 8656 section 12).

A NAT maps a socket, not a protocol: the address a STUN server sees is WireGuard's only if
the request left from WireGuard's own socket, and an ICE check punches a hole for WireGuard
only if it goes through that socket too. :class:`StunMux` shares the port. It installs
itself as the bind's ``demux`` (:mod:`wgpy.device.bind`), so the bind hands it every datagram
that does not start as a WireGuard message and nothing else: nothing is added per WireGuard
packet. It sends with the bind's ``send_batch``, from the very socket WireGuard uses.

What arrives is told apart by its first bytes (:func:`classify`):

- STUN: the two top bits zero, the magic cookie 0x2112A442 at offset 4, a length that is a
  multiple of 4 and matches the datagram, at most :data:`MAX_STUN` bytes. A response (success
  or error) is matched by its transaction id to a request in flight, from the address that
  request went to, and only then parsed (with aioice's :mod:`aioice.stun`), its
  MESSAGE-INTEGRITY checked where the request had a key; a request goes to
  :attr:`StunMux.on_request`, an indication to :attr:`StunMux.on_indication`.
- TURN ChannelData: the first byte 0x40-0x7F, a length that fits: to
  :attr:`StunMux.on_channel_data`.
- Anything else is dropped.

Every datagram that is not used is dropped and counted in :attr:`StunMux.drops` by reason
(the ``DROP_*`` names below), never raised: this runs inside the interface's read loop, and
the network is hostile. A request with no handler is dropped before it is parsed, and so is
a response that matches nothing in flight: a flood of either costs a dictionary look-up each.

:meth:`StunMux.request` sends a request and waits for its answer, sending it again on the
schedule of RFC 8489 section 6.2.1 (an RTO that doubles; :class:`Retransmissions`, without
I/O). At most :data:`MAX_PENDING` transactions are in flight at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aioice import stun

from ..device.bind import Bind
from ..endpoint import Endpoint, EndpointKey
from ..log import get_logger

__all__ = [
    "CHANNEL_DATA",
    "MAX_PENDING",
    "MAX_STUN",
    "RETRIES",
    "RTO",
    "STUN",
    "ChannelDataHandler",
    "Retransmissions",
    "StunBusy",
    "StunClosed",
    "StunErrorResponse",
    "StunMux",
    "StunRequestHandler",
    "StunTimeout",
    "classify",
]

COOKIE = b"\x21\x12\xa4\x42"  # the magic cookie, at offset 4 of every STUN message
HEADER = 20  # bytes: type, length, cookie, transaction id
MAX_STUN = 1500  # bytes: a STUN message bigger than one Ethernet frame is not ours
MAX_PENDING = 256  # transactions in flight at once (ICE checks, discovery)
RTO = 0.1  # seconds before the first retransmission (RFC 8489 says 0.5 s on the internet)
RETRIES = 6  # retransmissions after the first send (RFC 8489's Rc of 7 sends, as aioice)
ERROR_LOG_INTERVAL = 10.0  # seconds: a handler that fails is logged at most this often

# what classify() says a datagram is ...
STUN = "stun"
CHANNEL_DATA = "channel-data"
LATE_RESPONSE = "late-response"  # in StunMux.received: a retransmission's answer, ignored
# ... or why it is dropped; the keys of StunMux.drops
DROP_NOT_STUN = "not-stun"  # neither STUN nor ChannelData
DROP_TRUNCATED = "truncated"  # shorter than a header
DROP_BAD_LENGTH = "bad-length"  # the length field does not match the datagram
DROP_TOO_LARGE = "too-large"  # a STUN message over MAX_STUN bytes
DROP_MALFORMED = "malformed"  # a STUN message that does not parse
DROP_UNMATCHED = "unmatched-response"  # a response to nothing in flight
DROP_WRONG_SOURCE = "wrong-source"  # a response from elsewhere than the request went to
DROP_WRONG_METHOD = "wrong-method"  # a response of another method than the request's
DROP_NO_INTEGRITY = "no-integrity"  # no MESSAGE-INTEGRITY where the request had a key
DROP_BAD_INTEGRITY = "bad-integrity"  # MESSAGE-INTEGRITY does not match the key
DROP_NO_REQUEST_HANDLER = "no-request-handler"
DROP_NO_INDICATION_HANDLER = "no-indication-handler"
DROP_NO_CHANNEL_HANDLER = "no-channel-handler"
DROP_HANDLER_ERROR = "handler-error"  # a handler raised (a bug; logged)

StunRequestHandler = Callable[[stun.Message, EndpointKey, bytes], None]
"""Takes a STUN request (or indication), the endpoint it came from, and its bytes."""
ChannelDataHandler = Callable[[bytes, EndpointKey], None]
"""Takes a TURN ChannelData message (its whole datagram) and the endpoint it came from."""


def classify(data: bytes) -> str:
    """:data:`STUN`, :data:`CHANNEL_DATA`, or the reason ``data`` is neither (a ``DROP_*``
    value). Reads the header only."""
    if not data:
        return DROP_TRUNCATED
    first = data[0]
    if 0x40 <= first <= 0x7F:
        if len(data) < 4:
            return DROP_TRUNCATED
        length = (data[2] << 8) | data[3]
        # over UDP the payload may be followed by padding, never cut short
        return CHANNEL_DATA if 4 + length <= len(data) else DROP_BAD_LENGTH
    if first & 0xC0 or data[4:8] != COOKIE:
        return DROP_NOT_STUN if len(data) >= HEADER else DROP_TRUNCATED
    if len(data) < HEADER:
        return DROP_TRUNCATED
    if len(data) > MAX_STUN:
        return DROP_TOO_LARGE
    length = (data[2] << 8) | data[3]
    if length & 3 or HEADER + length != len(data):
        return DROP_BAD_LENGTH
    return STUN


class StunTimeout(stun.TransactionTimeout, TimeoutError):
    """No answer to a STUN request, after every retransmission."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StunErrorResponse(stun.TransactionFailed):
    """The other side answered a STUN request with an error response (``response``; its
    ERROR-CODE in ``code`` and ``reason``)."""

    def __init__(self, response: stun.Message, endpoint: EndpointKey) -> None:
        super().__init__(response)
        self.endpoint = endpoint
        error = response.attributes.get("ERROR-CODE")
        self.code, self.reason = error if isinstance(error, tuple) else (0, "")

    def __str__(self) -> str:
        what = f"{self.code} {self.reason}".strip() if self.code else "an error without a code"
        return f"{_shown(self.endpoint)} answered the STUN request with {what}"


class StunBusy(stun.TransactionError):
    """Too many STUN transactions in flight; wait for some to end."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        super().__init__(limit)
        self.limit = limit

    def __str__(self) -> str:
        return f"too many STUN transactions are in flight (at most {self.limit}); try again"


class StunClosed(stun.TransactionError):
    """The multiplexer was closed while a request waited."""

    def __str__(self) -> str:
        return "the STUN multiplexer was closed before an answer came"


class Retransmissions:
    """When a STUN request over UDP is sent again (RFC 8489 section 6.2.1), without I/O:
    first at ``now + rto``, then at intervals that double, ``retries`` times; at the deadline
    after the last one the transaction has failed."""

    def __init__(self, now: float, rto: float = RTO, retries: int = RETRIES) -> None:
        if rto <= 0 or retries < 0:
            raise ValueError("a STUN retransmission timeout must be positive and retries >= 0")
        self.started = now
        self.sent = 1
        self.retries = retries
        self._interval = rto
        self.next_at = now + rto
        """When :meth:`on_timer` is due."""

    def on_timer(self, now: float) -> bool:
        """The deadline :attr:`next_at` has come: True to send again (and :attr:`next_at`
        moves on), False when the transaction has timed out."""
        if self.sent > self.retries:
            return False
        self.sent += 1
        self._interval *= 2
        self.next_at = now + self._interval
        return True


@dataclass(eq=False)
class _Transaction:
    raw: bytes
    endpoint: EndpointKey
    method: int
    integrity_key: bytes | None
    future: asyncio.Future[tuple[stun.Message, EndpointKey]]
    retransmissions: Retransmissions
    timer: asyncio.TimerHandle | None = field(default=None)


class StunMux:
    """STUN and ChannelData on ``bind``'s port; see the module docstring. Installs itself as
    ``bind.demux`` (ValueError if the bind already has one); :meth:`close` takes it away."""

    def __init__(
        self, bind: Bind, loop: asyncio.AbstractEventLoop, *, max_pending: int = MAX_PENDING
    ) -> None:
        if bind.demux is not None:
            raise ValueError("this bind already has a demultiplexer: one StunMux per bind")
        self.bind = bind
        self.loop = loop
        self.max_pending = max_pending
        self.on_request: StunRequestHandler | None = None
        """Called with each STUN request (an ICE check); None: requests are dropped."""
        self.on_indication: StunRequestHandler | None = None
        """Called with each STUN indication (a TURN Data indication, a keepalive)."""
        self.on_channel_data: ChannelDataHandler | None = None
        """Called with each TURN ChannelData message; None: they are dropped."""
        self.drops: Counter[str] = Counter()
        """Datagrams dropped, by reason (``DROP_*``)."""
        self.received: Counter[str] = Counter()
        """Datagrams used: ``response``, ``request``, ``indication``, ``channel-data``."""
        self.closed = False
        self._pending: dict[bytes, _Transaction] = {}
        self._answered: dict[bytes, None] = {}  # ids of answered, retransmitted transactions
        self._error_logged_at = float("-inf")
        self.log = get_logger(component="stun")
        bind.demux = self.datagram_received

    @property
    def pending(self) -> int:
        """Transactions in flight."""
        return len(self._pending)

    # ------------------------------------------------------------------ sending

    def send(self, data: bytes, endpoint: EndpointKey) -> None:
        """Send ``data`` to ``endpoint`` from the WireGuard socket (a STUN response, a TURN
        message). UDP is lossy: failures are counted by the bind, not raised."""
        self.bind.send_batch([(data, endpoint)])

    def send_stun(self, message: stun.Message, addr: EndpointKey) -> None:
        """Send a STUN message (aioice's ``TransactionSender``)."""
        self.send(bytes(message), addr)

    async def request(
        self,
        message: stun.Message,
        endpoint: EndpointKey,
        *,
        rto: float = RTO,
        retries: int = RETRIES,
        integrity_key: bytes | None = None,
    ) -> stun.Message:
        """Send the STUN request ``message`` to ``endpoint`` (add MESSAGE-INTEGRITY and
        FINGERPRINT to it first, where wanted) and return the success response. Sent again
        after ``rto`` seconds, then at doubling intervals, ``retries`` times.

        With ``integrity_key`` the response must carry a MESSAGE-INTEGRITY made with it.
        Raises :class:`StunTimeout` (a TimeoutError) when nothing answers,
        :class:`StunErrorResponse` for an error response, :class:`StunBusy` when
        :data:`MAX_PENDING` transactions are in flight, :class:`StunClosed` if the mux is
        closed; all are aioice ``TransactionError``s."""
        response, _ = await self.transact(
            message, endpoint, rto=rto, retries=retries, integrity_key=integrity_key
        )
        return response

    async def transact(
        self,
        message: stun.Message,
        endpoint: EndpointKey,
        *,
        rto: float = RTO,
        retries: int = RETRIES,
        integrity_key: bytes | None = None,
    ) -> tuple[stun.Message, EndpointKey]:
        """:meth:`request`, and the endpoint the response came from: with the bind's sticky
        source, so it says which local address the response arrived at."""
        if message.message_class != stun.Class.REQUEST:
            raise ValueError("StunMux.request sends requests; send others with send_stun")
        if self.closed:
            raise StunClosed()
        tid = message.transaction_id
        if tid in self._pending:
            raise ValueError("a STUN request with this transaction id is in flight already")
        if len(self._pending) >= self.max_pending:
            raise StunBusy(self.max_pending)
        transaction = _Transaction(
            raw=bytes(message),
            endpoint=endpoint,
            method=int(message.message_method),
            integrity_key=integrity_key,
            future=self.loop.create_future(),
            retransmissions=Retransmissions(self.loop.time(), rto, retries),
        )
        self._pending[tid] = transaction
        try:
            self.send(transaction.raw, endpoint)
            self._arm(transaction)
            return await transaction.future
        finally:
            if self._pending.get(tid) is transaction:
                del self._pending[tid]
                if transaction.retransmissions.sent > 1 and transaction.future.done():
                    self._remember_answered(tid)
            if transaction.timer is not None:
                transaction.timer.cancel()

    def _remember_answered(self, tid: bytes) -> None:
        """A retransmitted request may be answered once per send: the answers that come after
        the first are late, not unmatched. The last MAX_PENDING such ids are kept."""
        self._answered[tid] = None
        if len(self._answered) > self.max_pending:
            del self._answered[next(iter(self._answered))]

    def _arm(self, transaction: _Transaction) -> None:
        at = transaction.retransmissions.next_at
        transaction.timer = self.loop.call_at(at, self._on_timer, transaction)

    def _on_timer(self, transaction: _Transaction) -> None:
        transaction.timer = None
        if transaction.future.done():
            return
        retransmissions = transaction.retransmissions
        # a timer that fires early still counts as on time (as the interface's timer does)
        if retransmissions.on_timer(max(retransmissions.next_at, self.loop.time())):
            self.send(transaction.raw, transaction.endpoint)
            self._arm(transaction)
            return
        waited = self.loop.time() - retransmissions.started
        transaction.future.set_exception(
            StunTimeout(
                f"no answer from {_shown(transaction.endpoint)} to a STUN request "
                f"after {retransmissions.sent} tries in {waited:.1f} s"
            )
        )

    def close(self) -> None:
        """Stop: the bind's ``demux`` is taken away (if it is still this mux's), and every
        request in flight raises :class:`StunClosed`."""
        self.closed = True
        if self.bind.demux == self.datagram_received:
            self.bind.demux = None
        for transaction in list(self._pending.values()):
            if not transaction.future.done():
                transaction.future.set_exception(StunClosed())
        self._pending.clear()

    # ------------------------------------------------------------------ receiving

    def datagram_received(self, data: bytes, endpoint: EndpointKey) -> None:
        """The bind's ``demux``: one datagram that is not WireGuard's. Never raises."""
        try:
            self._received(data, endpoint)
        except Exception:  # a bug in a handler (or here): counted, logged, never raised
            self.drops[DROP_HANDLER_ERROR] += 1
            now = self.loop.time()
            if now - self._error_logged_at >= ERROR_LOG_INTERVAL:
                self._error_logged_at = now
                self.log.exception("a STUN or ChannelData handler failed; the datagram is dropped")

    def _received(self, data: bytes, endpoint: EndpointKey) -> None:
        kind = classify(data)
        if kind == CHANNEL_DATA:
            if self.on_channel_data is None:
                self.drops[DROP_NO_CHANNEL_HANDLER] += 1
                return
            self.received[CHANNEL_DATA] += 1
            self.on_channel_data(data, endpoint)
            return
        if kind != STUN:
            self.drops[kind] += 1
            return
        message_class = ((data[0] << 8) | data[1]) & 0x0110
        if message_class & 0x0100:  # a success or error response
            self._response(data, endpoint)
            return
        if message_class == stun.Class.REQUEST:
            handler, name, no_handler = self.on_request, "request", DROP_NO_REQUEST_HANDLER
        else:
            handler, name, no_handler = self.on_indication, "indication", DROP_NO_INDICATION_HANDLER
        if handler is None:
            self.drops[no_handler] += 1
            return
        message = self._parse(data)
        if message is None:
            return
        self.received[name] += 1
        handler(message, endpoint, data)

    def _response(self, data: bytes, endpoint: EndpointKey) -> None:
        tid = data[8:HEADER]
        transaction = self._pending.get(tid)
        if transaction is None or transaction.future.done():
            # a second answer to a retransmitted request: remembered once its requester
            # resumed, or still pending here when it comes before that (a busy loop)
            late = transaction is not None and transaction.retransmissions.sent > 1
            if late or tid in self._answered:
                self.received[LATE_RESPONSE] += 1
            else:
                self.drops[DROP_UNMATCHED] += 1
            return
        if not _same_endpoint(transaction.endpoint, endpoint):
            self.drops[DROP_WRONG_SOURCE] += 1
            return
        message = self._parse(data)
        if message is None:
            return
        if int(message.message_method) != transaction.method:
            self.drops[DROP_WRONG_METHOD] += 1
            return
        key = transaction.integrity_key
        if key is not None and not message.check_message_integrity(key):
            signed = "MESSAGE-INTEGRITY" in message.attributes
            self.drops[DROP_BAD_INTEGRITY if signed else DROP_NO_INTEGRITY] += 1
            return
        self.received["response"] += 1
        if message.message_class == stun.Class.RESPONSE:
            transaction.future.set_result((message, endpoint))
        else:
            transaction.future.set_exception(StunErrorResponse(message, endpoint))

    def _parse(self, data: bytes) -> stun.Message | None:
        """``data`` as a STUN message, or None (counted) where it is not a valid one."""
        try:
            return stun.parse_message(data)
        except Exception:  # aioice raises ValueError, struct.error and others: all malformed
            self.drops[DROP_MALFORMED] += 1
            return None


def _same_endpoint(sent_to: EndpointKey, came_from: EndpointKey) -> bool:
    """Whether a response came from where its request went (sources aside)."""
    if sent_to[1] != came_from[1]:
        return False
    if sent_to[0] == came_from[0]:
        return True
    try:
        return ipaddress.ip_address(sent_to[0]) == ipaddress.ip_address(came_from[0])
    except ValueError:
        return False


def _shown(endpoint: EndpointKey) -> str:
    return str(Endpoint(endpoint[0], endpoint[1]))
