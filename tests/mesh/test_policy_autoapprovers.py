"""The policy's autoApprovers (server/autoapprovers.py, parsed by policy.py): who gets which
routes approved without an admin, exit routes only through exitNode, and the errors naming
the offending part."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest

from wgpy.mesh.server import policy as P

net = ipaddress.ip_network
USERS = ("alice", "bob", "carol")


@dataclass(frozen=True)
class N:
    user: str
    tags: tuple[str, ...] = ()
    id: int = 1
    hostname: str = "h"
    ip_addresses: tuple[Any, ...] = ()


DOCUMENT = {
    "acls": [],
    "tagOwners": {"tag:router": ["user:alice"], "tag:exit": ["user:bob"]},
    "groups": {"group:ops": ["carol"]},
    "autoApprovers": {
        "routes": {
            "10.0.0.0/8": ["tag:router", "group:ops"],
            "192.168.0.0/16": ["user:alice"],
            "fd00::/8": ["user:bob"],
        },
        "exitNode": ["tag:exit"],
    },
}


def test_routes_inside_a_listed_prefix_are_approved_for_who_it_names() -> None:
    policy = P.parse_policy(DOCUMENT, USERS)
    router = N("bob", ("tag:router",))
    assert policy.auto_approves(router, net("10.0.0.0/8"))
    assert policy.auto_approves(router, net("10.1.2.0/24"))  # inside
    assert not policy.auto_approves(router, net("10.0.0.0/7"))  # wider
    assert not policy.auto_approves(router, net("192.168.1.0/24"))  # not for tag:router
    assert policy.auto_approves(N("alice"), net("192.168.1.0/24"))  # user:alice
    assert policy.auto_approves(N("carol"), net("10.9.0.0/16"))  # in group:ops
    assert not policy.auto_approves(N("carol"), net("192.168.1.0/24"))
    assert policy.auto_approves(N("bob"), net("fd00:1::/64"))
    assert not policy.auto_approves(N("bob"), net("10.0.0.0/24"))
    assert not policy.auto_approves(N("alice"), net("fd00:1::/64"))


def test_exit_routes_only_through_exit_node() -> None:
    policy = P.parse_policy(DOCUMENT, USERS)
    exit_node = N("bob", ("tag:exit",))
    assert policy.auto_approves(exit_node, net("0.0.0.0/0"))
    assert policy.auto_approves(exit_node, net("::/0"))
    assert not policy.auto_approves(exit_node, net("10.0.0.0/8"))
    assert not policy.auto_approves(N("alice", ("tag:router",)), net("0.0.0.0/0"))
    with pytest.raises(P.PolicyError, match='through "exitNode", not "routes"'):
        P.parse_policy({"acls": [], "autoApprovers": {"routes": {"0.0.0.0/0": []}}}, USERS)


def test_no_section_approves_nothing_and_the_default_policy_neither() -> None:
    assert not P.parse_policy({"acls": []}, USERS).auto_approves(N("alice"), net("10.0.0.0/8"))
    assert not P.DEFAULT.auto_approves(N("alice"), net("10.0.0.0/8"))
    assert not P.DEFAULT.auto_approves(N("alice"), net("0.0.0.0/0"))


def test_users_it_names_are_named_by_the_policy() -> None:
    assert {"alice", "bob"} <= P.parse_policy(DOCUMENT, USERS).users_named()
    document = {"acls": [], "autoApprovers": {"exitNode": ["user:carol"]}}
    assert P.parse_policy(document, USERS).users_named() == {"carol"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([], 'autoApprovers: expected an object {"routes": {...}, "exitNode": [...]}'),
        ({"exit": []}, 'autoApprovers."exit": unknown field; it has "routes" and "exitNode"'),
        ({"routes": []}, "autoApprovers.routes: expected an object mapping prefixes"),
        ({"routes": {"10.0.0.1/8": []}}, "host bits set; did you mean 10.0.0.0/8?"),
        ({"routes": {"lan": []}}, 'autoApprovers.routes["lan"]: not an IP prefix'),
        ({"routes": {"10.0.0.0/8": "tag:router"}}, 'routes["10.0.0.0/8"]: expected a list'),
        (
            {"routes": {"10.0.0.0/8": ["tag:nope"]}},
            'autoApprovers.routes["10.0.0.0/8"][0]: tag "tag:nope" is not declared in tagOwners',
        ),
        ({"exitNode": ["user:dave"]}, 'autoApprovers.exitNode[0]: unknown user "dave"'),
        ({"exitNode": ["*"]}, 'exitNode[0]: expected "user:NAME", "tag:NAME" or "group:NAME"'),
        ({"exitNode": [7]}, 'exitNode[0]: expected "user:NAME", "tag:NAME" or "group:NAME"'),
        ({"exitNode": ["tag:"]}, 'exitNode[0]: "tag:" is not a tag'),
    ],
)
def test_errors_name_the_offending_part(section: object, message: str) -> None:
    document = {"acls": [], "tagOwners": {"tag:router": ["user:alice"]}, "autoApprovers": section}
    with pytest.raises(P.PolicyError) as e:
        P.parse_policy(document, USERS)
    assert message in str(e.value)
