"""The index table, as wireguard-go's ``indextable.go``: our 32-bit receiver indices.

Every handshake we take part in and every keypair it derives has a random, non-zero index of
ours; the other side puts it in the ``receiver`` field of what it sends back. An index first
names the peer whose handshake is under way (a response or a cookie reply finds the peer by
it) and then, once the session is derived, the keypair (a transport message finds its keys by
it). Values are compared by identity (``is``): deleting an index that now names something else
does nothing.

The receive path looks transport indices up once per datagram, so it reads :attr:`table`
(a plain ``dict``) directly; everything else goes through the methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class IndexTable(Generic[V]):
    """Our receiver indices and what each one names (a peer mid-handshake, or a keypair)."""

    __slots__ = ("_rng", "table")

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._rng = rng
        self.table: dict[int, V] = {}
        """Index -> value; read-only outside this class (the receive path's lookup)."""

    def __len__(self) -> int:
        return len(self.table)

    def get(self, index: int) -> V | None:
        return self.table.get(index)

    def new_index(self, value: V) -> int:
        """A fresh random index, not 0 (0 means "no index") and not in use, naming ``value``."""
        table = self.table
        while True:
            i = int.from_bytes(self._rng(4), "little")
            if i and i not in table:
                table[i] = value
                return i

    def swap(self, index: int, value: V) -> None:
        """Let ``index`` name ``value`` from now on (the keypair its handshake derived)."""
        self.table[index] = value

    def delete(self, index: int, value: V) -> None:
        """Forget ``index`` if it still names ``value``; otherwise leave it alone."""
        if index and self.table.get(index) is value:
            del self.table[index]

    def values(self) -> list[V]:
        return list(self.table.values())
