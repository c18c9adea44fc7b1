"""The node's resolver, sans-IO: one query's bytes in, what to do with it out.

:meth:`Resolver.handle` returns a :class:`Reply` (the answer's bytes), a :class:`Forward`
(a name outside the base domain: the shell sends the query upstream) or a :class:`Drop`
(counted by :class:`DropReason`; nothing is sent back). The wire format is dnslib's; no
packet is parsed here by hand.

- A and AAAA (and ANY) for a mesh name: its addresses, authoritative; another type: NOERROR
  with no records. A name under the base domain that does not exist: NXDOMAIN.
- PTR for an address in the table's networks (the overlay ranges): its full name, or
  NXDOMAIN; other reverse names are forwarded.
- An opcode other than QUERY: NOTIMP. Not one question: FORMERR. A class other than IN under
  the base domain: REFUSED.
- A message that does not parse, is larger than a query can be, has the TC bit, or is a
  response: dropped.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from dnslib import AAAA, CLASS, OPCODE, PTR, QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSRecord

from .names import NameTable, reverse_address

MAX_QUERY = 512  # bytes: a query (one question, maybe an OPT record) is far smaller
MIN_MESSAGE = 12  # the header
TTL = 60  # seconds: names change when the map does; keep caches short


class DropReason(StrEnum):
    MALFORMED = "malformed"  # does not parse as a DNS message
    OVERSIZED = "oversized"  # longer than MAX_QUERY
    TRUNCATED = "truncated"  # a query with the TC bit: the rest never comes
    NOT_QUERY = "not_query"  # a response, sent to a resolver
    RATE_LIMITED = "rate_limited"  # the source sent too many (counted by the shell)
    BUSY = "busy"  # too many forwarded queries outstanding (counted by the shell)
    SOURCE = "source"  # from an address the shell does not answer (the underlay)


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``query`` upstream; ``qid`` is the client's id, ``qname`` for logs."""

    query: DNSRecord
    qid: int
    qname: str


@dataclass(frozen=True, slots=True)
class Drop:
    reason: DropReason


Outcome = Reply | Forward | Drop


class Resolver:
    """Answers from a :class:`~wgpy.dns.names.NameTable`; :meth:`update` swaps the table when
    the map changes."""

    def __init__(self, table: NameTable) -> None:
        self.table = table
        self.drops: Counter[DropReason] = Counter()
        self.answered = 0
        self.forwarded = 0

    def update(self, table: NameTable) -> None:
        self.table = table

    def drop(self, reason: DropReason) -> Drop:
        self.drops[reason] += 1
        return Drop(reason)

    def handle(self, data: bytes) -> Outcome:
        """What to do with one query received as ``data`` (over UDP or TCP, without TCP's
        length prefix)."""
        if len(data) > MAX_QUERY:
            return self.drop(DropReason.OVERSIZED)
        if len(data) < MIN_MESSAGE:
            return self.drop(DropReason.MALFORMED)
        try:
            query = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, UnicodeError, TypeError):
            # dnslib raises DNSError for most damage, and other errors for some
            return self.drop(DropReason.MALFORMED)
        header = query.header
        if header.qr:
            return self.drop(DropReason.NOT_QUERY)
        if header.tc:
            return self.drop(DropReason.TRUNCATED)
        if header.opcode != OPCODE.QUERY:
            return self._reply(query, RCODE.NOTIMP)
        if len(query.questions) != 1:
            return self._reply(query, RCODE.FORMERR)
        question = query.q
        labels = [part.decode("ascii", "replace").lower() for part in question.qname.label]
        if any("." in part for part in labels):
            # a label holding a dot would read as two: never let it pass for a mesh name
            return self.drop(DropReason.MALFORMED)
        name = ".".join(labels)
        address = reverse_address(name)
        if address is not None and self.table.covers(address):
            return self._pointer(query, self.table.pointers.get(address))
        if not self.table.under_base(name):
            self.forwarded += 1
            return Forward(query, header.id, name)
        if question.qclass != CLASS.IN:
            return self._reply(query, RCODE.REFUSED)
        addresses = self.table.lookup(name)
        if addresses is None:
            return self._reply(query, RCODE.NXDOMAIN, authoritative=True)
        reply = self._response(query, authoritative=True)
        qtype = question.qtype
        for address in addresses:
            if isinstance(address, ipaddress.IPv4Address) and qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(str(address)), ttl=TTL))
            elif isinstance(address, ipaddress.IPv6Address) and qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.AAAA, rdata=AAAA(str(address)), ttl=TTL))
        self.answered += 1
        return Reply(bytes(reply.pack()))

    def _pointer(self, query: DNSRecord, target: str | None) -> Reply:
        """A reverse lookup of an overlay address: its name, or NXDOMAIN."""
        question = query.q
        if question.qclass != CLASS.IN:
            return self._reply(query, RCODE.REFUSED)
        if target is None:
            return self._reply(query, RCODE.NXDOMAIN, authoritative=True)
        reply = self._response(query, authoritative=True)
        if question.qtype in (QTYPE.PTR, QTYPE.ANY):
            reply.add_answer(RR(question.qname, QTYPE.PTR, rdata=PTR(target + "."), ttl=TTL))
        self.answered += 1
        return Reply(bytes(reply.pack()))

    def _response(self, query: DNSRecord, *, authoritative: bool = False) -> DNSRecord:
        # the header's bitmap carries the client's opcode and RD back; a question only when
        # there was exactly one (a FORMERR for none or many echoes none)
        header = DNSHeader(
            id=query.header.id, bitmap=query.header.bitmap, qr=1, ra=1, aa=int(authoritative)
        )
        questions = list(query.questions) if len(query.questions) == 1 else []
        return DNSRecord(header, questions=questions)

    def _reply(self, query: DNSRecord, rcode: int, *, authoritative: bool = False) -> Reply:
        reply = self._response(query, authoritative=authoritative)
        reply.header.rcode = rcode
        self.answered += 1
        return Reply(bytes(reply.pack()))


def servfail(query: DNSRecord) -> bytes:
    """SERVFAIL for a forwarded query that got no usable answer upstream."""
    header = DNSHeader(id=query.header.id, bitmap=query.header.bitmap, qr=1, ra=1)
    header.rcode = RCODE.SERVFAIL
    return bytes(DNSRecord(header, questions=list(query.questions)).pack())
