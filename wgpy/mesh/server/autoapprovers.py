"""The policy's ``autoApprovers``, as Headscale's: who may have routes approved without an
admin. Pure; parsed by policy.py, which turns the ValueError raised here into its
PolicyError.

``{"routes": {PREFIX: [WHO, ...]}, "exitNode": [WHO, ...]}`` (both optional), WHO being
``user:NAME``, ``tag:NAME`` (declared in ``tagOwners``) or ``group:NAME``. A route a node
advertises is approved when it lies inside one of the ``routes`` prefixes (equal or longer)
whose list names the node (its user, one of its tags, a group of its user). The exit routes
``0.0.0.0/0`` and ``::/0`` are approved only through ``exitNode``, never through a ``routes``
entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from .principals import principal
from .routes import EXIT_ROUTES, HostBitsSet, Prefix, strict_prefix

__all__ = ["AutoApprovers", "parse_auto_approvers"]

MAX_ENTRIES = 1000


@dataclass(frozen=True)
class AutoApprovers:
    """The parsed section: each prefix with its approvers (``user:``, ``tag:``, ``group:``
    strings, users checked), and the exit node approvers."""

    routes: Mapping[Prefix, frozenset[str]] = field(default_factory=dict)
    exit_node: frozenset[str] = frozenset()

    def approves(
        self, prefix: Prefix, user: str, tags: Collection[str], in_group: Callable[[str], bool]
    ) -> bool:
        """Whether a node of ``user`` with ``tags`` gets ``prefix`` approved by the policy;
        ``in_group(group)``: whether its user is in ``group:NAME``."""
        if prefix in EXIT_ROUTES:
            return _names(self.exit_node, user, tags, in_group)
        return any(
            prefix.version == within.version
            and prefix.subnet_of(within)  # type: ignore[arg-type]
            and _names(who, user, tags, in_group)
            for within, who in self.routes.items()
        )

    def users_named(self) -> frozenset[str]:
        every = self.exit_node.union(*self.routes.values())
        return frozenset(name[5:] for name in every if name.startswith("user:"))


def _names(
    who: frozenset[str], user: str, tags: Collection[str], in_group: Callable[[str], bool]
) -> bool:
    return (
        f"user:{user}" in who
        or any(tag in who for tag in tags)
        or any(name.startswith("group:") and in_group(name) for name in who)
    )


def parse_auto_approvers(
    value: object, user: Callable[[str, str], str], tag_owners: Mapping[str, object]
) -> AutoApprovers:
    """The section, checked; ``user(path, name)`` checks a user name (raising ValueError with
    the path), ``tag_owners`` the tags the policy declares. ValueError names the offending
    part, ``autoApprovers.routes["10.0.0.0/8"][1]: tag "tag:x" is not declared in tagOwners``."""
    path = "autoApprovers"
    if not isinstance(value, dict):
        raise ValueError(f'{path}: expected an object {{"routes": {{...}}, "exitNode": [...]}}')
    for key in value:
        if key not in ("routes", "exitNode"):
            raise ValueError(
                f'{path}.{json.dumps(key)}: unknown field; it has "routes" and "exitNode"'
            )
    routes = value.get("routes", {})
    if not isinstance(routes, dict) or len(routes) > MAX_ENTRIES:
        raise ValueError(
            f"{path}.routes: expected an object mapping prefixes to lists of approvers "
            f"(at most {MAX_ENTRIES})"
        )
    parsed: dict[Prefix, frozenset[str]] = {}
    for text, who in routes.items():
        where = f"{path}.routes[{json.dumps(text)}]"
        prefix = _prefix(where, text)
        if prefix in EXIT_ROUTES:
            raise ValueError(f'{where}: exit routes are approved through "exitNode", not "routes"')
        parsed[prefix] = parsed.get(prefix, frozenset()) | _approvers(where, who, user, tag_owners)
    exit_node = _approvers(f"{path}.exitNode", value.get("exitNode", []), user, tag_owners)
    return AutoApprovers(parsed, exit_node)


def _prefix(where: str, text: str) -> Prefix:
    try:
        return strict_prefix(text)
    except HostBitsSet as e:
        raise ValueError(f"{where}: host bits set; did you mean {e.network}?") from None
    except ValueError:
        raise ValueError(f"{where}: not an IP prefix such as 192.168.0.0/16") from None


def _approvers(
    where: str, value: object, user: Callable[[str, str], str], tag_owners: Mapping[str, object]
) -> frozenset[str]:
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise ValueError(
            f'{where}: expected a list of "user:NAME", "tag:NAME" or "group:NAME" '
            f"(at most {MAX_ENTRIES})"
        )
    return frozenset(
        principal(f"{where}[{i}]", name, tag_owners, user) for i, name in enumerate(value)
    )
