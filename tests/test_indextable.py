"""The index table (wireguard-go's indextable.go): random non-zero indices, identity deletes."""

from __future__ import annotations

from support import make_rng

from wgpy.protocol.indextable import IndexTable


def test_new_indices_are_random_non_zero_and_unique() -> None:
    table: IndexTable[str] = IndexTable(make_rng(1))
    indices = [table.new_index(f"peer {i}") for i in range(500)]
    assert 0 not in indices
    assert len(set(indices)) == 500 == len(table)
    assert all(0 < i < 2**32 for i in indices)
    assert table.get(indices[7]) == "peer 7"
    assert table.table[indices[7]] == "peer 7"  # the receive path's view


def test_zero_and_taken_indices_are_drawn_again() -> None:
    draws = iter([b"\0\0\0\0", b"\1\0\0\0", b"\1\0\0\0", b"\2\0\0\0"])
    table: IndexTable[str] = IndexTable(lambda n: next(draws))
    assert table.new_index("a") == 1  # 0 means "no index": drawn again
    assert table.new_index("b") == 2  # 1 is taken: drawn again
    assert table.values() == ["a", "b"]


def test_swap_names_the_keypair_under_the_handshake_index() -> None:
    table: IndexTable[object] = IndexTable(make_rng(2))
    peer, keypair = object(), object()
    i = table.new_index(peer)
    table.swap(i, keypair)
    assert table.get(i) is keypair
    table.delete(i, peer)  # the index names the keypair now: left alone
    assert table.get(i) is keypair
    table.delete(i, keypair)
    assert table.get(i) is None and len(table) == 0


def test_delete_compares_by_identity_and_ignores_index_zero() -> None:
    table: IndexTable[list[int]] = IndexTable(make_rng(3))
    value = [1]
    i = table.new_index(value)
    table.delete(i, [1])  # equal, not the same object
    assert table.get(i) is value
    table.delete(0, value)
    table.delete(i + 1, value)
    assert len(table) == 1
