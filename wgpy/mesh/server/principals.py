"""Who a policy names: ``user:NAME``, ``tag:NAME`` and ``group:NAME`` (and ``*``), checked
alike wherever a policy lists them (the machine certificate requirement in policy.py, the
``autoApprovers`` in autoapprovers.py). Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

__all__ = ["GROUP", "TAG", "principal"]

TAG = re.compile(r"tag:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
GROUP = re.compile(r"group:[a-z0-9][a-z0-9._-]{0,62}\Z")


def principal(
    at: str,
    name: object,
    tag_owners: Mapping[str, object],
    user: Callable[[str, str], str],
    *,
    star: bool = False,
    error: type[ValueError] = ValueError,
) -> str:
    """``name`` in its canonical form (``user:`` names through ``user``, which raises for a
    bad one); ``error`` with a sentence that begins with ``at`` for anything else, a tag not
    in ``tag_owners`` among them, and ``*`` unless ``star``."""
    if star and name == "*":
        return "*"
    if isinstance(name, str) and name.startswith("user:"):
        return f"user:{user(at, name[5:])}"
    if isinstance(name, str) and name.startswith("tag:"):
        if not TAG.match(name):
            raise error(f'{at}: "{name[:70]}" is not a tag; expected tag:NAME')
        if name not in tag_owners:
            raise error(f'{at}: tag "{name}" is not declared in tagOwners')
        return name
    if isinstance(name, str) and GROUP.match(name):
        return name
    expected = '"*", "user:NAME", "tag:NAME" or "group:NAME"'
    raise error(f"{at}: expected {expected if star else expected[5:]}")
