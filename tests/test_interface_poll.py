"""The bounded poll after a lone packet (POLL_US, off by default): what it finds is handled at
once, what it does not find holds the next poll back, and its setting is checked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from test_interface_reads import QueueTun

from wgpy.device.interface import BATCH, BURST_GAP, POLL_US, Interface, poll_us_from_environment

LONE = b"\x45" + bytes(27)


def interface(tun: QueueTun, poll_us: int, sent: list[int]) -> Interface:
    iface = Interface("fake0", tun=tun, poll_us=poll_us)  # type: ignore[arg-type]
    iface.device.send_packets = lambda packets, now: sent.append(len(packets))  # type: ignore[method-assign]
    return iface


def test_an_answer_that_comes_while_polling_is_read_without_going_back_to_sleep() -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        tun = QueueTun()
        sent: list[int] = []
        iface = interface(tun, 200_000, sent)
        original = iface.device.send_packets

        def send_and_get_an_answer(packets: list[bytes], now: float) -> None:
            original(packets, now)
            if len(sent) == 1:
                tun.push([LONE])  # the far side answers at once (as the host's stack does)

        iface.device.send_packets = send_and_get_an_answer  # type: ignore[method-assign]
        try:
            tun.push([LONE])
            for _ in range(100):
                if len(sent) == 2:
                    break
                await asyncio.sleep(0.01)
            return iface.polls, iface.polls_answered, sent
        finally:
            iface.close()

    polls, answered, sent = asyncio.run(scenario())
    assert sent == [1, 1]
    assert polls == 1 and answered == 1  # the answer was found by the poll, not a wake-up


def test_a_poll_on_a_cpu_another_task_wants_ends_at_once() -> None:
    """A CPU-bound process shares our one CPU: the first yield runs it, and the poll stops
    there instead of spinning for its 200 ms bound."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    hog = subprocess.Popen(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
    )

    async def scenario() -> tuple[int, int, int]:
        tun = QueueTun()
        sent: list[int] = []
        iface = interface(tun, 200_000, sent)
        try:
            tun.push([LONE])
            for _ in range(200):
                if sent:
                    break
                await asyncio.sleep(0.01)
            return iface.polls, iface.polls_answered, iface.polls_busy
        finally:
            iface.close()

    try:
        time.sleep(0.2)  # the hog is running
        os.sched_setaffinity(0, {cpu})
        polls, answered, busy = asyncio.run(scenario())
    finally:
        os.sched_setaffinity(0, before)
        hog.kill()
        hog.wait(10)
    assert (polls, answered, busy) == (1, 0, 1)


def test_a_fruitless_poll_holds_the_next_one_back() -> None:
    async def scenario() -> tuple[int, int, int]:
        tun = QueueTun()
        sent: list[int] = []
        iface = interface(tun, 3_000, sent)  # 3 ms: the next poll waits at least 18 ms more
        try:
            tun.push([LONE])
            while not sent:
                await asyncio.sleep(0)
            await asyncio.sleep(BURST_GAP * 2)  # a quiet spell, far shorter than the hold
            tun.push([LONE])
            while len(sent) < 2:
                await asyncio.sleep(0)
            return iface.polls, iface.polls_answered, len(sent)
        finally:
            iface.close()

    polls, answered, sent = asyncio.run(scenario())
    assert sent == 2
    assert polls == 1 and answered == 0


def test_a_burst_polls_once_and_is_then_drained_in_batches() -> None:
    async def scenario() -> tuple[int, list[tuple[int, int]], list[int]]:
        tun = QueueTun()
        sent: list[int] = []
        iface = interface(tun, 300, sent)
        try:
            tun.push([LONE] * (BATCH + 72))
            for _ in range(500):
                if not tun.queue:
                    break
                await asyncio.sleep(0)
            return iface.polls, tun.reads, sent
        finally:
            iface.close()

    polls, reads, sent = asyncio.run(scenario())
    assert reads[0] == (1, 1)  # the first wake-up thinks it is quiet...
    assert (BATCH, BATCH) in reads[1:4]  # ...and soon the rest is drained in batches
    assert polls == 1  # the poll's find was the burst: no poll from then on
    assert sum(sent) == BATCH + 72


def test_polling_off_never_polls() -> None:
    async def scenario() -> int:
        tun = QueueTun()
        sent: list[int] = []
        iface = interface(tun, 0, sent)
        try:
            for _ in range(3):
                tun.push([LONE])
                await asyncio.sleep(BURST_GAP * 3)
            return iface.polls
        finally:
            iface.close()

    assert asyncio.run(scenario()) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, POLL_US), ("", POLL_US), ("0", 0), (" 150 ", 150), ("10000", 10_000)],
)
def test_the_setting_from_the_environment(value: str | None, expected: int) -> None:
    environ = {} if value is None else {"WGPY_POLL_US": value}
    assert poll_us_from_environment(environ) == expected


@pytest.mark.parametrize("value", ["-1", "10001", "300us", "0.5"])
def test_a_bad_setting_is_refused_with_what_to_do(value: str) -> None:
    with pytest.raises(
        ValueError,
        match=r"WGPY_POLL_US=.* is not a number of microseconds from 0 to 10000; unset it",
    ):
        poll_us_from_environment({"WGPY_POLL_US": value})
