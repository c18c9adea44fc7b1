"""The mesh policy: parse and validate the JSON document, then decide who may reach whom.

Pure: no I/O, no clock. A policy is ``{"acls": [RULE, ...], "tagOwners": {TAG: [OWNER]},
"groups": {GROUP: [USER]}}`` (the last two optional);
a rule ``{"action": "accept", "src": [SEL, ...], "dst": [SEL, ...]}`` lets every node matched
by a ``src`` selector start traffic to every node matched by a ``dst`` selector. Selectors:

- ``*``: every node;
- ``user:NAME``: every node of that user (tagged or not);
- ``tag:NAME``: every node carrying the tag, which ``tagOwners`` must declare;
- ``group:NAME``: every node of the group's users: those the policy's ``groups`` section
  lists (``{"group:NAME": ["USER", ...]}``, as Headscale's) and those the identity provider
  puts in it at their OIDC sign-in (``groups``, given by the store; a group no one is in yet
  matches no node);
- ``node:USER/HOSTNAME``: one node; given ``nodes`` (the store does), the node of that name
  when the policy is set, by id: renames later do not move the selector to another node;
- an IPv4 or IPv6 prefix (or a bare address): nodes with an overlay address inside it.

``tagOwners`` maps each tag to the users (``user:NAME``) whose nodes may carry it. With no
policy set, :data:`DEFAULT` applies: nodes of one user reach each other, nothing across users.

``"machineCertificates": {"require": [WHO, ...]}`` (optional) makes registration and key
changes of the nodes it names prove a machine certificate (server/machines.py); WHO is ``*``
(everyone), ``user:NAME``, ``tag:NAME`` (declared in ``tagOwners``) or ``group:NAME``.

``"autoApprovers": {"routes": {PREFIX: [WHO, ...]}, "exitNode": [WHO, ...]}`` (optional, as
Headscale's): the subnet and exit routes that nodes get approved without an admin
(server/autoapprovers.py).

Errors are :class:`PolicyError` whose message starts with the path of the offending part,
``acls[1].dst[0]: unknown user "bob"``. For fast evaluation over many nodes, :meth:`Policy.masks`
gives a node two bit sets (the rules whose ``src``, and whose ``dst``, match it):
``may_reach(a, b)`` is ``src_mask(a) & dst_mask(b) != 0``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .autoapprovers import AutoApprovers, parse_auto_approvers
from .principals import GROUP, TAG, principal
from .routes import HostBitsSet, strict_prefix

USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\Z")
HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
MAX_RULES = 1000
MAX_SELECTORS = 1000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """A policy document that does not validate; the message names the offending part."""


class Subject(Protocol):
    """What the policy knows of a node."""

    @property
    def id(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    @property
    def tags(self) -> Sequence[str]: ...
    @property
    def ip_addresses(self) -> Sequence[IPAddress]: ...


@dataclass(frozen=True, slots=True)
class AnyNode:
    def matches(self, s: Subject) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class UserSelector:
    name: str

    def matches(self, s: Subject) -> bool:
        return s.user == self.name


@dataclass(frozen=True, slots=True)
class TagSelector:
    tag: str

    def matches(self, s: Subject) -> bool:
        return self.tag in s.tags


@dataclass(frozen=True, slots=True)
class GroupSelector:
    name: str  # group:NAME
    members: frozenset[str] = frozenset()  # user names, resolved when the policy is parsed

    def matches(self, s: Subject) -> bool:
        return s.user in self.members


@dataclass(frozen=True, slots=True)
class NodeSelector:
    user: str
    hostname: str
    node_id: int | None = None  # resolved: this node, whatever it is called now

    def matches(self, s: Subject) -> bool:
        if self.node_id is not None:
            return s.id == self.node_id
        return s.user == self.user and s.hostname == self.hostname


@dataclass(frozen=True, slots=True)
class PrefixSelector:
    network: IPNetwork

    def matches(self, s: Subject) -> bool:
        return any(a in self.network for a in s.ip_addresses if a.version == self.network.version)


Selector = AnyNode | UserSelector | TagSelector | GroupSelector | NodeSelector | PrefixSelector


@dataclass(frozen=True, slots=True)
class Rule:
    src: tuple[Selector, ...]
    dst: tuple[Selector, ...]


@dataclass(frozen=True)
class Policy:
    """A validated policy; ``document`` is the JSON it came from (None for :data:`DEFAULT`)."""

    rules: tuple[Rule, ...]
    tag_owners: Mapping[str, frozenset[str]]
    document: Mapping[str, Any] | None
    # group:NAME -> its users: the policy's "groups" section and the store's groups together.
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # machineCertificates.require: "*", "user:NAME", "tag:NAME", "group:NAME"
    machine_required_for: frozenset[str] = frozenset()
    auto_approvers: AutoApprovers = field(default_factory=AutoApprovers)
    # DEFAULT's masks: one implicit rule "user:X -> user:X" per user, numbered on first sight.
    _user_bits: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # The rules as look-ups, made on first use of masks().
    _lookup: list[_Lookup] = field(default_factory=list, compare=False, repr=False)

    @property
    def is_default(self) -> bool:
        return self.document is None

    def may_reach(self, src: Subject, dst: Subject) -> bool:
        """Whether ``src`` may start traffic to ``dst``."""
        if self.is_default:
            return src.user == dst.user
        return any(_any(r.src, src) and _any(r.dst, dst) for r in self.rules)

    def masks(self, s: Subject) -> tuple[int, int]:
        """(rules whose src matches ``s``, rules whose dst matches ``s``) as bit sets."""
        if self.is_default:
            bit = self._user_bits.setdefault(s.user, len(self._user_bits))
            return 1 << bit, 1 << bit
        if not self._lookup:
            self._lookup.append(_Lookup.of(self.rules))
        return self._lookup[0].masks(s)

    def in_group(self, user: str, group: str) -> bool:
        """Whether ``user`` is in ``group`` (``group:NAME``)."""
        return user in self.groups.get(group, ())

    def users_named(self) -> frozenset[str]:
        """Every user the policy names (in selectors, as a tag owner or in its groups)."""
        names: set[str] = set()
        for owners in self.tag_owners.values():
            names |= owners
        if self.document is not None:
            for members in self.document.get("groups", {}).values():
                names |= set(members)
        names |= {n[5:] for n in self.machine_required_for if n.startswith("user:")}
        names |= self.auto_approvers.users_named()
        for rule in self.rules:
            for sel in rule.src + rule.dst:
                if isinstance(sel, UserSelector):
                    names.add(sel.name)
                elif isinstance(sel, NodeSelector):
                    names.add(sel.user)
        return frozenset(names)

    def node_selectors(self) -> frozenset[NodeSelector]:
        return frozenset(
            sel
            for rule in self.rules
            for sel in rule.src + rule.dst
            if isinstance(sel, NodeSelector)
        )

    def nodes_named(self) -> frozenset[str]:
        """Every node the policy names, as ``USER/HOSTNAME``."""
        return frozenset(f"{sel.user}/{sel.hostname}" for sel in self.node_selectors())

    def machine_required(
        self, user: str, tags: Collection[str], groups: Collection[str] = ()
    ) -> bool:
        """Whether a node of ``user`` with ``tags`` must prove a machine certificate to
        register or change its key. ``user`` is in the policy's groups (its ``groups``
        section and the users' OIDC groups) and in ``groups`` (each ``group:NAME``), if given."""
        required = self.machine_required_for
        if not required:
            return False
        return (
            "*" in required
            or f"user:{user}" in required
            or any(tag in required for tag in tags)
            or any(group in required for group in groups)
            or any(g.startswith("group:") and self.in_group(user, g) for g in required)
        )

    def auto_approves(self, s: Subject, prefix: IPNetwork) -> bool:
        """Whether the policy's autoApprovers approve ``prefix`` advertised by ``s``."""
        return self.auto_approvers.approves(
            prefix, s.user, s.tags, lambda group: self.in_group(s.user, group)
        )

    def may_carry(self, user: str, tag: str) -> bool:
        """Whether nodes of ``user`` may carry ``tag`` (any tag, by DEFAULT)."""
        return self.is_default or user in self.tag_owners.get(tag, ())

    def check_tags(self, user: str, tags: Collection[str]) -> None:
        """PolicyError unless nodes of ``user`` may carry every tag (any tag, by DEFAULT)."""
        if self.is_default:
            return
        for tag in tags:
            owners = self.tag_owners.get(tag)
            if owners is None:
                raise PolicyError(f'tag "{tag}" is not declared in the policy\'s tagOwners')
            if user not in owners:
                raise PolicyError(
                    f'user "{user}" may not use tag "{tag}": tagOwners lists '
                    + (", ".join(f"user:{o}" for o in sorted(owners)) or "no one")
                )


@dataclass(frozen=True, slots=True)
class _Lookup:
    """The rules, arranged so that a node's masks cost a few dictionary look-ups per prefix
    length instead of a test per selector: a policy of 3,600 prefixes held the event loop
    3.8 s for 900 nodes when every selector was tried on every node. Prefix selectors go in
    one table per (IP version, prefix length), keyed by network; the others are tried one
    by one, per rule."""

    # (IP version, bits below the prefix, {network >> those bits: (src bits, dst bits)})
    prefixes: tuple[tuple[int, int, dict[int, tuple[int, int]]], ...]
    # (rule number, its other src selectors, its other dst selectors)
    others: tuple[tuple[int, tuple[Selector, ...], tuple[Selector, ...]], ...]

    @classmethod
    def of(cls, rules: Sequence[Rule]) -> _Lookup:
        tables: dict[tuple[int, int], dict[int, tuple[int, int]]] = {}
        others = []
        for i, rule in enumerate(rules):
            rest: tuple[list[Selector], list[Selector]] = ([], [])
            for side, selectors in enumerate((rule.src, rule.dst)):
                for sel in selectors:
                    if not isinstance(sel, PrefixSelector):
                        rest[side].append(sel)
                        continue
                    net = sel.network
                    shift = net.max_prefixlen - net.prefixlen
                    table = tables.setdefault((net.version, shift), {})
                    key = int(net.network_address) >> shift
                    src, dst = table.get(key, (0, 0))
                    table[key] = (src | 1 << i, dst) if side == 0 else (src, dst | 1 << i)
            if rest[0] or rest[1]:
                others.append((i, tuple(rest[0]), tuple(rest[1])))
        prefixes = tuple((version, shift, t) for (version, shift), t in tables.items())
        return cls(prefixes, tuple(others))

    def masks(self, s: Subject) -> tuple[int, int]:
        src = dst = 0
        addresses = [(a.version, int(a)) for a in s.ip_addresses]
        for version, shift, table in self.prefixes:
            for a_version, value in addresses:
                if a_version == version:
                    hit = table.get(value >> shift)
                    if hit is not None:
                        src |= hit[0]
                        dst |= hit[1]
        for i, src_selectors, dst_selectors in self.others:
            bit = 1 << i
            if not src & bit and _any(src_selectors, s):
                src |= bit
            if not dst & bit and _any(dst_selectors, s):
                dst |= bit
        return src, dst


DEFAULT = Policy(rules=(), tag_owners={}, document=None)


def _any(selectors: tuple[Selector, ...], s: Subject) -> bool:
    return any(sel.matches(s) for sel in selectors)


def parse_policy(
    document: object,
    users: Collection[str] | None = None,
    nodes: Mapping[str, int] | None = None,
    groups: Mapping[str, Collection[str]] | None = None,
) -> Policy:
    """Validate ``document`` (parsed JSON). With ``users``, every user it names must be one of
    them; without, user names are only checked for form (a stored policy, validated before).
    With ``nodes`` (``USER/HOSTNAME`` -> node id), node selectors mean those ids; a name
    missing from it is an error with ``users`` given, else a node that no longer exists.
    ``groups`` (``group:NAME`` -> user names, from the store: OIDC sign-ins) add to the
    members the document's ``groups`` section gives."""
    if not isinstance(document, dict):
        raise PolicyError('the policy must be a JSON object with "acls" and optionally "tagOwners"')
    for key in document:
        if key not in ("acls", "tagOwners", "groups", "machineCertificates", "autoApprovers"):
            raise PolicyError(
                f'{_key(key)}: unknown field; a policy has "acls", "tagOwners", "groups", '
                '"machineCertificates" and "autoApprovers"'
            )
    if "acls" not in document:
        raise PolicyError('acls: missing; a policy needs "acls", a list of rules (it may be empty)')
    parser = _Parser(users, nodes)
    members = parser.groups(document.get("groups", {}), groups or {})
    parser.members = members
    tag_owners = parser.tag_owners(document.get("tagOwners", {}))
    rules = parser.rules(document["acls"], tag_owners)
    required = parser.machine_certificates(document.get("machineCertificates", {}), tag_owners)
    try:
        approvers = parse_auto_approvers(document.get("autoApprovers", {}), parser.user, tag_owners)
    except ValueError as e:
        raise PolicyError(str(e)) from None
    return Policy(
        rules=rules,
        tag_owners=tag_owners,
        document=document,
        groups=members,
        machine_required_for=required,
        auto_approvers=approvers,
    )


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else json.dumps(key)


@dataclass
class _Parser:
    users: Collection[str] | None
    nodes: Mapping[str, int] | None = None
    members: Mapping[str, frozenset[str]] = field(default_factory=dict)  # groups' users

    def user(self, path: str, name: str) -> str:
        if not USER_NAME.match(name):
            raise PolicyError(f'{path}: "{name}" is not a user name ([a-z0-9][a-z0-9._-]*)')
        if self.users is not None and name not in self.users:
            raise PolicyError(f'{path}: unknown user "{name}"')
        return name

    def groups(
        self, value: object, stored: Mapping[str, Collection[str]]
    ) -> dict[str, frozenset[str]]:
        if not isinstance(value, dict):
            raise PolicyError("groups: expected an object mapping groups to lists of users")
        members = {name: set(users) for name, users in stored.items()}
        for group, names in value.items():
            path = f"groups[{json.dumps(group)}]"
            if not isinstance(group, str) or not GROUP.match(group):
                raise PolicyError(
                    f"{path}: {json.dumps(group)} is not a group; expected group:NAME "
                    "(lowercase letters, digits, ., _ and -)"
                )
            if not isinstance(names, list):
                raise PolicyError(f"{path}: expected a list of user names")
            for i, name in enumerate(names):
                if not isinstance(name, str):
                    raise PolicyError(f"{path}[{i}]: expected a user name")
                members.setdefault(group, set()).add(self.user(f"{path}[{i}]", name))
        return {name: frozenset(users) for name, users in members.items()}

    def tag_owners(self, value: object) -> dict[str, frozenset[str]]:
        if not isinstance(value, dict):
            raise PolicyError("tagOwners: expected an object mapping tags to lists of users")
        owners: dict[str, frozenset[str]] = {}
        for tag, names in value.items():
            path = f"tagOwners[{json.dumps(tag)}]"
            if not TAG.match(tag):
                raise PolicyError(f"{path}: {json.dumps(tag)} is not a tag; expected tag:NAME")
            if not isinstance(names, list):
                raise PolicyError(f'{path}: expected a list of owners ("user:NAME")')
            users = set()
            for i, owner in enumerate(names):
                if not isinstance(owner, str) or not owner.startswith("user:"):
                    raise PolicyError(f"{path}[{i}]: expected an owner user:NAME")
                users.add(self.user(f"{path}[{i}]", owner[5:]))
            owners[tag] = frozenset(users)
        return owners

    def machine_certificates(
        self, value: object, tag_owners: Mapping[str, object]
    ) -> frozenset[str]:
        path = "machineCertificates"
        if not isinstance(value, dict):
            raise PolicyError(f'{path}: expected an object {{"require": [...]}}')
        for key in value:
            if key != "require":
                raise PolicyError(f'{path}.{_key(key)}: unknown field; the only one is "require"')
        names = value.get("require", [])
        if not isinstance(names, list) or len(names) > MAX_SELECTORS:
            raise PolicyError(
                f'{path}.require: expected a list of "*", "user:NAME", "tag:NAME" or '
                f'"group:NAME" (at most {MAX_SELECTORS})'
            )
        return frozenset(
            principal(
                f"{path}.require[{i}]", name, tag_owners, self.user, star=True, error=PolicyError
            )
            for i, name in enumerate(names)
        )

    def rules(self, value: object, tag_owners: Mapping[str, object]) -> tuple[Rule, ...]:
        if not isinstance(value, list):
            raise PolicyError("acls: expected a list of rules")
        if len(value) > MAX_RULES:
            raise PolicyError(f"acls: {len(value)} rules, more than the {MAX_RULES} allowed")
        rules = []
        for i, rule in enumerate(value):
            path = f"acls[{i}]"
            if not isinstance(rule, dict):
                raise PolicyError(f'{path}: expected an object with "action", "src" and "dst"')
            for key in rule:
                if key not in ("action", "src", "dst"):
                    raise PolicyError(
                        f'{path}.{_key(key)}: unknown field; a rule has "action", "src" and "dst"'
                    )
            if rule.get("action") != "accept":
                raise PolicyError(f'{path}.action: expected "accept"')
            src = self.selectors(f"{path}.src", rule.get("src"), tag_owners)
            dst = self.selectors(f"{path}.dst", rule.get("dst"), tag_owners)
            rules.append(Rule(src, dst))
        return tuple(rules)

    def selectors(
        self, path: str, value: object, tag_owners: Mapping[str, object]
    ) -> tuple[Selector, ...]:
        if not isinstance(value, list) or not value:
            raise PolicyError(f"{path}: expected a non-empty list of selectors")
        if len(value) > MAX_SELECTORS:
            raise PolicyError(f"{path}: more than {MAX_SELECTORS} selectors")
        return tuple(
            self.selector(f"{path}[{i}]", item, tag_owners) for i, item in enumerate(value)
        )

    def selector(self, path: str, value: object, tag_owners: Mapping[str, object]) -> Selector:
        if not isinstance(value, str):
            raise PolicyError(f"{path}: expected a selector (a string)")
        if value == "*":
            return AnyNode()
        if value.startswith("user:"):
            return UserSelector(self.user(path, value[5:]))
        if value.startswith("tag:"):
            if not TAG.match(value):
                raise PolicyError(f'{path}: "{value}" is not a tag; expected tag:NAME')
            if value not in tag_owners:
                raise PolicyError(f'{path}: tag "{value}" is not declared in tagOwners')
            return TagSelector(value)
        if value.startswith("group:"):
            if not GROUP.match(value):
                raise PolicyError(
                    f'{path}: "{value}" is not a group; expected group:NAME (lowercase letters, '
                    "digits, ., _ and -)"
                )
            return GroupSelector(value, self.members.get(value, frozenset()))
        if value.startswith("node:"):
            user, slash, hostname = value[5:].partition("/")
            if not slash or not HOSTNAME.match(hostname):
                raise PolicyError(f'{path}: "{value}" is not a node; expected node:USER/HOSTNAME')
            selector = NodeSelector(self.user(path, user), hostname)
            if self.nodes is None:
                return selector
            node_id = self.nodes.get(value[5:])
            if node_id is None and self.users is not None:
                raise PolicyError(
                    f'{path}: there is no node "{value[5:]}"; register it first (a node '
                    "selector means the node of that name when the policy is set)"
                )
            return NodeSelector(selector.user, hostname, 0 if node_id is None else node_id)
        return PrefixSelector(_prefix(path, value))


def _prefix(path: str, value: str) -> IPNetwork:
    if not re.fullmatch(r"[0-9A-Fa-f:.]+(/[0-9]{1,3})?", value):
        raise PolicyError(
            f"{path}: {json.dumps(value)} is not a selector; expected *, user:NAME, tag:NAME, "
            "group:NAME, node:USER/HOSTNAME or an IP prefix"
        )
    try:
        return strict_prefix(value)
    except HostBitsSet as e:
        raise PolicyError(
            f'{path}: "{value}" has host bits set; did you mean {e.network}?'
        ) from None
    except ValueError:
        raise PolicyError(f'{path}: "{value}" is not a valid IP prefix') from None
