"""The policy engine (wgpy/mesh/server/policy.py): validation messages that point at the
offending part, evaluation against a brute-force reference, and random documents that never
crash the validator."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgpy.mesh.server import policy as P

USERS = ("alice", "bob", "carol")
TAGS = ("tag:web", "tag:ci", "tag:db")


@dataclass(frozen=True)
class N:
    user: str
    hostname: str
    tags: tuple[str, ...]
    index: int

    @property
    def ip_addresses(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
        return (
            ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.0")) + self.index),
            ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd7a:115c:a1e0::")) + self.index),
        )


SPEC_EXAMPLE = {
    "acls": [
        {"action": "accept", "src": ["user:alice", "tag:ci"], "dst": ["tag:web", "10.0.0.0/8"]}
    ],
    "tagOwners": {"tag:web": ["user:alice"], "tag:ci": ["user:bob"]},
    "groups": {"group:ops": ["carol"]},
}


def test_the_spec_example_evaluates_as_written() -> None:
    policy = P.parse_policy(SPEC_EXAMPLE, USERS)
    laptop = N("alice", "laptop", (), 1)
    web = N("bob", "web", ("tag:web",), 2)
    runner = N("bob", "runner", ("tag:ci",), 3)
    other = N("bob", "other", (), 4)
    assert policy.may_reach(laptop, web)
    assert policy.may_reach(runner, web)
    assert not policy.may_reach(web, laptop)  # a rule lets src start traffic, not dst
    assert not policy.may_reach(other, web)
    assert not policy.may_reach(laptop, other)


def test_the_example_in_the_spec_validates() -> None:
    text = (Path(__file__).parents[2] / "docs" / "mesh-api.md").read_text()
    block = re.search(r"```json\n(.*?)```", text, re.DOTALL)
    assert block is not None
    assert json.loads(block[1]) == SPEC_EXAMPLE
    P.parse_policy(json.loads(block[1]), USERS)


def test_default_policy_is_same_user_only() -> None:
    a1, a2, b = N("alice", "a1", (), 1), N("alice", "a2", ("tag:x",), 2), N("bob", "b", (), 3)
    assert P.DEFAULT.is_default
    assert P.DEFAULT.may_reach(a1, a2) and P.DEFAULT.may_reach(a2, a1)
    assert not P.DEFAULT.may_reach(a1, b) and not P.DEFAULT.may_reach(b, a1)
    for x in (a1, a2, b):
        for y in (a1, a2, b):
            (xs, _), (_, yd) = P.DEFAULT.masks(x), P.DEFAULT.masks(y)
            assert bool(xs & yd) == P.DEFAULT.may_reach(x, y)
    P.DEFAULT.check_tags("bob", ["tag:anything"])  # no policy: tags are not restricted


def rule(src: list[Any], dst: list[Any], **extra: Any) -> dict[str, Any]:
    return {"action": "accept", "src": src, "dst": dst, **extra}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], 'the policy must be a JSON object with "acls" and optionally "tagOwners"'),
        ({}, 'acls: missing; a policy needs "acls", a list of rules (it may be empty)'),
        (
            {"acls": [], "hosts": {}},
            'hosts: unknown field; a policy has "acls", "tagOwners", "groups", '
            '"machineCertificates" and "autoApprovers"',
        ),
        ({"acls": {}}, "acls: expected a list of rules"),
        ({"acls": [7]}, 'acls[0]: expected an object with "action", "src" and "dst"'),
        (
            {"acls": [rule(["*"], ["*"]), rule(["*"], ["user:bob"])]},
            'acls[1].dst[0]: unknown user "bob"',
        ),
        (
            {"acls": [rule(["*"], ["*"], ports=[22])]},
            'acls[0].ports: unknown field; a rule has "action", "src" and "dst"',
        ),
        (
            {"acls": [{"action": "drop", "src": ["*"], "dst": ["*"]}]},
            'acls[0].action: expected "accept"',
        ),
        ({"acls": [rule([], ["*"])]}, "acls[0].src: expected a non-empty list of selectors"),
        (
            {"acls": [rule(["*"], "user:alice")]},
            "acls[0].dst: expected a non-empty list of selectors",
        ),
        ({"acls": [rule([1], ["*"])]}, "acls[0].src[0]: expected a selector (a string)"),
        (
            {"acls": [rule(["*"], ["tag:web"])]},
            'acls[0].dst[0]: tag "tag:web" is not declared in tagOwners',
        ),
        (
            {"acls": [rule(["tag:"], ["*"])]},
            'acls[0].src[0]: "tag:" is not a tag; expected tag:NAME',
        ),
        (
            {"acls": [rule(["user:Alice"], ["*"])]},
            'acls[0].src[0]: "Alice" is not a user name ([a-z0-9][a-z0-9._-]*)',
        ),
        (
            {"acls": [rule(["node:alice"], ["*"])]},
            'acls[0].src[0]: "node:alice" is not a node; expected node:USER/HOSTNAME',
        ),
        ({"acls": [rule(["node:dave/x"], ["*"])]}, 'acls[0].src[0]: unknown user "dave"'),
        (
            {"acls": [rule(["*"], ["10.0.0.1/8"])]},
            'acls[0].dst[0]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?',
        ),
        (
            {"acls": [rule(["*"], ["10.0.0.0/33"])]},
            'acls[0].dst[0]: "10.0.0.0/33" is not a valid IP prefix',
        ),
        (
            {"acls": [rule(["*"], ["web"])]},
            'acls[0].dst[0]: "web" is not a selector; expected *, user:NAME, tag:NAME, '
            "group:NAME, node:USER/HOSTNAME or an IP prefix",
        ),
        (
            {"acls": [], "tagOwners": []},
            "tagOwners: expected an object mapping tags to lists of users",
        ),
        (
            {"acls": [], "tagOwners": {"web": []}},
            'tagOwners["web"]: "web" is not a tag; expected tag:NAME',
        ),
        (
            {"acls": [], "tagOwners": {"tag:web": "user:alice"}},
            'tagOwners["tag:web"]: expected a list of owners ("user:NAME")',
        ),
        (
            {"acls": [], "tagOwners": {"tag:web": ["alice"]}},
            'tagOwners["tag:web"][0]: expected an owner user:NAME',
        ),
        (
            {"acls": [], "tagOwners": {"tag:web": ["user:bob"]}},
            'tagOwners["tag:web"][0]: unknown user "bob"',
        ),
    ],
)
def test_errors_name_the_offending_part(document: Any, message: str) -> None:
    with pytest.raises(P.PolicyError) as e:
        P.parse_policy(document, ["alice", "carol"])
    assert str(e.value) == message


def test_without_a_user_list_only_the_form_of_names_is_checked() -> None:
    P.parse_policy({"acls": [rule(["user:nobody"], ["*"])]})


def test_bare_addresses_and_ipv6_prefixes_are_selectors() -> None:
    policy = P.parse_policy({"acls": [rule(["100.64.0.1"], ["fd7a:115c:a1e0::2/128"])]}, [])
    one, two, three = N("a", "x", (), 1), N("a", "y", (), 2), N("a", "z", (), 3)
    assert policy.may_reach(one, two)
    assert not policy.may_reach(one, three) and not policy.may_reach(two, one)


def test_tag_owners_decide_who_may_carry_a_tag() -> None:
    policy = P.parse_policy(SPEC_EXAMPLE, USERS)
    policy.check_tags("alice", ["tag:web"])
    with pytest.raises(
        P.PolicyError, match='user "bob" may not use tag "tag:web": tagOwners lists user:alice'
    ):
        policy.check_tags("bob", ["tag:web"])
    with pytest.raises(P.PolicyError, match='tag "tag:db" is not declared'):
        policy.check_tags("alice", ["tag:db"])


def test_users_named_covers_selectors_nodes_and_owners() -> None:
    document = {
        "acls": [rule(["user:alice", "node:bob/web"], ["*"])],
        "tagOwners": {"tag:ci": ["user:carol"]},
    }
    assert P.parse_policy(document, USERS).users_named() == {"alice", "bob", "carol"}


# ----------------------------------------------------------------------------------------
# Random documents never crash the validator


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
selector_text = st.sampled_from(
    [
        "*",
        "user:alice",
        "user:dave",
        "user:",
        "tag:web",
        "tag:nope",
        "tag:",
        "node:alice/x",
        "node:/x",
        "node:bob/-x",
        "10.0.0.0/8",
        "10.0.0.1/8",
        "::/0",
        "1.2.3.4",
        "300.1.1.1",
        "fd7a::/200",
        "",
        "user:ALICE",
        "a:b:c",
        "::",
        "0/0",
    ]
) | st.text(max_size=20)
near_valid = st.fixed_dictionaries(
    {
        "acls": st.lists(
            st.fixed_dictionaries(
                {
                    "action": st.sampled_from(["accept", "deny", 1]),
                    "src": st.lists(selector_text | json_values, max_size=3),
                    "dst": st.lists(selector_text | json_values, max_size=3),
                }
            )
            | json_values,
            max_size=4,
        )
    },
    optional={
        "tagOwners": st.dictionaries(
            st.sampled_from(TAGS) | st.text(max_size=8),
            st.lists(
                st.sampled_from(["user:alice", "user:bob", "bob", "user:zed"]) | json_values,
                max_size=3,
            )
            | json_values,
            max_size=3,
        ),
        "extra": json_values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=json_values | near_valid, with_users=st.booleans())
def test_random_documents_never_crash_the_validator(document: Any, with_users: bool) -> None:
    try:
        policy = P.parse_policy(document, USERS if with_users else None)
    except P.PolicyError as e:
        assert str(e)
        return
    node = N("alice", "x", ("tag:web",), 5)
    policy.may_reach(node, node)
    json.dumps(policy.document)


# ----------------------------------------------------------------------------------------
# Evaluation against a brute-force reference


def reference_match(selector: str, node: N) -> bool:
    if selector == "*":
        return True
    kind, _, rest = selector.partition(":")
    if kind == "user":
        return node.user == rest
    if kind == "tag":
        return selector in node.tags
    if kind == "node":
        return f"{node.user}/{node.hostname}" == rest
    network = ipaddress.ip_network(selector)
    return any(a in network for a in node.ip_addresses if a.version == network.version)


def reference_may_reach(document: dict[str, Any], src: N, dst: N) -> bool:
    return any(
        any(reference_match(s, src) for s in r["src"])
        and any(reference_match(d, dst) for d in r["dst"])
        for r in document["acls"]
    )


valid_selectors = st.sampled_from(
    [
        "*",
        *(f"user:{u}" for u in USERS),
        *TAGS,
        "node:alice/h1",
        "node:bob/h2",
        "node:carol/h0",
        "100.64.0.0/10",
        "100.64.0.0/30",
        "100.64.0.2",
        "100.64.0.4/31",
        "fd7a:115c:a1e0::/48",
        "fd7a:115c:a1e0::3/128",
        "10.0.0.0/8",
        "::/0",
        "0.0.0.0/0",
    ]
)
valid_policies = st.fixed_dictionaries(
    {
        "acls": st.lists(
            st.fixed_dictionaries(
                {
                    "action": st.just("accept"),
                    "src": st.lists(valid_selectors, min_size=1, max_size=3),
                    "dst": st.lists(valid_selectors, min_size=1, max_size=3),
                }
            ),
            max_size=6,
        ),
        "tagOwners": st.just({t: ["user:alice"] for t in TAGS}),
    }
)
nodes = st.builds(
    N,
    user=st.sampled_from(USERS),
    hostname=st.sampled_from(["h0", "h1", "h2"]),
    tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True).map(tuple),
    index=st.integers(1, 8),
)


@settings(max_examples=300, deadline=None)
@given(document=valid_policies, population=st.lists(nodes, min_size=1, max_size=6))
def test_evaluation_matches_the_reference(document: dict[str, Any], population: list[N]) -> None:
    policy = P.parse_policy(document, USERS)
    masks = [policy.masks(n) for n in population]
    for i, a in enumerate(population):
        for j, b in enumerate(population):
            expected = reference_may_reach(document, a, b)
            assert policy.may_reach(a, b) == expected
            assert bool(masks[i][0] & masks[j][1]) == expected
