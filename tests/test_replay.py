# The vectors of test_kernel_selftest_table and test_kernel_selftest_loops are the Linux kernel's
# nonce counter selftest, wg_packet_counter_selftest() in
# torvalds/linux: drivers/net/wireguard/selftest/counter.c, with the kernel's constants from
# torvalds/linux: drivers/net/wireguard/messages.h:
#   COUNTER_WINDOW_SIZE = COUNTER_BITS_TOTAL - BITS_PER_LONG = 8192 - 64 = 8128
#   REJECT_AFTER_MESSAGES = U64_MAX - COUNTER_WINDOW_SIZE - 1 = 2**64 - 8130
# T(n, v) is "counter_validate(counter, n) == v", here ReplayFilter.update; T_INIT (a memset of
# the counter) is ReplayFilter.reset. The kernel's REJECT_AFTER_MESSAGES is not wgpy's (which is
# wireguard-go's, 2**64 - 2**13 - 1 = 2**64 - 8193), so the table runs against both limits.
from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.protocol.constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE
from wgpy.protocol.replay import ReplayFilter

COUNTER_WINDOW_SIZE = 8192 - 64
KERNEL_REJECT_AFTER_MESSAGES = (2**64 - 1) - COUNTER_WINDOW_SIZE - 1

LIMITS = pytest.mark.parametrize(
    "limit",
    [KERNEL_REJECT_AFTER_MESSAGES, REJECT_AFTER_MESSAGES],
    ids=["kernel-limit", "wgpy-limit"],
)


def test_constants() -> None:
    assert REPLAY_WINDOW_SIZE == COUNTER_WINDOW_SIZE == 8128
    assert REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1
    assert KERNEL_REJECT_AFTER_MESSAGES == 2**64 - 8130


def _tester(f: ReplayFilter) -> tuple[Callable[[int, bool], None], list[str]]:
    """The kernel's T(n, v), which also checks that check() agrees with update() beforehand."""
    failures: list[str] = []
    test_num = 0

    def t(n: int, v: bool) -> None:
        nonlocal test_num
        test_num += 1
        if f.check(n) != v:
            failures.append(f"test {test_num}: check({n}) != {v}")
        if f.update(n) != v:
            failures.append(f"test {test_num}: update({n}) != {v}")

    return t, failures


@LIMITS
def test_kernel_selftest_table(limit: int) -> None:
    f = ReplayFilter(limit=limit)
    T, failures = _tester(f)
    REJECT_AFTER_MESSAGES = limit  # the limit under test, under the kernel's name
    T_LIM = COUNTER_WINDOW_SIZE + 1

    f.reset()  # T_INIT
    T(0, True)  # 1
    T(1, True)  # 2
    T(1, False)  # 3
    T(9, True)  # 4
    T(8, True)  # 5
    T(7, True)  # 6
    T(7, False)  # 7
    T(T_LIM, True)  # 8
    T(T_LIM - 1, True)  # 9
    T(T_LIM - 1, False)  # 10
    T(T_LIM - 2, True)  # 11
    T(2, True)  # 12
    T(2, False)  # 13
    T(T_LIM + 16, True)  # 14
    T(3, False)  # 15
    T(T_LIM + 16, False)  # 16
    T(T_LIM * 4, True)  # 17
    T(T_LIM * 4 - (T_LIM - 1), True)  # 18
    T(10, False)  # 19
    T(T_LIM * 4 - T_LIM, False)  # 20
    T(T_LIM * 4 - (T_LIM + 1), False)  # 21
    T(T_LIM * 4 - (T_LIM - 2), True)  # 22
    T(T_LIM * 4 + 1 - T_LIM, False)  # 23
    T(0, False)  # 24
    T(REJECT_AFTER_MESSAGES, False)  # 25
    T(REJECT_AFTER_MESSAGES - 1, True)  # 26
    T(REJECT_AFTER_MESSAGES, False)  # 27
    T(REJECT_AFTER_MESSAGES - 1, False)  # 28
    T(REJECT_AFTER_MESSAGES - 2, True)  # 29
    T(REJECT_AFTER_MESSAGES + 1, False)  # 30
    T(REJECT_AFTER_MESSAGES + 2, False)  # 31
    T(REJECT_AFTER_MESSAGES - 2, False)  # 32
    T(REJECT_AFTER_MESSAGES - 3, True)  # 33
    T(0, False)  # 34

    assert failures == []


@LIMITS
def test_kernel_selftest_loops(limit: int) -> None:
    f = ReplayFilter(limit=limit)
    T, failures = _tester(f)

    f.reset()  # T_INIT
    for i in range(1, COUNTER_WINDOW_SIZE + 1):  # for (i = 1; i <= COUNTER_WINDOW_SIZE; ++i)
        T(i, True)
    T(0, True)
    T(0, False)

    f.reset()
    for i in range(2, COUNTER_WINDOW_SIZE + 2):  # for (i = 2; i <= COUNTER_WINDOW_SIZE + 1; ++i)
        T(i, True)
    T(1, True)
    T(0, False)

    f.reset()
    for i in range(COUNTER_WINDOW_SIZE, -1, -1):  # for (i = COUNTER_WINDOW_SIZE + 1; i-- > 0;)
        T(i, True)

    f.reset()
    for i in range(COUNTER_WINDOW_SIZE + 1, 0, -1):  # for (i = COUNTER_WINDOW_SIZE + 2; i-- > 1;)
        T(i, True)
    T(0, False)

    f.reset()
    for i in range(COUNTER_WINDOW_SIZE, 0, -1):  # for (i = COUNTER_WINDOW_SIZE + 1; i-- > 1;)
        T(i, True)
    T(COUNTER_WINDOW_SIZE + 1, True)
    T(0, False)

    f.reset()
    for i in range(COUNTER_WINDOW_SIZE, 0, -1):  # for (i = COUNTER_WINDOW_SIZE + 1; i-- > 1;)
        T(i, True)
    T(0, True)
    T(COUNTER_WINDOW_SIZE + 1, True)

    assert failures == []


class Reference:
    """Brute force: every accepted counter in a set, and the greatest accepted."""

    def __init__(self, limit: int = REJECT_AFTER_MESSAGES) -> None:
        self.limit = limit
        self.seen: set[int] = set()
        self.greatest = -1

    def acceptable(self, counter: int) -> bool:
        return (
            0 <= counter < self.limit
            and counter + REPLAY_WINDOW_SIZE >= self.greatest
            and counter not in self.seen
        )

    def update(self, counter: int) -> bool:
        if not self.acceptable(counter):
            return False
        self.seen.add(counter)
        self.greatest = max(self.greatest, counter)
        return True


W = REPLAY_WINDOW_SIZE

# An operation is (kind, value, count, step). "rel": count counters from the greatest counter
# accepted so far plus value, step apart (runs fill the ring, so that later jumps meet entries
# left from earlier laps); "abs": the one counter value; "reset".
Op = tuple[str, int, int, int]

# Offsets from the greatest counter accepted: the window's edges, block and ring sizes.
_edges = [-W - 2, -W - 1, -W, -W + 1, -8192, -8191, -65, -64, -63, -1, 0, 1, 2]
_edges += [63, 64, 65, 127, 128, 129, 8127, 8128, 8191, 8192, 8193, 3 * 8192 + 5, 2**40]
offsets = st.one_of(st.integers(-W - 200, 300), st.sampled_from(_edges), st.integers(-3 * W, 3 * W))
singles = st.builds(lambda d: ("rel", d, 1, 1), offsets)
runs = st.builds(
    lambda d, n, step: ("rel", d, n, step),
    offsets,
    st.integers(1, 2500),
    st.sampled_from([1, 1, 2, 3, 63, 64, 65, 200, -1, -2]),
)
absolutes = st.builds(
    lambda c: ("abs", c, 1, 1),
    st.one_of(
        st.integers(0, 3 * 8192),
        st.integers(-3 * W, 3).map(lambda d: REJECT_AFTER_MESSAGES + d),
        st.integers(-(2**64), 2**65),
        st.sampled_from([-1, 0, 2**64 - 1, 2**64, REJECT_AFTER_MESSAGES - 1]),
    ),
)
resets = st.just(("reset", 0, 0, 0))
operations = st.lists(st.one_of(singles, singles, runs, absolutes, resets), max_size=60)


def _counters(op: Op, greatest: int) -> list[int]:
    kind, value, count, step = op
    if kind == "abs":
        return [value]
    start = max(greatest, 0) + value
    return [start + k * step for k in range(count)]


@settings(max_examples=300, deadline=None)
@given(operations)
def test_matches_brute_force_reference(ops: list[Op]) -> None:
    f = ReplayFilter()
    ref = Reference()
    for op in ops:
        if op[0] == "reset":
            f.reset()
            ref = Reference()
            continue
        for counter in _counters(op, ref.greatest):
            expected = ref.acceptable(counter)
            assert f.check(counter) == expected, counter
            assert f.update(counter) == ref.update(counter) == expected, counter
            assert f.greatest == ref.greatest


def _snapshot(f: ReplayFilter) -> tuple[int, bytes]:
    return f._greatest, bytes(f._ring)


@settings(max_examples=200, deadline=None)
@given(operations, operations)
def test_check_never_mutates(history: list[Op], probes: list[Op]) -> None:
    probed, untouched = ReplayFilter(), ReplayFilter()
    for op in history:
        if op[0] == "reset":
            probed.reset()
            untouched.reset()
            continue
        for counter in _counters(op, untouched.greatest):
            probed.update(counter)
            untouched.update(counter)

    before = _snapshot(probed)
    probe_counters = [c for op in probes if op[0] != "reset" for c in _counters(op, before[0])]
    for counter in probe_counters:
        probed.check(counter)
    assert _snapshot(probed) == before

    # And from the outside: the probed filter answers every update as the untouched one does.
    for counter in probe_counters:
        assert probed.update(counter) == untouched.update(counter)


def test_check_agrees_with_update_and_is_idempotent() -> None:
    f = ReplayFilter()
    for counter in (5, 5, 3, 100_000, 100_000 - W, 100_000 - W - 1, 2**64):
        first, second = f.check(counter), f.check(counter)
        assert first == second == f.update(counter)


def test_in_order_long_run_wraps_the_ring_many_times() -> None:
    f = ReplayFilter()
    for counter in range(5 * 8192):
        assert f.update(counter)
        assert not f.check(counter)
    assert f.greatest == 5 * 8192 - 1
    top = f.greatest
    assert not f.update(top - W - 1)
    for counter in range(top - W, top + 1):
        assert not f.update(counter)


def test_jumps_zero_the_blocks_they_cross() -> None:
    f = ReplayFilter()
    # Fill the whole window, then move it by 1, 2, 70, 127 and 128+ blocks, wrapping the ring.
    top = 0
    for jump in (0, 64, 128, 70 * 64, 127 * 64, 128 * 64, 1000 * 64 + 17):
        top += jump
        for counter in range(max(0, top - W), top + 1):
            f.update(counter)
        fresh = top + jump if jump else top + 1
        assert f.update(fresh)
        for counter in range(max(0, fresh - W), fresh):
            assert f.check(counter) == (counter > top), (jump, counter)
        top = fresh


def test_reset_forgets_everything() -> None:
    f = ReplayFilter()
    for counter in range(0, 3 * 8192, 3):
        f.update(counter)
    f.reset()
    assert f.greatest == -1
    for counter in range(0, 3 * 8192):
        assert f.update(counter)


def test_negative_and_out_of_range_counters_are_rejected() -> None:
    f = ReplayFilter()
    for counter in (-1, -(2**64), REJECT_AFTER_MESSAGES, 2**64 - 1, 2**64, 2**100):
        assert not f.check(counter)
        assert not f.update(counter)
    assert f.greatest == -1
    assert f.update(REJECT_AFTER_MESSAGES - 1)
    assert f.update(REJECT_AFTER_MESSAGES - 1 - W)
    assert not f.update(REJECT_AFTER_MESSAGES - 2 - W)
