"""wgpy/dns/resolver.py: one query in, a reply, a forward or a counted drop out.

Queries are built and answers read with dnslib, as a client would."""

from __future__ import annotations

import ipaddress

from dnslib import CLASS, OPCODE, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from wgpy.dns.names import Host, build_table
from wgpy.dns.resolver import MAX_QUERY, Drop, DropReason, Forward, Reply, Resolver, servfail

HOSTS = [
    Host.of(
        "laptop",
        "alice",
        "mesh.internal",
        (ipaddress.ip_address("100.64.0.1"), ipaddress.ip_address("fd7a:115c:a1e0::1")),
    ),
    Host.of("nas", "bob", "mesh.internal", (ipaddress.ip_address("100.64.0.2"),)),
]


OVERLAY = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd7a:115c:a1e0::/48"))


def resolver() -> Resolver:
    return Resolver(build_table("mesh.internal", HOSTS, networks=OVERLAY))


def ask(r: Resolver, name: str, qtype: str = "A") -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    out = r.handle(bytes(query.pack()))
    assert isinstance(out, Reply)
    answer = DNSRecord.parse(out.data)
    assert answer.header.id == query.header.id and answer.header.qr == 1
    return answer


def test_a_and_aaaa_for_mesh_names() -> None:
    r = resolver()
    a = ask(r, "laptop.alice.mesh.internal")
    assert a.header.rcode == RCODE.NOERROR and a.header.aa == 1
    assert [str(rr.rdata) for rr in a.rr] == ["100.64.0.1"]
    assert [rr.ttl for rr in a.rr] == [60]
    aaaa = ask(r, "LAPTOP.Alice.mesh.internal.", "AAAA")
    assert [str(rr.rdata) for rr in aaaa.rr] == ["fd7a:115c:a1e0::1"]
    assert str(aaaa.q.qname) == "LAPTOP.Alice.mesh.internal."  # the question echoed as asked
    both = ask(r, "laptop.mesh.internal", "ANY")
    assert sorted(QTYPE[rr.rtype] for rr in both.rr) == ["A", "AAAA"]
    assert r.answered == 3


def test_short_form_and_nodata() -> None:
    r = resolver()
    assert [str(rr.rdata) for rr in ask(r, "nas.mesh.internal").rr] == ["100.64.0.2"]
    nodata = ask(r, "nas.bob.mesh.internal", "AAAA")  # a v4-only node
    assert nodata.header.rcode == RCODE.NOERROR and nodata.rr == []
    mx = ask(r, "nas.bob.mesh.internal", "MX")
    assert mx.header.rcode == RCODE.NOERROR and mx.rr == []
    parent = ask(r, "bob.mesh.internal")
    assert parent.header.rcode == RCODE.NOERROR and parent.rr == []


def test_nxdomain_under_the_base_domain() -> None:
    answer = ask(resolver(), "printer.bob.mesh.internal")
    assert answer.header.rcode == RCODE.NXDOMAIN and answer.header.aa == 1 and answer.rr == []


def test_other_names_are_forwarded() -> None:
    r = resolver()
    query = DNSRecord.question("Example.COM", "A")
    out = r.handle(bytes(query.pack()))
    assert isinstance(out, Forward)
    assert out.qid == query.header.id and out.qname == "example.com"
    assert isinstance(r.handle(bytes(DNSRecord.question("evilmesh.internal").pack())), Forward)
    assert r.forwarded == 2 and r.answered == 0


def test_notimp_formerr_refused() -> None:
    r = resolver()
    notify = DNSRecord(DNSHeader(id=7, opcode=OPCODE.NOTIFY), q=DNSQuestion("mesh.internal"))
    out = r.handle(bytes(notify.pack()))
    assert isinstance(out, Reply) and DNSRecord.parse(out.data).header.rcode == RCODE.NOTIMP
    two = DNSRecord(DNSHeader(id=8), questions=[DNSQuestion("a.com"), DNSQuestion("b.com")])
    out = r.handle(bytes(two.pack()))
    assert isinstance(out, Reply)
    formerr = DNSRecord.parse(out.data)
    assert formerr.header.rcode == RCODE.FORMERR and formerr.questions == []
    none = DNSRecord(DNSHeader(id=9))
    out = r.handle(bytes(none.pack()))
    assert isinstance(out, Reply) and DNSRecord.parse(out.data).header.rcode == RCODE.FORMERR
    chaos = DNSRecord(DNSHeader(id=10), q=DNSQuestion("nas.mesh.internal", QTYPE.A, CLASS.CH))
    out = r.handle(bytes(chaos.pack()))
    assert isinstance(out, Reply) and DNSRecord.parse(out.data).header.rcode == RCODE.REFUSED


def test_drops_are_counted_by_reason() -> None:
    r = resolver()
    good = bytes(DNSRecord.question("nas.mesh.internal").pack())
    response = bytes(DNSRecord.question("nas.mesh.internal").reply().pack())
    truncated = DNSRecord.question("nas.mesh.internal")
    dotted = bytearray(good)
    dotted[14] = ord(".")  # the first label, "nas", becomes "n.s": one label, not two
    truncated.header.tc = 1
    cases = [
        (b"", DropReason.MALFORMED),
        (good[:11], DropReason.MALFORMED),
        (good[:-3], DropReason.MALFORMED),
        (good + b"\x00" * MAX_QUERY, DropReason.OVERSIZED),
        (bytes(dotted), DropReason.MALFORMED),
        (response, DropReason.NOT_QUERY),
        (bytes(truncated.pack()), DropReason.TRUNCATED),
    ]
    for data, reason in cases:
        assert r.handle(data) == Drop(reason)
    assert r.drops == {
        DropReason.MALFORMED: 4,
        DropReason.OVERSIZED: 1,
        DropReason.NOT_QUERY: 1,
        DropReason.TRUNCATED: 1,
    }
    assert r.answered == 0


def test_update_swaps_the_table() -> None:
    r = resolver()
    assert ask(r, "tv.carol.mesh.internal").header.rcode == RCODE.NXDOMAIN
    r.update(
        build_table(
            "mesh.internal",
            [Host.of("tv", "carol", "mesh.internal", (ipaddress.ip_address("100.64.0.9"),))],
        )
    )
    assert [str(rr.rdata) for rr in ask(r, "tv.carol.mesh.internal").rr] == ["100.64.0.9"]
    assert ask(r, "nas.mesh.internal").header.rcode == RCODE.NXDOMAIN


def test_servfail_echoes_the_question() -> None:
    query = DNSRecord.question("example.com", "AAAA")
    answer = DNSRecord.parse(servfail(query))
    assert answer.header.id == query.header.id and answer.header.rcode == RCODE.SERVFAIL
    assert answer.q == query.q


@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    r = resolver()
    assert isinstance(r.handle(data), (Reply, Forward, Drop))


@given(st.binary(min_size=1, max_size=40), st.integers(0, 60))
def test_damaged_queries_never_raise(noise: bytes, at: int) -> None:
    good = bytes(DNSRecord.question("laptop.alice.mesh.internal", "AAAA").pack())
    data = good[:at] + noise + good[at + len(noise) :]
    assert isinstance(resolver().handle(data), (Reply, Forward, Drop))


def test_reverse_lookups_of_overlay_addresses() -> None:
    r = resolver()
    ptr = ask(r, "1.0.64.100.in-addr.arpa", "PTR")
    assert ptr.header.aa == 1 and [str(rr.rdata) for rr in ptr.rr] == [
        "laptop.alice.mesh.internal."
    ]
    v6 = ipaddress.ip_address("fd7a:115c:a1e0::1").reverse_pointer
    assert [str(rr.rdata) for rr in ask(r, v6, "PTR").rr] == ["laptop.alice.mesh.internal."]
    assert ask(r, "1.0.64.100.in-addr.arpa", "A").rr == []  # the name exists, no A
    assert ask(r, "9.9.64.100.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    # outside the overlay, and zones rather than addresses: the upstream's to answer
    for name in ("1.2.0.192.in-addr.arpa", "64.100.in-addr.arpa"):
        assert isinstance(r.handle(bytes(DNSRecord.question(name, "PTR").pack())), Forward)
