"""``group:NAME`` in the policy (wgpy/mesh/server/policy.py): members from the policy's own
``groups`` section and from the store (OIDC sign-ins), together; validation messages."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from wgpy.mesh.server import policy as P


@dataclass(frozen=True)
class N:
    id: int
    user: str
    hostname: str = "h"
    tags: tuple[str, ...] = ()

    @property
    def ip_addresses(self) -> tuple[ipaddress.IPv4Address]:
        return (ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.0")) + self.id),)


ALICE, BOB, CAROL = N(1, "alice"), N(2, "bob"), N(3, "carol")
DOC = {
    "groups": {"group:ops": ["carol"]},
    "acls": [
        {"action": "accept", "src": ["group:eng"], "dst": ["group:ops"]},
        {"action": "accept", "src": ["group:ops"], "dst": ["group:nobody-yet"]},
    ],
}


def reach(policy: P.Policy, src: N, dst: N) -> bool:
    masks = [policy.masks(n) for n in (src, dst)]
    via_masks = masks[0][0] & masks[1][1] != 0
    assert via_masks == policy.may_reach(src, dst)
    return via_masks


def test_groups_from_the_store_and_from_the_document_join() -> None:
    policy = P.parse_policy(DOC, groups={"group:eng": {"alice"}, "group:ops": {"bob"}})
    assert policy.groups["group:ops"] == {"bob", "carol"}
    assert policy.in_group("alice", "group:eng") and not policy.in_group("bob", "group:eng")
    assert reach(policy, ALICE, CAROL) and reach(policy, ALICE, BOB)
    assert not reach(policy, BOB, ALICE) and not reach(policy, CAROL, ALICE)
    # A group no one is in yet matches no node (people join it at their sign-in).
    assert not any(reach(policy, s, d) for s in (BOB, CAROL) for d in (ALICE, BOB, CAROL))


def test_without_store_groups_only_the_documents_count() -> None:
    policy = P.parse_policy(DOC)
    assert not reach(policy, ALICE, CAROL)
    assert policy.groups == {"group:ops": {"carol"}}
    assert "carol" in policy.users_named()


def test_the_documents_members_must_be_users() -> None:
    with pytest.raises(P.PolicyError, match=r'groups\["group:ops"\]\[0\]: unknown user "carol"'):
        P.parse_policy(DOC, users={"alice", "bob"})
    assert P.parse_policy(DOC, users={"carol"}).groups["group:ops"] == {"carol"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"acls": [], "groups": []}, "groups: expected an object mapping groups to lists of users"),
        ({"acls": [], "groups": {"eng": []}}, 'groups["eng"]: "eng" is not a group'),
        ({"acls": [], "groups": {"group:Eng": []}}, 'groups["group:Eng"]: "group:Eng" is not'),
        (
            {"acls": [], "groups": {"group:x": "a"}},
            'groups["group:x"]: expected a list of user names',
        ),
        ({"acls": [], "groups": {"group:x": [1]}}, 'groups["group:x"][0]: expected a user name'),
        (
            {"acls": [{"action": "accept", "src": ["group:"], "dst": ["*"]}]},
            'acls[0].src[0]: "group:" is not a group',
        ),
    ],
)
def test_bad_groups_are_named(document: object, message: str) -> None:
    with pytest.raises(P.PolicyError) as e:
        P.parse_policy(document)
    assert str(e.value).startswith(message)
